"""The SQLite writer's sends on the loop's thread (yim/storage/sqlite/store.py,
``_WriterThread``): a send submitted while the writer is idle is committed before
``send_message`` returns; under a burst the rest share group commits, gathered and
committed at the end of the loop's turn (the one-process node) or on the writer thread
(with the indexer process); no job ever overtakes one submitted before it."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from yim.protocol.errors import YimError
from yim.storage.records import CreateGroupCmd, SendCmd, UserRec
from yim.storage.sqlite.store import INDEX_HAND_DELAY_S, INLINE_IDLE_S, LOOP_BATCH_ROWS_PER_JOB, SqliteStore

_ids = itertools.count(10_000)


def _send(sender: int, to: int, cmid: str, text: str = "hi") -> SendCmd:
    return SendCmd(
        msg_id=next(_ids),
        new_conv_id=next(_ids),
        sender_id=sender,
        sender_device="d",
        kind="text",
        body=b'{"text":"%s"}' % text.encode(),
        client_msg_id=cmid,
        created_at=1,
        to=to,
    )


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "yim.db"))
    await s.open()
    for uid in (1, 2, 3):
        await s.create_user(UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1))
    try:
        yield s
    finally:
        await s.close()


async def _idle() -> None:
    await asyncio.sleep(INLINE_IDLE_S * 5)


async def test_a_lone_send_at_idle_is_committed_before_submit_returns(store: SqliteStore) -> None:
    await _idle()
    inline = store.stats["inline_batches"]
    fut = store.send_message(_send(1, 2, "lone"))
    assert fut.done()  # no hand-off to the writer thread and back
    result = fut.result()
    assert store.stats["inline_batches"] == inline + 1
    assert [seq for _uid, seq in result.deliveries] == [1, 1]
    # and it is durably there, for another connection
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM messages WHERE msg_id = ?", (result.message.msg_id,)).fetchone() == (
            1,
        )
    finally:
        conn.close()
    # A refused send goes inline too and fails its future, not the caller.
    await _idle()
    bad = store.send_message(_send(1, 999, "nobody"))
    assert bad.done() and isinstance(bad.exception(), YimError)


async def test_a_burst_shares_commits_and_keeps_its_order(store: SqliteStore) -> None:
    await _idle()
    before = dict(store.stats)
    futs = [store.send_message(_send(1 + i % 2, 3, f"b{i}")) for i in range(300)]
    # An inline send's future is done when send_message returns; a queued one's cannot be yet.
    inline = [f.done() for f in futs]
    results = await asyncio.wait_for(asyncio.gather(*futs), 30)
    after = store.stats
    # Once a send was queued, none after it went inline (the writer was busy for them). Before
    # it, more than the first may have: a send finds the writer idle again INLINE_IDLE_S after
    # the last inline one, e.g. when this thread was descheduled between two submissions.
    queued_from = inline.index(False)
    assert not any(inline[queued_from:])
    assert after["inline_batches"] - before["inline_batches"] == queued_from
    assert after["batches"] - before["batches"] < 100, "a burst of sends was not group-committed"
    for sender in (1, 2):  # each conversation's seqs in submission order, gap-free
        mine = [r.message.seq for r in results if r.message.sender_id == sender]
        assert mine == list(range(1, 151))


async def test_a_send_never_overtakes_a_job_still_on_the_writer(store: SqliteStore) -> None:
    await _idle()
    order: list[str] = []

    def slow_job(conn: sqlite3.Connection) -> None:
        time.sleep(0.05)  # the writer thread is busy with it
        order.append("slow job")

    slow = store.write(slow_job)
    send = store.send_message(_send(1, 2, "after"))
    assert not send.done()  # queued behind the slow job, not run here
    send.add_done_callback(lambda _f: order.append("send"))
    await asyncio.wait_for(asyncio.gather(slow, send), 10)
    assert order == ["slow job", "send"]


async def test_a_send_is_not_answered_before_an_earlier_one_the_loop_has_not_resolved(store: SqliteStore) -> None:
    """The writer committed an earlier send, but the loop was busy and has not resolved its
    future yet: a send now is queued behind it, not committed inline and answered first (a
    connection's replies come in the order of its sends)."""
    await _idle()
    first = store.write(lambda conn: None)  # any job: it goes to the writer thread
    done: list[str] = []
    first.add_done_callback(lambda _f: done.append("first"))
    time.sleep(0.05)  # noqa: ASYNC251 -- the loop busy on purpose: the writer ends the job, the loop has not resolved it
    assert not first.done()
    second = store.send_message(_send(1, 2, "second"))
    assert not second.done()  # not inline: the earlier job is not answered yet
    second.add_done_callback(lambda _f: done.append("second"))
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert done == ["first", "second"]


async def test_an_inline_send_hands_its_index_changes_over_after_its_reply(store: SqliteStore) -> None:
    """The indexer's wake-up is kept off the message's path: the changes of an inline send
    are held past the loop turns that write its push and ACK, and a search still finds every
    message committed before it (it hands held changes over first)."""
    await _idle()
    fut = store.send_message(_send(1, 2, "held", "paperclips"))
    assert fut.done()
    seen_by_reply: list[int] = []
    fut.add_done_callback(lambda _f: seen_by_reply.append(len(store._writer._index_held)))
    await asyncio.sleep(0)  # the turn in which the future's callbacks (push, ACK) run
    assert seen_by_reply == [1]  # not handed to the indexer yet
    rows, _more = await store.search.search(2, None, ["paperclips"], None, 10)
    assert [r.text for r in rows] == ["paperclips"]  # the search handed it over itself
    assert not store._writer._index_held

    await _idle()
    fut = store.send_message(_send(1, 2, "later", "staplers"))
    assert fut.done() and store._writer._index_held
    await asyncio.sleep(INDEX_HAND_DELAY_S * 5)
    assert not store._writer._index_held  # handed over by the loop's timer
    rows, _more = await store.search.search(2, None, ["staplers"], None, 10)
    assert len(rows) == 1


async def test_a_send_after_close_is_refused(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "yim.db"))
    await s.open()
    await s.close()
    fut = s.send_message(_send(1, 2, "late"))
    with pytest.raises(YimError) as info:
        await asyncio.wait_for(fut, 5)
    assert info.value.code == "unavailable"


