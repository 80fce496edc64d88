"""The token-signing key in cluster mode: nodes with separate data folders (nothing copied
between them) share the key through the PostgreSQL store, so a token issued by one node
is accepted by every other, over HTTP and WebSocket (docs/operations.md, "The signing key")."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from yim.node import NodeServer

from .conftest import test_settings as node_settings
from .rawclient import Device, login, make_users
from .services import RedisServer

# a lease that outlives a late renewal on a loaded machine (see tests/test_cluster.py)
CLUSTER_TIMINGS = {"node_lease_ttl_s": 4.0, "cluster_route_ttl_s": 3.0}


async def _flush(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        await r.flushall()
    finally:
        await r.aclose()


def _node(data: Path, store: str, redis_url: str, **overrides: Any) -> NodeServer:
    return NodeServer(
        node_settings(data, store=store, redis_url=redis_url, node_id_lease=True, **{**CLUSTER_TIMINGS, **overrides})
    )


async def test_a_token_from_one_node_works_on_the_others_without_copying_a_key(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    await _flush(redis_server.url)
    nodes = [_node(tmp_path / f"node{i}", postgres_dsn, redis_server.url) for i in range(3)]
    await asyncio.gather(*(n.start() for n in nodes))  # concurrent first starts agree on one key
    try:
        assert len({n.node.accounts._secret for n in nodes}) == 1
        for i in range(3):  # the key lives in the store, not in a file to keep in step
            assert not (tmp_path / f"node{i}" / "secret.key").exists()
        async with aiohttp.ClientSession(nodes[0].url) as h0, asyncio.timeout(60):
            (alice,) = await make_users(h0, ["alice"])
            for n in nodes[1:]:
                async with aiohttp.ClientSession(n.url) as h:
                    r = await h.get("/api/v1/me", headers={"Authorization": f"Bearer {alice['token']}"})
                    assert r.status == 200, await r.text()
                    device = Device(h, alice)
                    await device.connect()  # WebSocket auth with node 0's token
                    await device.close()
        # A restarted node (and a node added later) reads the same key back.
        await nodes[2].stop()
        nodes[2] = _node(tmp_path / "node2", postgres_dsn, redis_server.url)
        await nodes[2].start()
        assert nodes[2].node.accounts._secret == nodes[0].node.accounts._secret
    finally:
        for n in nodes:
            await n.stop()


async def test_a_copied_key_file_seeds_the_store_and_a_stray_one_is_overruled(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    """Clusters set up by copying ``secret.key`` to every node keep their tokens: the first
    node's file becomes the stored key. A node whose file differs uses the store's key."""
    await _flush(redis_server.url)
    copied = secrets.token_bytes(32)
    first = tmp_path / "first"
    first.mkdir(mode=0o700)
    (first / "secret.key").write_text(copied.hex())
    stray = tmp_path / "stray"
    stray.mkdir(mode=0o700)
    (stray / "secret.key").write_text(secrets.token_bytes(32).hex())
    a = _node(first, postgres_dsn, redis_server.url)
    await a.start()
    b = _node(stray, postgres_dsn, redis_server.url)
    try:
        await b.start()
        assert a.node.accounts._secret == b.node.accounts._secret == copied
        async with aiohttp.ClientSession(a.url) as ha, aiohttp.ClientSession(b.url) as hb, asyncio.timeout(60):
            await make_users(hb, ["bob"])
            bob = await login(hb, "bob", "d2")
            r = await ha.get("/api/v1/me", headers={"Authorization": f"Bearer {bob['token']}"})
            assert r.status == 200, await r.text()
    finally:
        await b.stop()
        await a.stop()
