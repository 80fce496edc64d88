"""Cluster mode with one node: a node alone in the cluster pushes to its own devices without
looking up any route in Redis, and still pushes across as soon as a second node joins —
even though its periodic view of the other nodes (refreshed every third of the route TTL,
a minute here) has not seen the newcomer yet. A push to more users than there are nodes
goes to every live node without a route lookup, a third node that joined since included."""

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
TIMINGS = {"node_lease_ttl_s": 4.0, "cluster_route_ttl_s": 180.0}  # the lease: see tests/test_cluster.py


def _texts(device: Device, conv_id: str) -> list[str]:
    return [
        e["data"]["body"].get("text", "")
        for e in sorted(device.events, key=lambda e: e["seq"])
        if e["type"] == "message" and e["data"]["conv_id"] == conv_id
    ]


async def test_a_lone_node_skips_route_lookups_and_still_reaches_nodes_that_join(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.flushall()
    finally:
        await r.aclose()
    secret = secrets.token_bytes(32).hex()
    dirs = [tmp_path / "node0", tmp_path / "node1", tmp_path / "node2"]
    for d in dirs:
        d.mkdir()
        (d / "secret.key").write_text(secret)

    def settings(d: Path) -> Settings:
        return node_settings(d, store=postgres_dsn, redis_url=redis_server.url, node_id_lease=True, **TIMINGS)

    first = NodeServer(settings(dirs[0]))
    await first.start()
    second: NodeServer | None = None
    third: NodeServer | None = None
    try:
        bus = first.node.bus
        assert isinstance(bus, RedisBus)
        async with aiohttp.ClientSession(first.url) as h0, asyncio.timeout(60):
            a_login, b_login, c_login, d_login, e_login = await make_users(
                h0, ["alice", "bob", "carol", "dave", "erin"]
            )
            alice, bob = Device(h0, a_login), Device(h0, b_login)
            await alice.connect()
            await bob.connect()

            # Alone: pushes are local and no route is looked up. The routed pushes of this phase
            # are the message's event (to alice and bob) and, a presence debounce after they
            # connected, each one's presence notice to their own devices: 4 lookups skipped,
            # all awaited here. A notice still queued when the second node starts would read the
            # registry before its announce and count as skipped after the snapshot below.
            ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "alone"}, client_msg_id="a1")
            await until(lambda: _texts(bob, ack["conv_id"]) == ["alone"])
            await until(lambda: all(any(n["type"] == "presence" for n in d.notices) for d in (alice, bob)))
            await until(lambda: bus.lookups_skipped == 4)
            skipped, sent_out = bus.lookups_skipped, bus.remote_out

            # A second node joins and carol connects to it; the first node's periodic view
            # of its peers is still the empty one from its start. (Set so: its refresh is a
            # minute away, but on a loaded machine a presence change published while the
            # second node started could have read the registry already.)
            second = NodeServer(settings(dirs[1]))
            await second.start()
            bus._set_peers([])
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

                # A third node joins and dave connects to it; the first node still knows
                # only the second. A group of five (more than the nodes) is pushed to every
                # live node without a route lookup — its creation too, which reaches dave
                # although the first node learnt of the third only with that publish.
                third = NodeServer(settings(dirs[2]))
                await third.start()
                bus._set_peers([second.node.bus.node_name])  # type: ignore[attr-defined]
                async with aiohttp.ClientSession(third.url) as h2:
                    dave = Device(h2, d_login)
                    await dave.connect()
                    lookups = bus.route_lookups
                    members = [bob.user_id, carol.user_id, dave.user_id, e_login["user_id"]]
                    g = await alice.request("group_create", name="五个人", members=members)
                    gid = g["group"]["conv_id"]
                    for d in (bob, carol, dave):
                        await until(lambda d=d: any(e["data"].get("conv_id") == gid for e in d.events))
                    await alice.request("send", conv_id=gid, kind="text", body={"text": "大家好"}, client_msg_id="g1")
                    for d in (bob, carol, dave):
                        await until(lambda d=d: "大家好" in _texts(d, gid))
                    assert bus.route_lookups == lookups
                    await dave.close()
                await carol.close()
            await alice.close()
            await bob.close()
    finally:
        if third is not None:
            await third.stop()
        if second is not None:
            await second.stop()
        await first.stop()
