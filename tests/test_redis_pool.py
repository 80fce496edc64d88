"""The Redis client of a node survives a burst: more commands in flight than it has
connections (a reconnect storm authenticating hundreds of devices at once, each writing
its route) queue for a connection instead of failing with "Too many connections"."""

from __future__ import annotations

import asyncio

from yim.bus.redis import REDIS_CONNECTIONS, connect_redis

from .services import RedisServer


async def test_more_commands_in_flight_than_connections_all_succeed(redis_server: RedisServer) -> None:
    r = connect_redis(redis_server.url)
    try:
        n = REDIS_CONNECTIONS * 3
        async with asyncio.timeout(30):
            await asyncio.gather(*(r.hset(f"yim:test:pool:{i}", "d", b"x") for i in range(n)))
            got = await asyncio.gather(*(r.hget(f"yim:test:pool:{i}", "d") for i in range(n)))
            await r.delete(*(f"yim:test:pool:{i}" for i in range(n)))
        assert got == [b"x"] * n
    finally:
        await r.aclose()
