"""What every stand-in shares: the modes a target can be put in, and a bounded wait for slow answers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

#: ok: accepted; gone: the service no longer knows the target; busy: 429 with Retry-After;
#: down: 503 with Retry-After; error: 500 without; slow: no answer until released (or 60 s);
#: drip (APNs only): a 200 whose body comes a byte at a time, each within any per-read timeout
Mode = Literal["ok", "gone", "busy", "down", "error", "slow", "drip"]
DRIP_EVERY = 0.1
BUSY_RETRY_AFTER = "7"
DOWN_RETRY_AFTER = "11"
SLOW_CAP = 60.0


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Modes:
    """Per-target modes, what was accepted and why requests were refused."""

    def __init__(self) -> None:
        self.modes: dict[str, str] = {}  # target -> a Mode
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.release = asyncio.Event()
        self.waiting = 0

    def mode(self, key: str) -> str:
        return self.modes.get(key, "ok")

    def refuse(self, why: str) -> str:
        self.refused.append(why)
        return why

    async def stall(self) -> None:
        """A slow answer: held until released (test teardown), and never past SLOW_CAP."""
        self.waiting += 1
        try:
            await asyncio.wait_for(self.release.wait(), SLOW_CAP)
        except TimeoutError:
            pass
        finally:
            self.waiting -= 1
