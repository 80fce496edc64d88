"""Cluster mode: three nodes on one PostgreSQL and Redis (single server, and Redis Cluster
with sharded pub/sub). Users on different nodes chat one-to-one and in a group; the
newest connection of a device wins across nodes; revocations and the multi-device policy
reach other nodes; node ids are leased, never shared; and a node killed with SIGKILL in
the middle of a burst costs its clients one reconnect to another node and nothing else."""

from __future__ import annotations

import asyncio
import functools
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from yim.bus.redis import RedisBus
from yim.ids.snowflake import node_of
from yim.node import NodeServer
from yim.protocol.errors import YimError
from yim.protocol.frames import SendAck

from .conftest import ServerProcess
from .conftest import test_settings as node_settings
from .rawclient import Device, ProtocolError, login, make_users, until
from .sdk_helpers import Chat, history_of
from .services import RedisClusterServers, RedisServer

#: A node issues ids only until 0.8 of its lease past its last renewal (every third of it):
#: with 1.5 s, a renewal (a Redis round trip on the test's own loop) late by 0.7 s refused
#: sends (`unavailable`), and on a loaded machine renewals were seen ~1 s late. 4 s leaves
#: ~1.9 s for that, at 0.8 s more per start (a node waits one renewal period before issuing).
#: The tests of the lease itself set their own (tests/test_cluster_fencing.py).
CLUSTER_TIMINGS = {"node_lease_ttl_s": 4.0, "cluster_route_ttl_s": 3.0}


def _data_dirs(tmp_path: Path, n: int) -> list[Path]:
    """One folder per node, all with the same token secret (nodes must share it)."""
    secret = secrets.token_bytes(32).hex()
    dirs = []
    for i in range(n):
        d = tmp_path / f"node{i}"
        d.mkdir()
        (d / "secret.key").write_text(secret)
        dirs.append(d)
    return dirs


