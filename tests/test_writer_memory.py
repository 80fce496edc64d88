"""Property: the SQLite writer's memory (yim/storage/sqlite/memory.py) never changes an outcome.

Random mixes of direct and group sends, resends, read markers, blocks, privacy changes,
members joining (a group switching to read fan-out, or staying on write fan-out) and jobs that fail half-way (which
force the writer to redo its batch with a savepoint per job) are submitted without waiting,
so they share group commits. Every job's outcome must be what running the jobs one by one
gives (a small model of blocks and privacy decides it), and the tables must stay whole:
conversation and inbox seqs gap-free and equal to the heads, each ACKed message stored
where its ACK says, a failed job's writes gone.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from yim.protocol.errors import YimError
from yim.storage.records import CreateGroupCmd, SendCmd, SendResult, UserRec
from yim.storage.sqlite import store as store_module
from yim.storage.sqlite.store import SqliteStore

USERS = 4
GROUP_MEMBERS = (0, 1, 2)  # user 3 may join later
#: with 3 the group switches to read fan-out when user 3 joins; with 10 it stays on write
#: fan-out, and every message must reach exactly the members of its moment
THRESHOLDS = (3, 10)

user = st.integers(0, USERS - 1)
op = st.one_of(
    st.tuples(st.just("send"), user, user),
    st.tuples(st.just("gsend"), user, st.just(0)),
    st.tuples(st.just("resend"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("read"), user, st.just(0)),
    st.tuples(st.just("block"), user, user),
    st.tuples(st.just("unblock"), user, user),
    st.tuples(st.just("friends_only"), user, st.booleans()),
    st.tuples(st.just("join"), st.just(3), st.just(0)),
    st.tuples(st.just("boom"), user, st.just(0)),
)


class Model:
    """What running the jobs one at a time decides."""

    def __init__(self) -> None:
        self.blocks: set[tuple[int, int]] = set()
        self.friends_only: set[int] = set()
        self.members = set(GROUP_MEMBERS)
        self.sent: dict[str, str] = {}  # client_msg_id -> "ok" once stored

    def direct(self, a: int, b: int, cmid: str) -> str:
        if cmid in self.sent:
            return "duplicate"
        if a == b:
            return "bad_request"
        if (b, a) in self.blocks or (a, b) in self.blocks:
            return "blocked"
        if b in self.friends_only:
            return "friends_only"
        self.sent[cmid] = "ok"
        return "ok"

    def group(self, a: int, cmid: str) -> str:
        if cmid in self.sent:
            return "duplicate"
        if a not in self.members:
            return "not_member"
        self.sent[cmid] = "ok"
        return "ok"


async def _run(ops: list[tuple[Any, Any, Any]], waves: int, threshold: int) -> None:
    folder = tempfile.mkdtemp(prefix="yim-writer-memory-")
    store = SqliteStore(str(Path(folder) / "yim.db"))
    await store.open()
    ids = itertools.count(10_000)
    try:
        uids = [next(ids) for _ in range(USERS)]
        for i, uid in enumerate(uids):
            await store.create_user(UserRec(id=uid, username=f"u{i}", display_name="", password_hash="x", created_at=1))
        gid = next(ids)
        await store.create_group(
            CreateGroupCmd(
                conv_id=gid,
                msg_id=next(ids),
                owner_id=uids[0],
                member_ids=[uids[i] for i in GROUP_MEMBERS],
                name="g",
                announcement="",
                avatar="",
                join_policy="members_invite",
                max_members=100,
                threshold=threshold,
                created_at=1,
            )
        )
        model = Model()
        audience: dict[str, set[int]] = {}  # group sends: the members when each was submitted
        sends: list[tuple[SendCmd, str]] = []  # every send submitted, and its expected outcome
        checks: list[tuple[str, Any, asyncio.Future[Any] | asyncio.Task[Any]]] = []

        def boom(conn: sqlite3.Connection, uid: int) -> None:
            conn.execute("UPDATE users SET display_name = 'half-way' WHERE id=?", (uid,))
            raise ValueError("fails after writing")

        def send_cmd(a: int, b: int | None, cmid: str) -> SendCmd:
            return SendCmd(
                msg_id=next(ids),
                new_conv_id=next(ids),
                sender_id=uids[a],
                sender_device="d",
                kind="text",
                body=b'{"text":"hi"}',
                client_msg_id=cmid,
                created_at=next(ids),
                to=uids[b] if b is not None else None,
                conv_id=gid if b is None else None,
            )

        per_wave = max(1, len(ops) // waves)
        for start in range(0, len(ops), per_wave):
            wave: list[Any] = []
            for kind, x, y in ops[start : start + per_wave]:
                now = next(ids)
                if kind == "send":
                    cmid = f"c{len(sends)}"
                    cmd = send_cmd(x, y, cmid)
                    expected = model.direct(x, y, cmid)
                    sends.append((cmd, expected))
                    wave.append(("send", cmd, expected, store.send_message(cmd)))
                elif kind == "gsend":
                    cmid = f"c{len(sends)}"
                    cmd = send_cmd(x, None, cmid)
                    expected = model.group(x, cmid)
                    audience[cmid] = {uids[m] for m in model.members}
                    sends.append((cmd, expected))
                    wave.append(("send", cmd, expected, store.send_message(cmd)))
                elif kind == "resend" and sends:
                    original, _ = sends[x % len(sends)]
                    cmd = msgspec.structs.replace(original, msg_id=next(ids))  # a retry: same client_msg_id
                    if original.to is not None:
                        a, b = uids.index(original.sender_id), uids.index(original.to)
                        expected = model.direct(a, b, original.client_msg_id)
                    else:
                        expected = model.group(uids.index(original.sender_id), original.client_msg_id)
                        if expected == "ok":  # stored by this resend: today's members get it
                            audience[original.client_msg_id] = {uids[m] for m in model.members}
                    wave.append(("send", cmd, expected, store.send_message(cmd)))
                elif kind == "read":
                    expected = "ok" if x in model.members else "not_member"
                    task = asyncio.ensure_future(store.mark_read(uids[x], gid, 10**9, now))
                    wave.append(("read", None, expected, task))
                elif kind in ("block", "unblock"):
                    on = kind == "block"
                    expected = "bad_request" if x == y else "ok"
                    if x != y:
                        (model.blocks.add if on else model.blocks.discard)((x, y))
                    task = asyncio.ensure_future(store.relations.block(uids[x], uids[y], on, now))
                    wave.append(("relation", None, expected, task))
                elif kind == "friends_only":
                    (model.friends_only.add if y else model.friends_only.discard)(x)
                    policy = "friends" if y else "anyone"
                    task = asyncio.ensure_future(store.relations.set_privacy(uids[x], policy, None))
                    wave.append(("relation", None, "ok", task))
                elif kind == "join":
                    expected = "ok"
                    model.members.add(3)
                    task = asyncio.ensure_future(
                        store.add_members(gid, uids[0], [uids[3]], "invite", next(ids), now, threshold)
                    )
                    wave.append(("join", None, expected, task))
                elif kind == "boom":
                    wave.append(("boom", None, "ValueError", asyncio.ensure_future(store.write(boom, uids[x]))))
                # let a task reach its submit before the next op is created: keeps job order = op order
                await asyncio.sleep(0)
            results = await asyncio.gather(*(w[3] for w in wave), return_exceptions=True)
            for (what, cmd, expected, _f), res in zip(wave, results, strict=True):
                checks.append((what, (cmd, expected), res))

        # 1. every outcome is the one-at-a-time outcome
        stored: dict[str, SendResult] = {}
        for what, (cmd, expected), res in checks:
            if isinstance(res, YimError):
                got = res.code
            elif isinstance(res, BaseException):
                got = type(res).__name__
            elif what == "send" and res.duplicate:
                got = "duplicate"
            else:
                got = "ok"
            if what == "join" and got != "ok":
                got = "ok" if isinstance(res, YimError) and res.code == "already_member" else got
            assert got == expected, (what, cmd, expected, res)
            if what == "send" and got == "ok":
                stored[cmd.client_msg_id] = res
                if cmd.conv_id == gid and threshold > USERS:  # write fan-out throughout
                    assert {u for u, _seq in res.deliveries} == audience[cmd.client_msg_id], cmd
            if what == "send" and got == "duplicate":
                first = stored[cmd.client_msg_id]
                assert (res.message.conv_id, res.message.seq) == (first.message.conv_id, first.message.seq)

        # 2. only a job failing half-way makes the writer redo a batch: a stale head in the
        # writer's memory would also, through a duplicate key, and cost every job in it
        booms = sum(1 for what, _e, _r in checks if what == "boom")
        assert store.stats["slow_batches"] <= booms

        # 3. the tables are whole
        conn = sqlite3.connect(store.path)
        try:
            fanout, switch_seq = conn.execute(
                "SELECT fanout, switch_seq FROM conversations WHERE id=?", (gid,)
            ).fetchone()
            if fanout == "read":  # read fan-out: entries past the switch are in no inbox
                assert not conn.execute(
                    "SELECT 1 FROM inbox WHERE type='message' AND conv_id=? AND conv_seq>? AND user_id != ?",
                    (gid, switch_seq, uids[3]),
                ).fetchall()
            for conv_id, last_seq in conn.execute("SELECT id, last_seq FROM conversations"):
                seqs = [r[0] for r in conn.execute("SELECT seq FROM messages WHERE conv_id=? ORDER BY seq", (conv_id,))]
                assert seqs == list(range(1, last_seq + 1)), conv_id
            for uid, head, name in conn.execute("SELECT id, inbox_seq, display_name FROM users"):
                seqs = [r[0] for r in conn.execute("SELECT seq FROM inbox WHERE user_id=? ORDER BY seq", (uid,))]
                assert seqs == list(range(1, head + 1)), uid
                assert name != "half-way"
            for res in stored.values():
                m = res.message
                row = conn.execute(
                    "SELECT msg_id, sender_inbox_seq FROM messages WHERE conv_id=? AND seq=?", (m.conv_id, m.seq)
                ).fetchone()
                assert row == (m.msg_id, res.sender_inbox_seq)
                for uid, iseq in res.deliveries:
                    assert conn.execute(
                        "SELECT conv_id, conv_seq FROM inbox WHERE user_id=? AND seq=?", (uid, iseq)
                    ).fetchone() == (m.conv_id, m.seq)
        finally:
            conn.close()
    finally:
        await store.close()


# Interleavings that once broke (or would break) the memory, always tried first: a group's
# roster cached across a join; a resend after a mid-batch flush wrote the original.
@example(ops=[("gsend", 0, 0), ("join", 3, 0), ("gsend", 0, 0)], waves=1, threshold=10)
@example(ops=[("send", 0, 1), ("block", 0, 1), ("resend", 0, 0)], waves=1, threshold=3)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=40), waves=st.integers(1, 3), threshold=st.sampled_from(THRESHOLDS))
def test_writer_memory_keeps_one_at_a_time_outcomes(
    ops: list[tuple[Any, Any, Any]], waves: int, threshold: int
) -> None:
    asyncio.run(_run(ops, waves, threshold))


def _page_filling_send(ids: Iterator[int], a: int, b: int, client_msg_id: str) -> SendCmd:
    """A one-to-one send from ``a`` to ``b`` whose text fills some of a WAL page."""
    return SendCmd(
        msg_id=next(ids),
        new_conv_id=next(ids),
        sender_id=a,
        sender_device="d",
        kind="text",
        body=b'{"text":"a message long enough to fill some pages of the log"}',
        client_msg_id=client_msg_id,
        created_at=1,
        to=b,
    )


async def test_the_wal_is_copied_back_off_the_writer_and_does_not_grow(tmp_path: Path) -> None:
    """The writer never checkpoints (that ran inside a commit); the checkpointer thread does,
    so the WAL restarts from its beginning instead of holding every write since start."""
    store = SqliteStore(str(tmp_path / "yim.db"), checkpoint_interval=0.1)
    await store.open()
    ids = itertools.count(10_000)
    wal = tmp_path / "yim.db-wal"
    try:
        a, b = next(ids), next(ids)
        for uid in (a, b):
            await store.create_user(
                UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1)
            )
        sizes = []
        for round_ in range(4):
            await asyncio.gather(
                *(store.send_message(_page_filling_send(ids, a, b, f"r{round_}-{i}")) for i in range(1500))
            )
            done = store.stats["checkpoints"]
            for _ in range(200):  # two whole checkpoints after the round's last commit (bounded)
                if store.stats["checkpoints"] >= done + 2:
                    break
                await asyncio.sleep(0.05)
            sizes.append(wal.stat().st_size)
        # Without checkpoints the log would hold all four rounds (4x the first size).
        assert sizes[-1] < 2 * sizes[0], sizes
    finally:
        await store.close()


def _wal_restarts_so_far(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time the log
    starts over from its beginning (bytes 12-15, big-endian)."""
    with wal.open("rb") as f:
        header = f.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


