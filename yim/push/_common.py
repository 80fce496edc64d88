"""Rules every provider shares: the call deadline, the in-flight bound, Retry-After, bounded reads."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC

from yim.push.types import Delivered, Failed, Gone, PushOutcome, PushSettings, Retry

#: a Retry-After further out than this is taken as this: a pusher is not parked for weeks on one header
MAX_RETRY_AFTER = 86_400.0
#: the longest title and body put in a push; every provider's payload limit is about 4 KiB
MAX_PREVIEW_CHARS = 512


class ResponseTooLarge(Exception):
    pass


def clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_PREVIEW_CHARS:
        return text
    return text[: MAX_PREVIEW_CHARS - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def status_outcome(status: int, retry_after: str | None, what: str, gone: frozenset[int]) -> PushOutcome:
    """The answer to an HTTP status when the body says nothing more specific."""
    if 200 <= status < 300:
        return Delivered()
    if status in gone:
        return Gone(f"{what} answered {status}")
    if status == 429 or status >= 500:
        return Retry(f"{what} answered {status}", parse_retry_after(retry_after))
    return Failed(f"{what} answered {status}")


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body if it fits in `limit` bytes; a longer one raises rather than being held."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise ResponseTooLarge
    return bytes(buf)


def ssl_context(settings: PushSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_file)


class Gate:
    """Bounds one provider's calls in progress and gives each its deadline.

    Past `max_in_flight` a call answers Retry at once instead of waiting for a slot: a slow or
    dead provider then holds at most that many requests' memory, never a growing queue.
    """

    def __init__(self, what: str, settings: PushSettings) -> None:
        self.what = what
        self.timeout = settings.timeout
        self.limit = settings.max_in_flight
        self.max_response_bytes = settings.max_response_bytes
        self.in_flight = 0

    async def run(
        self, call: Callable[[], Awaitable[PushOutcome]], errors: tuple[type[BaseException], ...]
    ) -> PushOutcome:
        if self.in_flight >= self.limit:
            return Retry(f"{self.what}: {self.in_flight} pushes already in flight")
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except TimeoutError:
            return Retry(f"{self.what}: no answer within {self.timeout:g} s")
        except ResponseTooLarge:
            return Failed(f"{self.what}: answer longer than {self.max_response_bytes} bytes")
        except errors as e:
            return Retry(f"{self.what}: {type(e).__name__}: {e}")
        finally:
            self.in_flight -= 1
