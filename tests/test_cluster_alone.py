"""Cluster mode with one node: a node alone in the cluster pushes to its own devices without
looking up any route in Redis, and still pushes across as soon as a second node joins —
even though its periodic view of the other nodes (refreshed every third of the route TTL,
a minute here) has not seen the newcomer yet."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from yim.bus.redis import RedisBus
from yim.config import Settings
from yim.node import NodeServer

from .conftest import test_settings as node_settings
from .rawclient import Device, make_users, until
from .services import RedisServer

#: a route TTL long enough that no periodic refresh re-reads the node registry mid-test
TIMINGS = {"node_lease_ttl_s": 1.5, "cluster_route_ttl_s": 180.0}


def _texts(device: Device, conv_id: str) -> list[str]:
    return [
        e["data"]["body"]["text"]
        for e in sorted(device.events, key=lambda e: e["seq"])
        if e["type"] == "message" and e["data"]["conv_id"] == conv_id
    ]


async def test_a_lone_node_skips_route_lookups_and_still_reaches_a_node_that_joins(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.flushall()
    finally:
        await r.aclose()
    secret = secrets.token_bytes(32).hex()
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    for d in dirs:
        d.mkdir()
        (d / "secret.key").write_text(secret)

    def settings(d: Path) -> Settings:
        return node_settings(d, store=postgres_dsn, redis_url=redis_server.url, node_id_lease=True, **TIMINGS)

    first = NodeServer(settings(dirs[0]))
    await first.start()
    second: NodeServer | None = None
    try:
        bus = first.node.bus
        assert isinstance(bus, RedisBus)
        async with aiohttp.ClientSession(first.url) as h0, asyncio.timeout(60):
            a_login, b_login, c_login = await make_users(h0, ["alice", "bob", "carol"])
            alice, bob = Device(h0, a_login), Device(h0, b_login)
            await alice.connect()
            await bob.connect()

            # Alone: pushes are local and no route is looked up.
            ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "alone"}, client_msg_id="a1")
            await until(lambda: _texts(bob, ack["conv_id"]) == ["alone"])
            await until(lambda: bus.lookups_skipped > 0)
            skipped, sent_out = bus.lookups_skipped, bus.remote_out

            # A second node joins and carol connects to it; the first node's periodic view
            # of its peers is still the empty one from its start.
            second = NodeServer(settings(dirs[1]))
            await second.start()
            assert not bus._peers
            async with aiohttp.ClientSession(second.url) as h1:
                carol = Device(h1, c_login)
                await carol.connect()
                ack = await alice.request(
                    "send", to=carol.user_id, kind="text", body={"text": "跨节点"}, client_msg_id="a2"
                )
                # Pushed across (not only found by a later sync): the registry was read anew.
                await until(lambda: _texts(carol, ack["conv_id"]) == ["跨节点"])
                assert bus.remote_out > sent_out
                assert bus.lookups_skipped == skipped
                await carol.close()
            await alice.close()
            await bob.close()
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
