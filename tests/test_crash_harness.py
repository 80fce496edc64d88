"""SIGKILL a node at random points under one-to-one and group load, at least 10 times,
restart it on the same data folder each time, and check from the client side that every
ACKed message is in every recipient's history and inbox exactly once, seqs are gap-free
and unread counts match the history (tests/crash_harness.py has the details).

In the suite: 10 kills in well under a minute. Longer: ``YIM_CRASH_KILLS=100 make test``
(or ``python -m tests.crash_harness --kills 100``); ``YIM_CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import pytest

from tests.crash_harness import NODE_ENV, CrashHarness
from tests.report import record

KILLS = int(os.environ.get("YIM_CRASH_KILLS", "10"))
SEED = int(os.environ["YIM_CRASH_SEED"]) if os.environ.get("YIM_CRASH_SEED") else None


@pytest.mark.slow
async def test_sigkill_under_load_loses_and_duplicates_nothing(
    server_process: Any, store_url: str, backend: str
) -> None:
    """Once per store: SQLite in the node's data folder, or PostgreSQL (which keeps running
    while the node is killed)."""
    # one process: it keeps every device's pushes in seq order, which this run checks too
    node = server_process(YIM_STORE=store_url, YIM_WORKERS="1", **NODE_ENV)
    # The deadline only bounds a stuck run: a kill-and-restart cycle takes ~4 s on a quiet
    # machine and twice that on a busy one, and every one of the kills must happen.
    harness = CrashHarness(node, kills=KILLS, seed=SEED, deadline_s=max(100.0, KILLS * 10.0))
    report = await harness.run()
    record(f"[{backend}] " + report.line())
    assert report.kills >= min(KILLS, 10), report.line()
    assert report.ok, report.line() + "\n" + "\n".join(report.problems[:30])
    assert report.acked > 0 and report.messages_checked == report.acked


#: kills of the node run with two workers (each restart starts three processes)
WORKER_KILLS = int(os.environ.get("YIM_CRASH_WORKER_KILLS", "5"))


@pytest.mark.slow
async def test_sigkill_of_a_node_with_workers_loses_and_duplicates_nothing(server_process: Any) -> None:
    """The same with ``--workers 2`` (SQLite, the only store workers run on): the store
    process is killed, its workers die with it (their clients' sends in flight on either
    worker), and everything ACKed is there once after the restart. A device may see pushes
    out of order (an event committed through the other worker comes through the store
    process; the client's cursor rule of docs/protocol.md §12.1 covers it), never twice."""
    node = server_process(YIM_WORKERS="2", **NODE_ENV)
    harness = CrashHarness(
        node, kills=WORKER_KILLS, seed=SEED, deadline_s=max(100.0, WORKER_KILLS * 12.0), ordered_pushes=False
    )
    report = await harness.run()
    record("[sqlite, 2 workers] " + report.line())
    assert report.kills >= min(WORKER_KILLS, 5), report.line()
    assert report.ok, report.line() + "\n" + "\n".join(report.problems[:30])
    assert report.acked > 0 and report.messages_checked == report.acked


async def test_the_checker_catches_a_message_lost_after_its_ack(server_process: Any) -> None:
    """The check is not vacuous: delete one acknowledged message from the store behind the
    node's back (as a lost write would), and the harness reports it."""
    node = server_process(**NODE_ENV)

    async def lose_one(h: CrashHarness) -> None:
        victim = next(s for s in reversed(h.sends) if s.ack is not None and s.to is not None)
        await asyncio.to_thread(node.kill)
        with sqlite3.connect(node.data_dir / "yim.db") as db:
            assert db.execute("DELETE FROM messages WHERE msg_id=?", (int(victim.ack["msg_id"]),)).rowcount == 1
        await asyncio.to_thread(node.start)

    report = await CrashHarness(node, kills=1, users=3, load_s=(0.3, 0.5), before_verify=lose_one).run()
    assert not report.ok and report.lost >= 1 and report.seq_gaps >= 1, report.line()
    record(f"crash harness self-check: one acked message deleted behind the node's back -> reported "
           f"(lost {report.lost}, seq gaps {report.seq_gaps}, problems {len(report.problems)})")  # fmt: skip
