"""The store of a node's workers (yim/storage/remote.py): a RemoteStore in this process, a
StoreServer around a real SqliteStore in another, one Unix socketpair between them.

Proved here: the remote answers what the store answers (the parity scenarios of
tests/test_store_parity.py, run through the remote and directly, give equal transcripts);
a send through it is a Future, durable before its reply, idempotent on resend; a burst of
hundreds of concurrent sends is group-committed with gap-free seqs; a YimError keeps its
code; the server calls nothing outside the interfaces; every interface method is forwarded
and served; a store process that dies fails what was pending with ``unavailable``.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from yim.ipc.channel import Channel, connect
from yim.protocol.errors import YimError
from yim.storage.base import Store
from yim.storage.records import CreateGroupCmd, SendCmd, SendResult, SessionRec, UserRec
from yim.storage.remote import CONCEPTS, METHODS, RemoteStore, StoreServer
from yim.storage.sqlite.store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000

# The store process of these tests: a StoreServer around a SqliteStore, the routing context
# answering from a set of connected users the test sets by a cast (as the worker hub would).
CHILD = """
import asyncio, socket, sys
import msgspec
from yim.ipc.channel import connect
from yim.services.routing import DefaultRouting
from yim.storage.remote import StoreServer
from yim.storage.service import ServiceCtx
from yim.storage.sqlite.store import SqliteStore

async def main(fd, path):
    store = SqliteStore(path)
    await store.open()
    online = set()
    store.service.ctx = ServiceCtx(is_connected=online.__contains__, policy=DefaultRouting())
    server = StoreServer(store)

    def on_cast(op, body):
        if op == "test.online":
            online.clear()
            online.update(msgspec.msgpack.decode(body, type=list[int]))
        else:
            server.handle_cast(op, body)

    channel = await connect(socket.socket(fileno=fd), server.handle, on_cast, name="store")
    await channel.closed.wait()
    await store.close()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    channel: Channel
    remote: Store
    path: Path

    async def stop(self) -> None:
        self.channel.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


async def serve(path: Path) -> Served:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(theirs.fileno()), str(path), pass_fds=[theirs.fileno()], env=env
    )
    theirs.close()
    channel = await connect(ours, name="worker")
    remote = RemoteStore(channel)
    await asyncio.wait_for(remote.max_msg_id(), 60)  # answered once the store is open
    return Served(proc, channel, remote, path)


@pytest_asyncio.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    s = await serve(tmp_path_factory.mktemp("remote") / "yim.db")
    yield s
    await s.stop()


def _send(msg_id: int, sender: int, cmid: str | None = None, **kw: Any) -> SendCmd:
    return SendCmd(
        msg_id=msg_id,
        new_conv_id=msg_id + 1,
        sender_id=sender,
        sender_device="phone",
        kind="text",
        body=b'{"text":"hi"}',
        client_msg_id=cmid or f"c{msg_id}",
        created_at=T0 + msg_id,
        **kw,
    )


def _group(conv_id: int, owner: int, members: list[int]) -> CreateGroupCmd:
    return CreateGroupCmd(
        conv_id=conv_id, msg_id=conv_id + 1, owner_id=owner, member_ids=members, name="g", announcement="",
        avatar="", join_policy="open", max_members=100, threshold=50, created_at=T0 + conv_id,
    )  # fmt: skip


async def _users(store: Store, ids: range) -> None:
    for i in ids:
        await store.create_user(UserRec(i, f"u{i}", f"u{i}", "h", T0))


# --- the interface and the allow-list ------------------------------------------------------


def _interface_ops() -> set[str]:
    """What a worker must be able to ask, read off the interfaces here, independently: every
    public method (abstract or not) and property of Store and of each concept store it
    names, but what the worker answers itself."""
    assert {c: i.__name__ for c, i in CONCEPTS.items()} == Store.__annotations__
    local = {"store.open", "store.close", "store.service.may_be_agent"}
    ops: set[str] = set()
    for concept, iface in [("", Store), *CONCEPTS.items()]:
        for name in dir(iface):
            raw = inspect.getattr_static(iface, name)
            if not name.startswith("_") and (inspect.isfunction(raw) or isinstance(raw, property)):
                ops.add(f"store.{concept}.{name}" if concept else f"store.{name}")
    assert local <= ops
    return ops - local


