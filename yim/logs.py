"""Log lines an operator can act on during an outage: one per burst, not one per request."""

from __future__ import annotations

import logging
import time


class BurstLog:
    """The first event after a quiet spell is logged at once; then at most one line every
    ``interval_s``, carrying the count since the previous line. ``note(fmt, *args)`` logs
    ``fmt % (*args, count)`` as a warning, so ``fmt`` ends with the count's ``%d``."""

    __slots__ = ("_count", "_interval", "_last", "_log")

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._log = logger
        self._interval = interval_s
        self._last = -interval_s
        self._count = 0

    def note(self, fmt: str, *args: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._log.warning(fmt, *args, self._count)
            self._last = now
            self._count = 0
