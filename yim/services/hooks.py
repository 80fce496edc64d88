"""Server webhooks (docs/operations.md §9): the operator's HTTP endpoints the server calls.

``before_send`` is synchronous: every message waits for the hook's verdict before it is
stored — allow it, reject it (the sender gets ``rejected_by_policy`` with the hook's reason)
or replace its body (validated again as its kind's body, stored, delivered and echoed to the
sender like a masked text). A hook that does not answer within ``before_send_timeout_s``, or
answers something else, is a failure, and ``before_send_fail`` decides: "open" stores the
message as sent, "closed" refuses it with ``unavailable``.

Every request is signed: ``X-Yim-Signature: sha256=<hex>``, the HMAC-SHA256 with the hook's
secret over ``<X-Yim-Timestamp> + "." + <body bytes>``; the receiver recomputes it and
refuses a timestamp outside its replay window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Literal

import aiohttp
import msgspec

from yim.protocol.errors import YimError

if TYPE_CHECKING:
    from yim.config import Settings, Webhook
    from yim.ids.snowflake import Snowflake
    from yim.metrics import LabelledLoopCounter
    from yim.protocol.frames import Send, SendBody
    from yim.storage.records import SessionRec

log = logging.getLogger("yim.hooks")

#: the longest reason of a rejection the sender is shown (the rest is cut)
MAX_REASON_CHARS = 200
#: the largest answer read from a hook: a replaced body is bounded by the kind's own limit
MAX_ANSWER_BYTES = 256 * 1024
#: before_send calls in flight at once, node-wide; a send beyond it waits its turn, within
#: its timeout (the sends of one connection are bounded by the gateway already)
MAX_CONCURRENT_CALLS = 256


class Verdict(msgspec.Struct, forbid_unknown_fields=False):
    """A before_send hook's answer."""

    action: Literal["allow", "reject", "replace"]
    reason: str = ""
    #: replace: the new body (raw JSON); empty when not given
    body: msgspec.Raw = msgspec.Raw(b"")


_verdict_decoder = msgspec.json.Decoder(Verdict)
_encoder = msgspec.json.Encoder()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The value of ``X-Yim-Signature`` (docs/operations.md §9.3)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _reason(text: str) -> str:
    """What of a hook's reason a sender is shown: printable, one line, bounded."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean[:MAX_REASON_CHARS] or "refused by the server's message policy"


class HookFailure(Exception):
    """The hook gave no verdict (timeout, connection refused, non-2xx, nonsense)."""


class Webhooks:
    """The node's webhooks. Built only when some are configured (``from_settings`` returns
    None otherwise), so a node without hooks pays one attribute check per send."""

    def __init__(self, settings: Settings, counter: LabelledLoopCounter) -> None:
        hooks: list[Webhook] = list(settings.webhooks)  # type: ignore[arg-type]  # a str was parsed by Settings
        self.before_send_hook = next((h for h in hooks if "before_send" in h.events), None)
        self.timeout_s = settings.before_send_timeout_s
        self.fail_open = settings.before_send_fail == "open"
        self.results = counter  # yim_webhook_before_send{result}
        self._http: aiohttp.ClientSession | None = None
        #: (user, device) -> that device's newest send still waiting for its verdict: the
        #: device's sends are submitted in the order they came (yim/services/messages.py).
        #: At most one entry per device with a send in flight.
        self.waiting: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    @classmethod
    def from_settings(cls, settings: Settings, counter: LabelledLoopCounter) -> Webhooks | None:
        return cls(settings, counter) if settings.webhooks else None

    def start(self) -> None:
        # No proxy from the environment, no cookies: a hook is the operator's own service.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_CALLS), cookie_jar=aiohttp.DummyCookieJar()
        )

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def before_send(self, ids: Snowflake, session: SessionRec, req: Send | SendBody, body: bytes) -> bytes | None:
        """The hook's verdict on a message about to be stored, with its canonical ``body``:
        None to store it as it is, the replacement body (raw JSON, not yet validated) to store
        instead; raises ``rejected_by_policy``, or ``unavailable`` when the hook failed and
        ``before_send_fail`` is "closed"."""
        hook = self.before_send_hook
        assert hook is not None
        payload = _encoder.encode(
            {
                "event_id": str(ids.next_id()),
                "event": "before_send",
                "created_at": int(time.time() * 1000),
                "data": {
                    "sender_id": str(session.user_id),
                    "sender_device": session.device_id,
                    "kind": req.kind,
                    "body": msgspec.Raw(body),
                    "to": req.to,
                    "conv_id": req.conv_id,
                    "shop_id": req.shop_id,
                    "client_msg_id": req.client_msg_id,
                    "reply_to": req.reply_to,
                },
            }
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    verdict = await self._call(hook, "before_send", payload)
        except (HookFailure, TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.failed("timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
            return None
        self.results.labels(verdict.action).inc()
        if verdict.action == "reject":
            raise YimError("rejected_by_policy", _reason(verdict.reason))
        if verdict.action == "replace":
            return bytes(verdict.body)  # not empty: checked by _call
        return None

    def failed(self, why: str) -> None:
        """The before_send hook gave no usable verdict: with ``before_send_fail = "open"`` the
        message goes on as sent (None), with "closed" it is refused (``unavailable``)."""
        assert self.before_send_hook is not None
        mode = "open" if self.fail_open else "closed"
        log.warning("before_send hook %s failed (%s): fail-%s", self.before_send_hook.url, why, mode)
        self.results.labels("failed").inc()
        if not self.fail_open:
            raise YimError("unavailable", "the server's message policy check is not answering; retry later")

    async def _call(self, hook: Webhook, event: str, payload: bytes) -> Verdict:
        http = self._http
        if http is None:
            raise HookFailure("webhooks are not started")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Yim-Event": event,
            "X-Yim-Timestamp": timestamp,
            "X-Yim-Signature": sign(hook.secret, timestamp, payload),
        }
        async with http.post(hook.url, data=payload, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise HookFailure(f"HTTP {resp.status}")
            answer = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(answer) > MAX_ANSWER_BYTES:
            raise HookFailure(f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            verdict = _verdict_decoder.decode(answer)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise HookFailure(f"answer is not a verdict: {exc}") from None
        if verdict.action == "replace" and not verdict.body:
            raise HookFailure("a replace verdict without a body")
        return verdict
