"""Bounded waits for the bus's background work: Redis calls, channel calls, stops.

Not ``asyncio.wait_for``: on Python 3.11 it returns the awaited result instead of raising
when the task awaiting it is cancelled in the same loop turn as that result arrives. A
loop task (a refresh every second) then swallows the cancellation of a stop and runs on,
and the stop that awaits it waits with it: a cluster node's stop hung for minutes that
way. ``asyncio.timeout`` has no such window: a cancellation always reaches the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

#: after the wait of :func:`finish`, how long cancelled stragglers get to unwind
UNWIND_S = 1.0


async def bounded(aw: Awaitable[T], seconds: float) -> T:
    """``await aw``, raising TimeoutError after ``seconds``."""
    async with asyncio.timeout(seconds):
        return await aw


async def finish(tasks: Iterable[asyncio.Task[object]], seconds: float, log: logging.Logger) -> None:
    """Wait up to ``seconds`` for background tasks a stop has cancelled or told to end,
    then, for up to ``UNWIND_S``, cancel what still runs again and again (a task that let one
    cancellation slip, as ``asyncio.wait_for`` can in a library, takes the next): a stop
    always ends. A task that outlives that is named in the log (it runs on, unawaited)."""
    tasks = list(tasks)
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNWIND_S
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: its failure was logged where it happened
    if pending:
        log.warning("stopping: %s did not end", ", ".join(sorted(t.get_name() for t in pending)))
