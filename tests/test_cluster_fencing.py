"""Cluster mode: a node that can no longer vouch for its node id fences itself. It answers
503 on /healthz and /readyz, closes its connections with 1001 (clients move to another
node and lose nothing), refuses new connections and logins, then leases a fresh node id
and serves again — or, when no id can be had, stops for good (the process exits 3)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from yim.bus.redis import RedisBus
from yim.ids.snowflake import MAX_NODE, node_of
from yim.node import NodeServer
from yim.protocol.frames import SendAck

from .conftest import MakeServer, ServerProcess
from .conftest import test_settings as node_settings
from .rawclient import Device, login, make_users
from .sdk_helpers import Chat, history_of, poll
from .services import RedisServer
from .test_cluster import _data_dirs, _flush

#: a lease whose fenced spell (at least a third of it, 1.2 s) is long enough to be observed
#: from outside, and whose lapse (the third test waits for one) is short
TIMINGS = {"node_lease_ttl_s": 3.0, "cluster_route_ttl_s": 3.0}


async def _status(http: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, object]]:
    async with http.get(path) as r:
        return r.status, await r.json()


async def test_a_node_whose_lease_is_taken_fences_itself_then_serves_with_a_fresh_id(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    await _flush(redis_server.url)
    servers = [
        NodeServer(node_settings(d, store=postgres_dsn, redis_url=redis_server.url, node_id_lease=True, **TIMINGS))
        for d in _data_dirs(tmp_path, 3)
    ]
    await asyncio.gather(*(s.start() for s in servers))
    n0, n1, n2 = servers
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        async with (
            aiohttp.ClientSession(n0.url) as h0,
            Chat([n0.url, n1.url]) as chat,
            Chat(n2.url) as far,
            asyncio.timeout(90),
        ):
            assert (await _status(h0, "/healthz"))[0] == 200
            status, ready = await _status(h0, "/readyz")
            assert status == 200 and ready["status"] == "ready" and ready["problems"] == {}
            await chat.user("bob")
            alice_user = await chat.user("alice")
            bob = chat.inbox(await chat.client("bob", "laptop"))  # on n0, fails over to n1
            assert bob.client.endpoint.http == n0.url
            alice = await far.client("alice", "laptop")  # on n2
            acks: list[SendAck] = []
            for i in range(5):
                acks.append(await alice.send(to=bob.client.user_id, body={"text": f"before {i}"}))
            await bob.wait_messages(5)

            # Another node now holds n0's node id (as after a pause longer than the lease).
            bus0 = n0.node.bus
            assert isinstance(bus0, RedisBus) and bus0.lease_id is not None
            old_id = bus0.lease_id
            await r.set(f"yim:nodeid:{{{old_id}}}", "another-node", px=60_000)

            async def fenced() -> bool:
                return (await _status(h0, "/healthz"))[0] == 503

            await poll(fenced, timeout=10)
            status, health = await _status(h0, "/healthz")
            assert health["status"] == "fenced" and "leased by another node" in str(health["reason"])
            status, ready = await _status(h0, "/readyz")
            assert status == 503 and "fenced" in str(ready["problems"])
            async with h0.get("/metrics") as resp:
                assert "yim_fenced 1.0" in await resp.text()
            # New connections and logins are refused with a clear error while fenced.
            async with h0.post(
                "/api/v1/sessions",
                json={"username": "alice", "password": "password123", "device_id": "x", "platform": "web"},
            ) as resp:
                assert resp.status == 503 and (await resp.json())["code"] == "unavailable"
            async with h0.get("/ws") as resp:
                assert resp.status == 503 and (await resp.json())["code"] == "unavailable"

            # bob's client was closed with 1001 and went to n1; nothing is lost meanwhile.
            async def moved() -> bool:
                return bob.client.connects >= 2 and bob.client.connected

            await poll(moved, timeout=20)
            assert bob.client.last_close[0] == 1001
            assert bob.client.endpoint.http == n1.url
            for i in range(5):
                acks.append(await alice.send(to=bob.client.user_id, body={"text": f"after {i}"}))
            got = await bob.wait_messages(10)
            assert [m.msg_id for m in got] == [a.msg_id for a in acks]  # each once, in order

            # n0 leases a fresh node id and serves again.
            async def ready() -> bool:
                return (await _status(h0, "/readyz"))[0] == 200

            await poll(ready, timeout=30)
            assert (await _status(h0, "/healthz"))[0] == 200
            async with h0.get("/metrics") as resp:
                scraped = await resp.text()
            assert "yim_fenced 0.0" in scraped and "yim_fences_total 1.0" in scraped
            new_id = n0.node.ids.node_id
            ids = [s.node.ids.node_id for s in servers]
            assert new_id != old_id and len(set(ids)) == 3
            assert await r.get(f"yim:nodeid:{{{new_id}}}") == bus0.node_name.encode()
            async with aiohttp.ClientSession(n0.url) as h:
                carol_login = (await make_users(h, ["carol"]))[0]
                carol = Device(h, carol_login)
                await carol.connect()
                ack = await carol.request(
                    "send", to=alice_user.user_id, kind="text", body={"text": "hi"}, client_msg_id="c1"
                )
                assert node_of(int(ack["msg_id"])) == new_id
                await carol.close()
            history = await history_of(alice, acks[0].conv_id)
            assert [m.msg_id for m in history] == [a.msg_id for a in acks]
            assert len({m.msg_id for m in history}) == len(history)
    finally:
        await r.aclose()
        for s in servers:
            await s.stop()


async def test_a_fenced_node_that_cannot_lease_a_fresh_id_exits_with_code_3(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    await _flush(redis_server.url)
    [folder] = _data_dirs(tmp_path, 1)
    env = {
        "YIM_STORE": postgres_dsn,
        "YIM_REDIS_URL": redis_server.url,
        "YIM_NODE_ID_LEASE": "true",
        "YIM_NODE_LEASE_TTL_S": "1.5",
    }
    proc = ServerProcess(folder, **env)
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await asyncio.to_thread(proc.start)
        async with aiohttp.ClientSession(proc.url) as http, asyncio.timeout(60):
            await login_ok(http)
            # Every node id is taken by someone else, this node's own included.
            taken = secrets.token_hex(4)
            async with r.pipeline(transaction=False) as pipe:
                for n in range(MAX_NODE + 1):
                    pipe.set(f"yim:nodeid:{{{n}}}", f"other-{taken}", px=60_000)
                await pipe.execute()
            assert proc.proc is not None
            code = await asyncio.to_thread(proc.proc.wait, 30)
        assert code == 3
        out = proc.log_path.read_text()
        assert out.count("fenced: node id") == 1
        assert "exiting: fenced and cannot lease a fresh node id" in out
        assert "Traceback" not in out
    finally:
        await r.aclose()
        proc.stop()


async def login_ok(http: aiohttp.ClientSession) -> None:
    await make_users(http, ["dave"])
    await login(http, "dave", "phone", "android")


async def test_a_node_that_cannot_renew_before_its_lease_expires_fences_until_redis_is_back(
    tmp_path: Path, postgres_dsn: str
) -> None:
    own = RedisServer()  # its own Redis: this test stops it
    own.start()
    [folder] = _data_dirs(tmp_path, 1)
    server = NodeServer(node_settings(folder, store=postgres_dsn, redis_url=own.url, node_id_lease=True, **TIMINGS))
    try:
        await server.start()
        async with aiohttp.ClientSession(server.url) as http, asyncio.timeout(60):
            device = Device(http, (await make_users(http, ["erin"]))[0])
            await device.connect()
            own.kill()

            async def fenced() -> bool:
                return (await _status(http, "/healthz"))[0] == 503

            await poll(fenced, timeout=15)
            status, health = await _status(http, "/healthz")
            assert "lease expired before it could be renewed" in str(health["reason"])
            status, ready = await _status(http, "/readyz")
            problems = ready["problems"]
            assert status == 503 and isinstance(problems, dict) and set(problems) == {"node", "redis"}
            await asyncio.wait_for(device.closed.wait(), 10)
            assert device.ws is not None and device.ws.close_code == 1001

            own.start()  # back, empty

            async def ready_again() -> bool:
                return (await _status(http, "/readyz"))[0] == 200

            await poll(ready_again, timeout=20)
            bus = server.node.bus
            assert isinstance(bus, RedisBus) and bus.lease_id == server.node.ids.node_id
            assert node_of(server.node.ids.next_id()) == bus.lease_id
            device = Device(http, await login(http, "erin", "d2"))
            await device.connect()  # serves again
            await device.close()
    finally:
        await server.stop()
        own.remove()


async def test_readyz_on_one_node_without_redis(make_server: MakeServer) -> None:
    server = await make_server()
    async with aiohttp.ClientSession(server.url) as http:
        status, ready = await _status(http, "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["problems"] == {}
