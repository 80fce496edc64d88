"""The bus's bounded waits (yim/bus/bounded.py): a cancellation always reaches the task,
and a stop always ends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from yim.bus.bounded import bounded, finish


async def test_a_cancellation_in_the_turn_the_result_arrives_is_not_swallowed() -> None:
    """The window asyncio.wait_for has on Python 3.11: the awaited result and the waiter's
    cancellation in one loop turn. A loop task hit there carried on after its stop."""
    for _ in range(3):
        inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter = asyncio.create_task(bounded(inner, 10))
        await asyncio.sleep(0)  # the waiter now awaits inner
        inner.set_result(1)
        waiter.cancel()  # the same turn
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_bounded_times_out() -> None:
    with pytest.raises(TimeoutError):
        await bounded(asyncio.Event().wait(), 0.05)
    assert await bounded(asyncio.sleep(0, "done"), 1) == "done"


async def test_finish_ends_even_when_a_task_ignores_its_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    let_go = asyncio.Event()
    slipped = 0

    async def slippery() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # lets one cancellation slip: the next one ends it
        await asyncio.sleep(10)

    async def stubborn() -> None:
        nonlocal slipped
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if let_go.is_set():
                    raise
                slipped += 1  # will not end at all

    async def fails() -> None:
        raise RuntimeError("boom")

    async def polite() -> None:
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(stubborn(), name="stubborn"), loop.create_task(polite(), name="polite")]
    tasks += [loop.create_task(fails(), name="fails"), loop.create_task(slippery(), name="slippery")]
    tasks[1].cancel()
    log = logging.getLogger("yim.test.finish")
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="yim.test.finish"):
        await finish(tasks, 0.1, log)
    assert loop.time() - started < 5  # bounded: the wait, then UNWIND_S for the stragglers
    assert tasks[1].cancelled() and tasks[2].done() and tasks[3].cancelled()
    assert not tasks[0].done() and slipped > 1  # cancelled again and again
    assert [r.getMessage() for r in caplog.records] == ["stopping: stubborn did not end"]
    let_go.set()
    tasks[0].cancel()  # now it ends
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