async def _flush(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        await r.flushall()
    finally:
        await r.aclose()


async def _start_nodes(tmp_path: Path, store: str, redis_url: str, **overrides: Any) -> list[NodeServer]:
    servers = [
        NodeServer(
            node_settings(d, store=store, redis_url=redis_url, node_id_lease=True, **{**CLUSTER_TIMINGS, **overrides})
        )
        for d in _data_dirs(tmp_path, 3)
    ]
    await asyncio.gather(*(s.start() for s in servers))
    return servers


@pytest_asyncio.fixture
async def three_nodes(tmp_path: Path, postgres_dsn: str, redis_server: RedisServer) -> AsyncIterator[list[NodeServer]]:
    await _flush(redis_server.url)
    servers = await _start_nodes(tmp_path, postgres_dsn, redis_server.url, typing_interval_s=0.0)
    yield servers
    for s in servers:
        await s.stop()


def _close_code(device: Device) -> int | None:
    return device.ws.close_code if device.ws is not None else None


def _texts(device: Device, conv_id: str) -> list[str]:
    """Texts pushed to a device in one conversation, in inbox order. Pushes from different
    nodes may arrive out of seq order; clients put them back in order by seq (the SDK
    holds an early event until the hole before it is filled or pulled)."""
    got = sorted(
        (e for e in device.events if e["type"] == "message" and e["data"]["conv_id"] == conv_id),
        key=lambda e: e["seq"],
    )
    return [e["data"]["body"].get("text", e["data"]["kind"]) for e in got]


async def test_users_on_three_nodes_chat_one_to_one_and_in_a_group(three_nodes: list[NodeServer]) -> None:
    n0, n1, n2 = three_nodes
    assert len({s.node.ids.node_id for s in three_nodes}) == 3  # leased, distinct
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        a_login, b_login, c_login, d_login = await make_users(h0, ["alice", "bob", "carol", "dave"])
        alice, bob, carol, dave = Device(h0, a_login), Device(h1, b_login), Device(h2, c_login), Device(h0, d_login)
        for d in (alice, bob, carol, dave):
            await d.connect()

        # One-to-one across nodes, both ways.
        ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "你好 bob"}, client_msg_id="a1")
        dm = ack["conv_id"]
        await until(lambda: _texts(bob, dm) == ["你好 bob"])
        await bob.request("send", conv_id=dm, kind="text", body={"text": "hi alice"}, client_msg_id="b1")
        await until(lambda: _texts(alice, dm) == ["hi alice"])
        ack = await alice.request("send", conv_id=dm, kind="text", body={"text": "read me"}, client_msg_id="a2")
        await until(lambda: _texts(bob, dm) == ["你好 bob", "read me"])
        read = await bob.request("read", conv_id=dm, seq=ack["seq"])
        await until(lambda: any(e["type"] == "receipt" for e in alice.events))
        assert read["unread"] == 0

        # A group spanning the nodes; each node pushes to members on the others.
        g = await carol.request("group_create", name="三个节点", members=[alice.user_id, bob.user_id])
        gid = g["group"]["conv_id"]
        for i, who in enumerate((carol, alice, bob)):
            await who.request("send", conv_id=gid, kind="text", body={"text": f"g{i}"}, client_msg_id=f"g{i}")
        for d, mine in ((alice, "g1"), (bob, "g2"), (carol, "g0")):
            await until(
                lambda d=d, mine=mine: (
                    [t for t in _texts(d, gid) if t != "system"] == [t for t in ("g0", "g1", "g2") if t != mine]
                )
            )
        # Message ids carry the node that wrote them.
        msgs = (await carol.request("history", conv_id=gid))["messages"]
        assert {node_of(int(m["msg_id"])) for m in msgs[1:]} == {s.node.ids.node_id for s in three_nodes}

        # Typing goes through rosters: node1 caches the group's roster, node2 changes the
        # membership, and the next notice from node1 reaches the new member on node0.
        await bob.request("typing", conv_id=gid)
        await until(lambda: any(n["type"] == "typing" for n in alice.notices + carol.notices))
        await carol.request("group_invite", conv_id=gid, user_ids=[dave.user_id])
        await until(lambda: any(e["type"] == "message" and e["data"]["conv_id"] == gid for e in dave.events))
        await bob.request("typing", conv_id=gid)
        await until(lambda: any(n["type"] == "typing" and n["data"]["conv_id"] == gid for n in dave.notices))

        # The newest connection of a device wins everywhere: alice's desktop reconnects to
        # node2 and her node0 connection is closed as replaced.
        alice2 = Device(h2, a_login)
        await alice2.connect()
        await asyncio.wait_for(alice.closed.wait(), 10)
        assert _close_code(alice) == 4002
        await bob.request("send", conv_id=dm, kind="text", body={"text": "still there?"}, client_msg_id="b2")
        await until(lambda: _texts(alice2, dm) == ["still there?"])

        # The multi-device policy counts every node: one mobile device at a time.
        bob_phone = Device(h1, await login(h1, "bob", "phone", "android"))
        await bob_phone.connect()
        bob_tablet = Device(h2, await login(h2, "bob", "tablet", "ios"))
        await bob_tablet.connect()
        await asyncio.wait_for(bob_phone.closed.wait(), 10)
        assert _close_code(bob_phone) == 4006

        # Logging out on one node ends the session's connection on another.
        r = await h0.delete("/api/v1/sessions/current", headers={"Authorization": f"Bearer {c_login['token']}"})
        assert r.status in (200, 204), await r.text()
        await asyncio.wait_for(carol.closed.wait(), 10)
        assert _close_code(carol) == 4003

        for d in (alice2, bob, bob_tablet, dave):
            await d.close()
    stats = [s.node.bus for s in three_nodes]
    assert all(isinstance(b, RedisBus) and b.remote_in > 0 for b in stats)


