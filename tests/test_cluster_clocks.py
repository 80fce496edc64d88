"""Connect times compared across hosts are wall-clock times (yim/services/clock.py).

Two real nodes on one PostgreSQL and one Redis, in this process, each given the clocks of
its own host: the same wall clock (NTP keeps hosts within milliseconds), but monotonic
clocks that count from each host's boot — the ``early`` node's host booted 30 days before
the ``late`` one's, so its monotonic readings are 30 days larger. The multi-device policy
(over every node's routes) and presence (the newest connection of a device wins, over every
node's fields) must order connections as they happened, not by host uptime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
import redis.asyncio as aioredis

from yim.bus.redis import RedisBus, _Close, _encoder
from yim.node import NodeServer
from yim.protocol.close import CLOSE_POLICY, CLOSE_REPLACED
from yim.services.clock import Clock

from .rawclient import Device, login, make_users, until
from .services import RedisServer
from .test_cluster import CLUSTER_TIMINGS, _data_dirs, _flush
from .test_cluster import node_settings as settings_of

#: how much earlier the early node's host booted: its monotonic clock is this much ahead
BOOT_GAP_S = 30 * 24 * 3600.0


def _booted_earlier() -> float:
    return time.monotonic() + BOOT_GAP_S


class Nodes:
    def __init__(self, early: NodeServer, late: NodeServer, redis: aioredis.Redis) -> None:
        self.early = early
        self.late = late
        self.redis = redis

    @staticmethod
    def name(server: NodeServer) -> str:
        assert isinstance(server.node.bus, RedisBus)
        return server.node.bus.node_name

    async def presence_field(self, user_id: str, device_id: str) -> list[str] | None:
        got = await self.redis.hget(f"yim:p:{{{user_id}}}", device_id)
        return got.decode().split("|") if got is not None else None


@pytest_asyncio.fixture
async def nodes(tmp_path: Path, postgres_dsn: str, redis_server: RedisServer) -> AsyncIterator[Nodes]:
    await _flush(redis_server.url)
    early_dir, late_dir = _data_dirs(tmp_path, 2)
    common = {"store": postgres_dsn, "redis_url": redis_server.url, **CLUSTER_TIMINGS, "max_connections_per_user": 2}
    # The early node writes its presence a second after a change, the late one at once: a
    # device that moves from early to late is written by late while early's field is there.
    early = NodeServer(
        settings_of(early_dir, node_id=1, presence_debounce_s=1.0, **common), clock=Clock(monotonic=_booted_earlier)
    )
    late = NodeServer(settings_of(late_dir, node_id=2, presence_debounce_s=0.05, **common))
    await asyncio.gather(early.start(), late.start())
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        yield Nodes(early, late, r)
    finally:
        await r.aclose()
        await early.stop()
        await late.stop()


def _close_code(device: Device) -> int | None:
    return device.ws.close_code if device.ws is not None else None


async def _alice_on(first_node: aiohttp.ClientSession, second_node: aiohttp.ClientSession) -> tuple[Device, Device]:
    """alice's first device (d1) connected to one node, then her second (d2) to the other."""
    [first_login] = await make_users(first_node, ["alice"], device_id="d1")
    first = Device(first_node, first_login)
    await first.connect()
    second = Device(second_node, await login(second_node, "alice", "d2"))
    await second.connect()
    return first, second


async def _third_closes_the_first(node: aiohttp.ClientSession, first: Device, second: Device) -> None:
    """alice's third device (d3) connects to ``node``: the policy (2 at most) closes her
    first, the second stays."""
    third = Device(node, await login(node, "alice", "d3"))
    await third.connect()
    await until(lambda: first.closed.is_set() or second.closed.is_set())
    assert first.closed.is_set() and _close_code(first) == CLOSE_POLICY
    assert not second.closed.is_set()
    for d in (second, third):
        await d.close()


def _near_now_ms(ms: int) -> bool:
    return abs(ms - time.time() * 1000) < 60_000


