"""Cluster mode across a Redis restart: nodes notice it at once, register their routes
again right away (not at the next periodic refresh), retire the pooled connections that
died with it, and hand every connected device its newest inbox event, so that a push
that found no route is caught up without the device reconnecting."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from yim.bus.redis import REDIS_CONNECTIONS, LeasedSnowflake, RedisBus, connect_redis
from yim.client import ApiError
from yim.node import NodeServer
from yim.protocol.errors import YimError
from yim.protocol.frames import SendAck

from .conftest import test_settings as node_settings
from .rawclient import Device, login, until
from .sdk_helpers import Chat
from .services import RedisServer
from .test_cluster import _data_dirs

#: Routes live a minute and are refreshed every 20 s: only the immediate re-registration
#: can bring them back within the few seconds the test allows. The lease outlives the
#: outage, so no node fences itself: a node fences once a renewal fails a lease after the
#: last one that got through, and the outage here (sends, then a Redis start) plus a renewal
#: period (1 s) left little of 3 s on a loaded machine; 6 s as in the other outage tests.
TIMINGS = {"node_lease_ttl_s": 6.0, "cluster_route_ttl_s": 60.0}


async def test_no_command_fails_on_a_pooled_connection_that_died_with_redis() -> None:
    own = RedisServer()
    own.start()
    r = connect_redis(own.url)
    try:
        async with asyncio.timeout(30):
            n = REDIS_CONNECTIONS // 2
            await asyncio.gather(*(r.set(f"k{i}", i) for i in range(n)))  # n pooled connections
            own.kill()
            own.start()  # same port, empty
            for _ in range(3):  # every pooled connection is handed out at least once
                got = await asyncio.gather(*(r.get(f"k{i}") for i in range(n)))
                assert got == [None] * n
    finally:
        await r.aclose()
        own.remove()


async def test_a_push_after_a_redis_restart_reaches_a_device_that_never_reconnected(
    tmp_path: Path, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    own = RedisServer()
    own.start()
    servers = [
        NodeServer(node_settings(d, store=postgres_dsn, redis_url=own.url, node_id_lease=True, **TIMINGS))
        for d in _data_dirs(tmp_path, 3)
    ]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        n0, n1, _ = servers
        async with (
            Chat(n0.url) as near,
            Chat(n1.url) as far,
            aiohttp.ClientSession(n1.url) as h1,
            asyncio.timeout(90),
        ):
            await near.user("alice")
            bob_user = await near.user("bob")
            alice = await near.client("alice", "laptop")  # on n0
            bob = far.inbox(await far.client("bob", "laptop"))  # on n1, SDK: syncs on gaps
            bob_raw = Device(h1, await login(h1, "bob", "desktop"))  # on n1, never syncs
            await bob_raw.connect()
            acks: list[SendAck] = []
            for i in range(3):
                acks.append(await alice.send(to=bob_user.user_id, body={"text": f"before {i}"}))
            await bob.wait_messages(3)

            caplog.clear()
            caplog.set_level(logging.WARNING)
            own.kill()
            refused = 0
            for i in range(5):  # Redis is down: sends commit, or answer `unavailable`
                try:
                    acks.append(await alice.send(to=bob_user.user_id, body={"text": f"during {i}"}))
                except ApiError as exc:
                    assert exc.code == "unavailable"
                    refused += 1
                await asyncio.sleep(0.1)
            bus1 = n1.node.bus
            assert isinstance(bus1, RedisBus)
            heals = bus1.heals
            own.start()  # back on the same port, empty: no routes, no leases
            loop = asyncio.get_running_loop()
            back = loop.time()

            async def healed() -> None:
                while bus1.heals == heals:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(healed(), 10)
            heal_s = loop.time() - back
            # What was sent while Redis was down reaches bob with no later message to
            # reveal a gap: n1 pushed bob his newest event, the SDK saw the gap and synced.
            got = await bob.wait_messages(len(acks), timeout=5)
            assert [m.msg_id for m in got] == [a.msg_id for a in acks]
            await asyncio.sleep(max(0.0, 1.5 - heal_s))
            last = await alice.send(to=bob_user.user_id, body={"text": "after"})
            acks.append(last)
            # Pushed: the raw device never syncs, and nobody reconnected.
            await until(lambda: any(e["data"].get("msg_id") == last.msg_id for e in bob_raw.events), timeout=5)
            # Every acknowledged message reached bob exactly once, in order.
            got = await bob.wait_messages(len(acks), timeout=10)
            assert [m.msg_id for m in got] == [a.msg_id for a in acks]
            assert bob.client.connects == 1 and not bob_raw.closed.is_set()
            assert alice.connects == 1
            await bob_raw.close()

        # The outage is one line per node, not one per failed command, without tracebacks.
        ours = [rec for rec in caplog.records if rec.name.startswith("yim")]
        assert not [rec for rec in ours if rec.exc_info], [rec.getMessage() for rec in ours]
        unreachable = [rec for rec in ours if rec.getMessage().startswith("Redis unreachable")]
        assert 1 <= len(unreachable) <= len(servers), [rec.getMessage() for rec in ours]
        print(f"routes registered again {heal_s:.2f} s after Redis was back; {refused} sends refused")
    finally:
        for s in servers:
            await s.stop()
        own.remove()


async def test_a_read_fanout_group_entry_sent_during_a_redis_outage_reaches_a_device_at_the_heal(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """A group entry has no inbox copy: the heal pushes the group's newest entry as a
    ``group_message`` notice, the SDK sees the hole and pulls what it missed, with no later
    message, no sync of its own and no reconnect."""
    own = RedisServer()
    own.start()
    servers = [
        NodeServer(
            node_settings(
                d, store=postgres_dsn, redis_url=own.url, node_id_lease=True, group_write_fanout_max=2, **TIMINGS
            )
        )
        for d in _data_dirs(tmp_path, 2)
    ]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        n0, n1 = servers
        async with Chat(n0.url) as near, Chat(n1.url) as far, asyncio.timeout(60):
            await near.user("alice")
            bob_user, carol_user = await near.user("bob"), await near.user("carol")
            alice = await near.client("alice", "laptop")  # on n0
            bob = far.inbox(await far.client("bob", "laptop"))  # on n1
            group = await alice.call("group_create", name="big", members=[bob_user.user_id, carol_user.user_id])
            gid = group["group"]["conv_id"]
            assert group["group"]["fanout"] == "read"
            before = await alice.send(conv_id=gid, body={"text": "before"})
            await bob.wait_for(lambda: any(m.msg_id == before.msg_id for m in bob.timeline(gid)))

            own.kill()
            during: list[SendAck] = []
            for i in range(20):  # the lease outlives a short outage: the first sends commit
                try:
                    during.append(await alice.send(conv_id=gid, body={"text": f"during {i}"}))
                except ApiError as exc:
                    assert exc.code == "unavailable"
                if len(during) == 2:
                    break
                await asyncio.sleep(0.1)
            assert during, "no send committed while Redis was down"
            await asyncio.sleep(0.5)  # nothing can carry the notices to n1 now
            assert not any(m.msg_id in {a.msg_id for a in during} for m in bob.timeline(gid))
            bus1 = n1.node.bus
            assert isinstance(bus1, RedisBus)
            heals = bus1.heals
            own.start()
            await until(lambda: bus1.heals > heals, timeout=10)
            wanted = [before.msg_id, *(a.msg_id for a in during)]
            await bob.wait_for(lambda: [m.msg_id for m in bob.timeline(gid)][-len(wanted) :] == wanted, timeout=10)
            assert bus1.group_heads_caught_up >= 1
            assert bob.client.connects == 1 and alice.connects == 1
    finally:
        for s in servers:
            await s.stop()
        own.remove()


def test_sends_refused_while_the_lease_is_unconfirmed_log_one_line_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    ids = LeasedSnowflake(7, valid_until=0.0)  # a lease not confirmed, as while Redis is down
    caplog.set_level(logging.WARNING, logger="yim.bus.redis")
    for _ in range(500):
        with pytest.raises(YimError) as err:
            ids.next_id()
        assert err.value.code == "unavailable"
    lines = [rec.getMessage() for rec in caplog.records if "refusing sends" in rec.getMessage()]
    assert len(lines) == 1 and "node id 7" in lines[0]


async def test_a_push_that_found_no_route_after_a_flush_reaches_the_device_at_the_next_refresh(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Routes can vanish without a restart (FLUSHALL, an eviction): the refresh that puts
    them back also hands the devices their newest event, so the lost push is caught up."""
    own = RedisServer()
    own.start()
    timings = {"node_lease_ttl_s": 3.0, "cluster_route_ttl_s": 3.0}  # a refresh every second
    servers = [
        NodeServer(node_settings(d, store=postgres_dsn, redis_url=own.url, node_id_lease=True, **timings))
        for d in _data_dirs(tmp_path, 2)
    ]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        n0, n1 = servers
        async with Chat(n0.url) as near, Chat(n1.url) as far, asyncio.timeout(60):
            await near.user("alice")
            bob_user = await near.user("bob")
            alice = await near.client("alice", "laptop")
            bob = far.inbox(await far.client("bob", "laptop"))
            first = await alice.send(to=bob_user.user_id, body={"text": "first"})
            await bob.wait_messages(1)
            r = aioredis.Redis.from_url(own.url)
            try:
                await r.flushall()
            finally:
                await r.aclose()
            lost = await alice.send(to=bob_user.user_id, body={"text": "no route"})  # n0 finds no route
            got = await bob.wait_messages(2, timeout=10)
            assert [m.msg_id for m in got] == [first.msg_id, lost.msg_id]
            assert bob.client.connects == 1
    finally:
        for s in servers:
            await s.stop()
        own.remove()