async def test_a_node_that_lost_its_id_lease_stops_issuing_ids(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    """Redis restarted empty and another node took this node's id: at its next renewal
    the node learns it and refuses to issue ids (sends answer `unavailable`)."""
    await _flush(redis_server.url)
    [folder] = _data_dirs(tmp_path, 1)
    settings = node_settings(folder, store=postgres_dsn, redis_url=redis_server.url, node_id_lease=True)
    server = NodeServer(msgspec.structs.replace(settings, node_lease_ttl_s=0.9))
    await server.start()
    try:
        bus = server.node.bus
        assert isinstance(bus, RedisBus) and bus.lease_id is not None
        server.node.ids.next_id()  # fine while the lease holds
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            await r.set(f"yim:nodeid:{{{bus.lease_id}}}", "another-node", px=10_000)
        finally:
            await r.aclose()
        with pytest.raises(YimError) as err:
            async with asyncio.timeout(10):
                while True:
                    server.node.ids.next_id()
                    await asyncio.sleep(0.02)
        assert err.value.code == "unavailable"
    finally:
        await server.stop()


async def test_a_node_killed_mid_burst_costs_one_reconnect_and_nothing_else(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    await _flush(redis_server.url)
    env = {
        "YIM_STORE": postgres_dsn,
        "YIM_REDIS_URL": redis_server.url,
        "YIM_NODE_ID_LEASE": "true",
        # node b takes the whole resent burst at once: a lease as in CLUSTER_TIMINGS
        "YIM_NODE_LEASE_TTL_S": str(CLUSTER_TIMINGS["node_lease_ttl_s"]),
        "YIM_CLUSTER_ROUTE_TTL_S": "3",
    }
    procs = [ServerProcess(d, **env) for d in _data_dirs(tmp_path, 3)]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        a, b, c = procs
        async with asyncio.timeout(120), Chat([a.url, b.url]) as chat, Chat(c.url) as far:
            bob = await chat.user("bob")
            await chat.user("alice")
            alice = await chat.client("alice", "phone")  # on node a; fails over to b
            receiver = far.inbox(await far.client("bob", "phone"))  # on node c
            total, kill_after, first_wave = 2000, 300, 500
            acked: dict[str, SendAck] = {}
            enough = asyncio.Event()

            def on_reply(cmid: str, task: asyncio.Task[SendAck]) -> None:
                if not task.cancelled() and task.exception() is None:
                    acked[cmid] = task.result()
                    if len(acked) >= kill_after:
                        enough.set()

            def send(i: int) -> asyncio.Task[SendAck]:
                cmid = f"burst-{i:05d}"
                task = asyncio.create_task(alice.send(to=bob.user_id, body={"text": f"m{i:05d}"}, client_msg_id=cmid))
                task.add_done_callback(functools.partial(on_reply, cmid))
                return task

            tasks = [send(i) for i in range(first_wave)]
            await enough.wait()
            # Freeze node a, then write the rest of the burst into its socket: those sends are
            # on the wire and unanswered when it dies, however fast it was until now (as in
            # test_crash.py: a quick node could otherwise answer the whole burst before the kill).
            assert a.proc is not None
            a.proc.send_signal(signal.SIGSTOP)
            tasks += [send(i) for i in range(first_wave, total)]
            await asyncio.sleep(0.5)  # let the new tasks write their frames
            a.kill()
            acked_before_kill = dict(acked)
            assert kill_after <= len(acked_before_kill) <= first_wave  # the kill landed mid-burst

            acks = await asyncio.gather(*tasks)  # resent to node b with the same client_msg_ids
            assert alice.connects >= 2 and alice.endpoint.http == b.url

            history = await history_of(alice, acks[0].conv_id)
            assert [m.seq for m in history] == list(range(1, total + 1))  # gap-free
            by_cmid = {m.client_msg_id: m for m in history}
            assert len(by_cmid) == total  # each exactly once
            for cmid, ack in acked_before_kill.items():
                assert (by_cmid[cmid].msg_id, by_cmid[cmid].seq) == (ack.msg_id, ack.seq)
            assert [m.body["text"] for m in history] == [f"m{i:05d}" for i in range(total)]

            # Bob, on a node that never died, got every message once and in order — pushed
            # across nodes, or pulled when a push died with node a.
            got = await receiver.wait_messages(total, timeout=60)
            assert [m.msg_id for m in got] == [m.msg_id for m in history]
            assert [i.seq for i in receiver.items] == list(range(1, total + 1))
    finally:
        for p in procs:
            p.stop()


@pytest_asyncio.fixture
async def three_nodes_on_redis_cluster(
    tmp_path: Path, postgres_dsn: str, redis_cluster: RedisClusterServers
) -> AsyncIterator[list[NodeServer]]:
    for node in redis_cluster.nodes:
        await _flush(node.url)
    servers = await _start_nodes(tmp_path, postgres_dsn, redis_cluster.url)
    yield servers
    for s in servers:
        await s.stop()


async def test_chat_across_nodes_over_redis_cluster_sharded_pubsub(
    three_nodes_on_redis_cluster: list[NodeServer],
) -> None:
    n0, n1, n2 = three_nodes_on_redis_cluster
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        logins = await make_users(h0, ["alice", "bob", "carol"])
        alice, bob, carol = (Device(h, lg) for h, lg in zip((h0, h1, h2), logins, strict=True))
        for d in (alice, bob, carol):
            await d.connect()
        g = await alice.request("group_create", name="cluster", members=[bob.user_id, carol.user_id])
        gid = g["group"]["conv_id"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(20):
            who = (alice, bob, carol)[i % 3]
            await who.request("send", conv_id=gid, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}")
        for i, d in enumerate((alice, bob, carol)):
            want = [f"m{k}" for k in range(20) if k % 3 != i]
            await until(lambda d=d, want=want: [t for t in _texts(d, gid) if t != "system"] == want)
        # Sharded pub/sub read with one reader per node: no per-shard polling delay.
        assert loop.time() - started < 10
        with_error = None
        try:
            await carol.request("send", conv_id="1", kind="text", body={"text": "x"}, client_msg_id="x")
        except ProtocolError as exc:
            with_error = exc.code
        assert with_error == "not_member"
        for d in (alice, bob, carol):
            await d.close()


async def test_seqs_stay_gap_free_across_a_redis_restart_and_push_resumes(tmp_path: Path, postgres_dsn: str) -> None:
    """Redis is not on the store path: sends keep committing with contiguous seqs while it
    restarts empty; node-id leases are taken back at renewal, routes at their refresh,
    and cross-node push resumes."""
    own = RedisServer()
    own.start()
    servers: list[NodeServer] = []
    try:
        # A lease longer than Redis's outage here, also on a loaded machine: a node stops
        # issuing ids 0.8 lease after its last renewal (that is tests/test_cluster_fencing.py).
        servers = await _start_nodes(tmp_path, postgres_dsn, own.url, node_lease_ttl_s=6.0)
        n0, n1, _ = servers
        async with aiohttp.ClientSession(n0.url) as h0, aiohttp.ClientSession(n1.url) as h1, asyncio.timeout(60):
            a_login, b_login = await make_users(h0, ["alice", "bob"])
            alice, bob = Device(h0, a_login), Device(h1, b_login)
            await alice.connect()
            await bob.connect()
            acks = []
            for i in range(5):
                acks.append(
                    await alice.request(
                        "send", to=bob.user_id, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}"
                    )
                )
            dm = acks[0]["conv_id"]
            await until(lambda: len(_texts(bob, dm)) == 5)

            own.kill()
            for i in range(5, 10):  # Redis is down: the store path does not notice
                acks.append(
                    await alice.request("send", conv_id=dm, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}")
                )
            own.start()  # back, empty: no routes, no leases, no node registry
            assert [a["seq"] for a in acks] == list(range(1, 11))

            # Within a refresh period the routes are back and pushes flow again.
            async def pushed(i: int) -> bool:
                ack = await alice.request(
                    "send", conv_id=dm, kind="text", body={"text": f"n{i}"}, client_msg_id=f"n{i}"
                )
                acks.append(ack)
                try:
                    await until(lambda: f"n{i}" in _texts(bob, dm), timeout=0.5)
                except TimeoutError:
                    return False
                return True

            for i in range(40):
                if await pushed(i):
                    break
            else:
                raise AssertionError("cross-node push did not resume after the Redis restart")
            assert [a["seq"] for a in acks] == list(range(1, len(acks) + 1))
            events, _ = await bob.sync_all()
            got = [e["data"]["seq"] for e in events if e["type"] == "message"]
            assert got == list(range(1, len(acks) + 1))  # the pull fills what the outage dropped
            assert len({s.node.ids.node_id for s in servers}) == 3
            servers[0].node.ids.next_id()  # leases were taken back: ids are still issued
            await alice.close()
            await bob.close()
    finally:
        for s in servers:
            await s.stop()
        own.remove()