def _burst(store: SqliteStore, n: int, tag: str) -> tuple[list[asyncio.Future[Any]], list[bool]]:
    """``n`` sends from users 1 and 2 to 3 in this turn; which were done when submitted."""
    futs = [store.send_message(_send(1 + i % 2, 3, f"{tag}{i}")) for i in range(n)]
    return futs, [f.done() for f in futs]


async def test_the_sends_of_one_loop_turn_are_committed_together_at_its_end(store: SqliteStore) -> None:
    await _idle()
    before = dict(store.stats)
    futs, done = _burst(store, 40, "t")
    gathered = futs[done.index(False) :]
    assert len(gathered) >= 20 and not any(f.done() for f in gathered)
    await asyncio.sleep(0)  # one turn: the batch ran at the end of the burst's turn, on this thread
    assert all(f.done() for f in gathered)
    after = store.stats
    assert after["loop_batches"] - before["loop_batches"] == 1
    assert after["batches"] - before["batches"] == after["inline_batches"] - before["inline_batches"] + 1
    results = [f.result() for f in futs]
    for sender in (1, 2):  # each conversation's seqs in submission order, gap-free
        assert [r.message.seq for r in results if r.message.sender_id == sender] == list(range(1, 21))


async def test_a_job_for_the_writer_thread_commits_the_gathered_sends_first(store: SqliteStore) -> None:
    await _idle()
    futs, done = _burst(store, 10, "g")
    gathered = futs[done.index(False) :]
    assert gathered and not any(f.done() for f in gathered)

    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM messages WHERE client_msg_id LIKE 'g%'").fetchone()[0])

    job = store.write(count)
    assert all(f.done() for f in gathered)  # committed before the job was queued
    assert await asyncio.wait_for(job, 10) == 10


async def test_sends_gathered_when_the_store_closes_are_committed(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "yim.db"))
    await s.open()
    for uid in (1, 2, 3):
        await s.create_user(UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1))
    await _idle()
    futs, _done = _burst(s, 10, "c")
    await s.close()
    assert [f.result().message.seq for f in futs if f.result().message.sender_id == 1] == [1, 2, 3, 4, 5]


async def test_with_the_indexer_process_the_loop_never_commits_a_burst(tmp_path: Path) -> None:
    """Its hand-over may wait for room in the pipe, which the loop's thread must never do:
    a burst goes to the writer thread as before."""
    s = SqliteStore(str(tmp_path / "yim.db"), indexer_process=True)
    await s.open()
    try:
        for uid in (1, 2, 3):
            await s.create_user(UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1))
        await _idle()
        futs, _done = _burst(s, 40, "p")
        results = await asyncio.wait_for(asyncio.gather(*futs), 30)
        assert s.stats["loop_batches"] == 0
        assert s.stats["batches"] - s.stats["inline_batches"] >= 1  # the writer thread's
        assert len({r.message.msg_id for r in results}) == 40
    finally:
        await s.close()