async def test_every_interface_method_is_forwarded_and_served_and_nothing_else(served: Served) -> None:
    want = _interface_ops()
    assert len(want) > 100
    assert set(METHODS) == want
    # the server answers exactly those, bound to a real store
    lite = SqliteStore(str(served.path.with_name("unopened.db")))
    assert StoreServer(lite).ops == want
    # the remote overrides every one of them, in the same attribute tree
    remote = served.remote
    assert isinstance(remote, Store)
    for op, m in METHODS.items():
        owner = getattr(remote, m.concept) if m.concept else remote
        iface = CONCEPTS[m.concept] if m.concept else Store
        assert isinstance(owner, iface)
        if m.kind == "property":
            continue
        assert inspect.getattr_static(type(owner), m.name) is not inspect.getattr_static(iface, m.name), op
        assert inspect.signature(getattr(owner, m.name)) == inspect.signature(getattr(iface, m.name).__get__(owner))
    assert not any(getattr(type(getattr(remote, c)), "__abstractmethods__", ()) for c in CONCEPTS)
    assert isinstance(remote, abc.ABC) and not type(remote).__abstractmethods__  # type: ignore[attr-defined]

    # nothing outside the allow-list: private, backend-only, the store's life, bad arguments
    ch = served.channel
    for op, args in [
        ("store._writer.stop", ()),
        ("store.indexer.start", ()),
        ("store.close", ()),
        ("store.open", ()),
        ("store.path", ()),
        ("store.relations.__init__", ()),
        ("hub.presence", ()),
        ("store.user_by_name", (7,)),  # a str parameter
        ("store.sync", (1, 0)),  # one argument missing
        ("store.service.may_become_agent", (1,)),  # a cast, not a call
    ]:
        with pytest.raises(YimError) as info:
            await asyncio.wait_for(ch.call(op, args), 10)
        assert info.value.code == "internal", op
    assert await remote.max_msg_id() >= 0  # the server is still there


# --- sends --------------------------------------------------------------------------------------


async def test_a_send_is_a_future_with_the_direct_stores_result_and_resends_are_idempotent(
    served: Served, tmp_path: Path
) -> None:
    remote = served.remote
    direct = SqliteStore(str(tmp_path / "direct.db"))
    await direct.open()
    try:
        for s in (remote, direct):
            await _users(s, range(101, 104))
        results: list[list[Any]] = []
        for s in (remote, direct):
            fut = s.send_message(_send(1000, 101, to=102))
            assert isinstance(fut, asyncio.Future)  # not a coroutine: no task per send
            first = await fut
            dm = first.message.conv_id
            again = await s.send_message(_send(1010, 101, cmid="c1000", to=102))
            g = await s.create_group(_group(1020, 101, [102]))
            in_group = await s.send_message(_send(1030, 102, conv_id=g.group.conv_id))
            refused: list[Any] = []
            for call in (
                s.send_message(_send(1040, 103, conv_id=g.group.conv_id)),  # not a member
                s.create_user(UserRec(150, "U101", "x", "h", T0)),  # the name, another case
                s.history(103, dm, None, None, 10),
            ):
                with pytest.raises(YimError) as info:
                    await call
                refused.append((info.value.code, info.value.message))
            # keyword arguments (and their defaults) reach the store as the direct call's
            await s.create_session(SessionRec("s1", 101, "phone", "android", T0, T0 + 10**9), "Pixel")
            revoked = await s.revoke_sessions(101, device_id="phone", now=T0 + 5)
            inbox = await s.sync(102, 0, 100)
            results.append([first, again, g, in_group, refused, revoked, inbox, await s.conversations(102, None, 10)])
        got, want = results
        assert got == want
        first, again = got[0], got[1]
        assert isinstance(first, SendResult) and not first.duplicate
        assert again.duplicate and again.message.msg_id == first.message.msg_id and again.message.seq == 1
        assert [code for code, _ in got[4]] == ["not_member", "username_taken", "not_member"]
        assert got[5] == ["s1"]
        assert [e.type for e in got[6][0]] == ["message", "message", "message"]
    finally:
        await direct.close()


async def test_hundreds_of_concurrent_sends_are_group_committed_with_gap_free_seqs(served: Served) -> None:
    remote = served.remote
    assert isinstance(remote, RemoteStore)
    members = list(range(201, 211))
    await _users(remote, range(201, 211))
    group = await remote.create_group(_group(2000, 201, members[1:]))
    conv = group.group.conv_id
    base = group.group.last_seq
    before = await remote.refresh_stats()
    n = 400
    futs = [remote.send_message(_send(3000 + 2 * i, members[i % 10], conv_id=conv)) for i in range(n)]
    done = await asyncio.wait_for(asyncio.gather(*futs), 60)
    after = await remote.refresh_stats()
    seqs = [r.message.seq for r in done]
    assert sorted(seqs) == list(range(base + 1, base + n + 1))  # gap-free, none twice
    for sender in members:  # each sender's sends keep the order they were made in
        mine = [r.message.seq for r in done if r.message.sender_id == sender]
        assert mine == sorted(mine)
    jobs, batches = after["jobs"] - before["jobs"], after["batches"] - before["batches"]
    assert jobs >= n
    assert batches * 4 <= jobs, (jobs, batches)  # shared commits, not one per send
    page, _ = await remote.history(201, conv, None, base, n)
    assert [m.seq for m in page] == list(range(base + 1, base + n + 1))