async def test_the_policy_closes_the_device_that_connected_first_in_wall_time(nodes: Nodes) -> None:
    """max_connections_per_user = 2: the third device closes the first one, which connected
    on the node whose host booted earlier (larger monotonic times), not the second."""
    async with (
        aiohttp.ClientSession(nodes.early.url) as he,
        aiohttp.ClientSession(nodes.late.url) as hl,
        asyncio.timeout(60),
    ):
        first, second = await _alice_on(he, hl)
        routes = {
            k.decode(): v.decode().split("|")
            for k, v in (await nodes.redis.hgetall(RedisBus.route_key(int(first.user_id)))).items()
        }
        assert routes["d1"][0] == nodes.name(nodes.early) and routes["d2"][0] == nodes.name(nodes.late)
        assert all(_near_now_ms(int(r[2])) for r in routes.values()), routes  # wall-clock ms
        assert int(routes["d1"][2]) <= int(routes["d2"][2])

        await _third_closes_the_first(hl, first, second)


async def test_presence_keeps_the_field_of_the_newest_connection_of_a_device(nodes: Nodes) -> None:
    """A device moves from the early node to the late one: the late node's field (the newer
    connection) replaces the early one's, and stays when the early node drops its own."""
    async with (
        aiohttp.ClientSession(nodes.early.url) as he,
        aiohttp.ClientSession(nodes.late.url) as hl,
        asyncio.timeout(60),
    ):
        [alice_login] = await make_users(he, ["alice"], device_id="d1")
        uid = alice_login["user_id"]
        before = Device(he, alice_login)
        await before.connect()
        early, late = nodes.name(nodes.early), nodes.name(nodes.late)
        deadline = time.monotonic() + 10
        while (field := await nodes.presence_field(uid, "d1")) is None:
            assert time.monotonic() < deadline, "the early node never wrote its presence"
            await asyncio.sleep(0.05)
        assert field[0] == early and _near_now_ms(int(field[3])), field

        after = Device(hl, alice_login)  # the same device reconnects to the other node
        await after.connect()
        deadline = time.monotonic() + 5
        while (field := await nodes.presence_field(uid, "d1")) is None or field[0] != late:
            # before the fix: the late node's write lost to the early field's larger time
            assert time.monotonic() < deadline, f"the newer connection's field never won: {field}"
            await asyncio.sleep(0.05)
        await asyncio.wait_for(before.closed.wait(), 10)
        assert _close_code(before) == CLOSE_REPLACED
        await asyncio.sleep(1.5)  # the early node's debounce ends: it drops its own fields only
        field = await nodes.presence_field(uid, "d1")
        assert field is not None and field[0] == late, field
        (state, _seen) = (await nodes.early.node.presence.view([int(uid)]))[int(uid)]
        assert state == ("online", ("desktop",))
        await after.close()


async def test_a_kick_of_the_previous_release_closes_only_a_connection_made_before_it(nodes: Nodes) -> None:
    """A node of the previous release kicks by (user, device) and its wall clock's time
    (``before_ms``, no serial): a stale kick leaves a newer connection alone."""
    async with aiohttp.ClientSession(nodes.early.url) as he, asyncio.timeout(60):
        sent_ms = int(time.time() * 1000) - 1000
        [alice_login] = await make_users(he, ["alice"], device_id="d1")
        alice = Device(he, alice_login)
        await alice.connect()
        channel = f"yim:n:{{{nodes.name(nodes.early)}}}"
        uid = int(alice.user_id)
        # One message, in order: the stale kick (4002) first, then one sent after the connect (4006).
        stale = _Close(uid, "d1", CLOSE_REPLACED, "stale", sent_ms)
        fresh = _Close(uid, "d1", CLOSE_POLICY, "fresh", int(time.time() * 1000) + 1000)
        await nodes.redis.publish(channel, _encoder.encode([stale, fresh]))
        await asyncio.wait_for(alice.closed.wait(), 10)
        assert _close_code(alice) == CLOSE_POLICY


async def test_the_policy_closes_the_oldest_device_also_when_it_is_on_the_deciding_node(nodes: Nodes) -> None:
    """max_connections_per_user = 2: the first device is on the node the third connects to,
    where the gateway's own policy counts only two devices: the bus closes it all the same."""
    async with (
        aiohttp.ClientSession(nodes.early.url) as he,
        aiohttp.ClientSession(nodes.late.url) as hl,
        asyncio.timeout(60),
    ):
        first, second = await _alice_on(hl, he)
        await _third_closes_the_first(hl, first, second)