async def test_sends_into_a_fan_out_group_take_the_writer_thread(store: SqliteStore) -> None:
    """A batch that wrote more inbox rows a job than one-to-one messages do sends the sends
    after it to the writer thread, where their SQLite work overlaps the loop's pushes; a
    light batch brings them back to the loop."""
    members = list(range(10, 10 + LOOP_BATCH_ROWS_PER_JOB + 4))
    for uid in members:
        await store.create_user(UserRec(id=uid, username=f"m{uid}", display_name="", password_hash="x", created_at=1))
    group = await store.create_group(
        CreateGroupCmd(
            conv_id=next(_ids), msg_id=next(_ids), owner_id=1, member_ids=members, name="g", announcement="",
            avatar="", join_policy="open", max_members=100, threshold=100, created_at=1,
        )
    )  # fmt: skip
    conv = group.group.conv_id

    def to_group(i: int) -> SendCmd:
        return SendCmd(next(_ids), next(_ids), 1, "d", "text", b'{"text":"g"}', f"fan{i}", 1, conv_id=conv)

    await _idle()
    await asyncio.wait_for(store.send_message(to_group(0)), 10)  # inline: a batch of one, 21 rows
    before = dict(store.stats)
    futs = [store.send_message(to_group(i)) for i in range(1, 20)]
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert store.stats["loop_batches"] == before["loop_batches"]  # the thread's batches
    await asyncio.wait_for(store.send_message(_send(1, 2, "light")), 10)  # one-to-one again
    futs, done = _burst(store, 20, "back")
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert store.stats["loop_batches"] > before["loop_batches"] or all(done)


async def test_a_send_on_the_loop_never_waits_for_a_hand_over_in_progress(store: SqliteStore) -> None:
    """A hand-over on another thread (a search's barrier) may wait for room in the indexer
    process's pipe while holding the hand-over lock: a send committed on the loop's thread
    meanwhile holds its index changes without that lock, and they reach the index after."""
    holding, release = threading.Event(), threading.Event()
    waited_out: list[bool] = []

    def stuck_hand_over() -> None:
        with store._writer._held_lock:
            holding.set()
            waited_out.append(not release.wait(10))

    holder = threading.Thread(target=stuck_hand_over)
    holder.start()
    holding.wait(10)
    await _idle()
    fut = store.send_message(_send(1, 2, "meanwhile", "gearwheels"))
    release.set()  # reached only if the send did not wait for the lock
    holder.join(10)
    assert fut.done() and waited_out == [False]
    rows, _more = await store.search.search(2, None, ["gearwheels"], None, 10)
    assert [r.text for r in rows] == ["gearwheels"]


async def test_with_the_indexer_process_the_loop_never_waits_for_its_pipe(tmp_path: Path) -> None:
    """Handing an idle send's index changes over may wait for room in the pipe to the
    indexer process (here: a hand-over held up on purpose, as a full pipe would): the loop's
    timer does it on a thread, and a search waits for it there; the loop serves on."""
    s = SqliteStore(str(tmp_path / "yim.db"), indexer_process=True)
    await s.open()
    real_submit = s.indexer.submit
    release = threading.Event()
    waited_out: list[bool] = []

    def full_pipe(ops: list[Any]) -> None:
        waited_out.append(not release.wait(10))
        real_submit(ops)

    try:
        for uid in (1, 2, 3):
            await s.create_user(UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1))
        s.indexer.submit = full_pipe  # type: ignore[method-assign]
        await _idle()
        assert s.send_message(_send(1, 2, "held", "sprockets")).done()  # inline: its changes held
        await asyncio.sleep(INDEX_HAND_DELAY_S * 20)  # the timer fired; the loop is not stuck in it
        search = asyncio.ensure_future(s.search.search(2, None, ["sprockets"], None, 10))
        await asyncio.sleep(0.05)
        assert not search.done()  # waiting for the hand-over, on a thread
        release.set()
        rows, _more = await asyncio.wait_for(search, 10)
        assert [r.text for r in rows] == ["sprockets"]
        assert waited_out == [False]
    finally:
        release.set()
        await s.close()