async def test_stats_is_a_snapshot_refreshed_when_read(served: Served) -> None:
    remote = served.remote
    assert isinstance(remote, RemoteStore)
    fresh = RemoteStore(served.channel)
    assert fresh.stats == {}  # nothing yet: the first read asks
    for _ in range(500):  # bounded: the answer is one round trip away
        if fresh.stats:
            break
        await asyncio.sleep(0.01)
    assert set(fresh.stats) == {
        "batches",
        "slow_batches",
        "checkpoints",
        "wal_catch_ups",
        "jobs",
        "inline_batches",
        "loop_batches",
    }
    assert fresh.stats["jobs"] > 0


# --- the parity scenarios, through the remote ---------------------------------------------------


async def test_the_parity_scenarios_through_the_remote_equal_the_direct_store(tmp_path: Path) -> None:
    from tests.test_store_parity import Transcript, media_and_search_scenario, scenario

    class RemoteTranscript(Transcript):
        """Tells the store process who is connected before each step, as the hub would: the
        scenario changes it on the routing context it sets, which the store process reads."""

        async def __call__(self, label: str, call: Any) -> Any:
            ctx = self.store.service.ctx
            if ctx is not None:
                channel.cast("test.online", [u for u in range(1, 20) if ctx.is_connected(u)])
            return await super().__call__(label, call)

    for run in (scenario, media_and_search_scenario):  # each on fresh stores
        s = await serve(tmp_path / f"remote-{run.__name__}.db")
        channel = s.channel
        direct = SqliteStore(str(tmp_path / f"direct-{run.__name__}.db"))
        await direct.open()
        try:
            got, want = RemoteTranscript(s.remote), Transcript(direct)
            await run(got)
            await run(want)
            assert len(got.lines) == len(want.lines) > 20
            for (label, w), (_, g) in zip(want.lines, got.lines, strict=True):
                assert g == w, label
        finally:
            await direct.close()
            await s.stop()


# --- a store process that dies --------------------------------------------------------------------


async def test_a_killed_store_process_fails_pending_calls_and_acked_sends_are_durable(tmp_path: Path) -> None:
    s = await serve(tmp_path / "yim.db")
    remote = s.remote
    try:
        await _users(remote, range(1, 3))
        acked = [await remote.send_message(_send(100 + 2 * i, 1, to=2)) for i in range(20)]
        conv = acked[0].message.conv_id
        pending_sends = [remote.send_message(_send(500 + 2 * i, 1, conv_id=conv)) for i in range(50)]
        pending_read = asyncio.ensure_future(remote.sync(2, 0, 10))
        # Killed before this turn ends: no reply to the rest can come. The turn's first frame
        # may already be out (a lone frame at light traffic is written at once), so that send
        # may be stored, and even answered (an idle writer commits it at once), or stored
        # unacknowledged, as any send whose reply is lost (its resend is a duplicate).
        s.proc.kill()
        outcomes = await asyncio.wait_for(asyncio.gather(*pending_sends, pending_read, return_exceptions=True), 30)
        first_answered = isinstance(outcomes[0], SendResult) and outcomes[0].message.msg_id == 500
        rest = outcomes[1:] if first_answered else outcomes
        assert all(isinstance(o, YimError) and o.code == "unavailable" for o in rest), outcomes
        await asyncio.wait_for(s.channel.closed.wait(), 10)
        for later in (remote.send_message(_send(900, 1, conv_id=conv)), remote.inbox_head(2), remote.open()):
            with pytest.raises(YimError) as info:
                await asyncio.wait_for(later, 10)
            assert info.value.code == "unavailable"
    finally:
        await s.stop()
    # what was acknowledged survived the kill
    direct = SqliteStore(str(s.path))
    await direct.open()
    try:
        page, _ = await direct.history(2, conv, None, 0, 100)
        stored = [(m.msg_id, m.seq) for m in page]
        assert stored[: len(acked)] == [(r.message.msg_id, r.message.seq) for r in acked]
        if first_answered:  # acknowledged: durable
            assert stored[len(acked) :] == [(500, len(acked) + 1)]
        else:  # at most the first, unanswered
            assert stored[len(acked) :] in ([], [(500, len(acked) + 1)])
    finally:
        await direct.close()


async def test_may_become_agent_is_a_cast_the_store_takes(served: Served) -> None:
    """The store process skips the writer for the presence of a user who is certainly no
    agent; after the cast ``may_become_agent`` it no longer is certainly one."""
    remote = served.remote
    assert isinstance(remote, RemoteStore)
    assert remote.service.may_be_agent(4242) is True  # the worker cannot tell: always safe
    await remote.create_user(UserRec(4242, "maybe", "maybe", "h", T0))
    jobs = (await remote.refresh_stats())["jobs"]
    assert await remote.service.agent_presence(4242, True, T0) == []
    assert (await remote.refresh_stats())["jobs"] == jobs  # no writer job for a non-agent
    remote.service.may_become_agent(4242)
    assert await remote.service.agent_presence(4242, True, T0) == []  # no shop: nothing to route
    assert (await remote.refresh_stats())["jobs"] == jobs + 1