async def test_the_wal_starts_over_under_writes_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With commits back to back, no PASSIVE pass ends with every frame copied, so the WAL
    would never start over and grow by every write (12,000 sends wrote 245 MB in a second).
    Past WAL_RESTART_BYTES the writer catches up between two batches, and the log starts
    over while the writes go on."""
    monkeypatch.setattr(store_module, "WAL_RESTART_BYTES", 2 << 20)
    store = SqliteStore(str(tmp_path / "yim.db"), checkpoint_interval=0.05)
    await store.open()
    ids = itertools.count(10_000)
    wal = tmp_path / "yim.db-wal"
    restarts_seen: set[int] = set()
    try:
        users = [next(ids) for _ in range(40)]
        for uid in users:
            await store.create_user(
                UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1)
            )

        async def pair_sends(a: int, b: int) -> None:
            for i in range(300):  # one after another, 20 senders at once: the writer never idles
                await store.send_message(_page_filling_send(ids, a, b, f"{a}-{i}"))

        async def watch() -> None:
            while True:
                restarts_seen.add(_wal_restarts_so_far(wal))
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        await asyncio.gather(*(pair_sends(users[k], users[k + 1]) for k in range(0, 40, 2)))
        watcher.cancel()
        assert store.stats["wal_catch_ups"] >= 1, store.stats
        assert len(restarts_seen) >= 2, restarts_seen  # seen from the file itself, mid-load
    finally:
        await store.close()


async def test_a_wal_catch_up_runs_on_the_writer_thread_and_never_holds_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer's checkpoint runs (holding the writer's lock, as it does), the event
    loop turns on and a send waits for the thread behind it: it is neither committed inline
    nor gathered into a loop batch, either of which would make the loop wait for the lock."""
    store = SqliteStore(str(tmp_path / "yim.db"))
    await store.open()
    writer = store._writer
    holding, release = threading.Event(), threading.Event()
    real_catch_up = writer._catch_up

    def slow_catch_up(conn: Any) -> None:
        with writer._lock:
            holding.set()
            release.wait(10)
        real_catch_up(conn)

    monkeypatch.setattr(writer, "_catch_up", slow_catch_up)
    try:
        a, b = 10_001, 10_002
        for uid in (a, b):
            await store.create_user(
                UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1)
            )
        await asyncio.sleep(0.01)  # past INLINE_IDLE_S: a send now would go inline
        writer.catch_up_wal()
        writer.catch_up_wal()  # one at a time: the second ask is dropped
        assert await asyncio.to_thread(holding.wait, 10)
        cmd = SendCmd(
            msg_id=20_001, new_conv_id=20_002, sender_id=a, sender_device="d", kind="text",
            body=b'{"text":"hi"}', client_msg_id="c1", created_at=1, to=b,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        began = loop.time()
        sending = store.send_message(cmd)  # submitted here: inline, it would wait for the lock now
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert loop.time() - began < 5.0  # the loop never waited for the lock (held 10 s)
        assert not sending.done()
        assert (store.stats["inline_batches"], store.stats["loop_batches"]) == (0, 0)
        release.set()
        assert (await sending).sender_inbox_seq == 1
        assert store.stats["jobs"] == 3  # two users and the send: the catch-up is no job
    finally:
        release.set()
        await store.close()


async def test_heads_asked_for_together_are_read_together_and_each_is_right(tmp_path: Path) -> None:
    """Connects read their user's inbox head; heads asked for in one loop turn share one
    read, and every caller still gets its own user's head (0 for an unknown user)."""
    store = SqliteStore(str(tmp_path / "yim.db"))
    await store.open()
    ids = itertools.count(10_000)
    try:
        users = [next(ids) for _ in range(6)]
        for uid in users:
            await store.create_user(
                UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1)
            )
        expected = dict.fromkeys(users, 0)
        for k, (a, b) in enumerate(itertools.pairwise(users)):
            for _ in range(k + 1):
                res = await store.send_message(
                    SendCmd(
                        msg_id=next(ids), new_conv_id=next(ids), sender_id=a, sender_device="d", kind="text",
                        body=b'{"text":"hi"}', client_msg_id=f"h{next(ids)}", created_at=1, to=b,
                    )
                )  # fmt: skip
                for uid, seq in res.deliveries:
                    expected[uid] = seq
        asked = [*users, users[2], 999]  # one user twice, one unknown
        got = await asyncio.gather(*(store.inbox_head(u) for u in asked))
        assert got == [*(expected[u] for u in users), expected[users[2]], 0]
        assert len(set(expected.values())) > 2  # the heads differ, so a mix-up would show
    finally:
        await store.close()
