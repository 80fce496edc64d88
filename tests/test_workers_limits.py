"""The limits a node keeps hold for the whole node under ``yim serve --workers 2``: TCP
connections per IP, per-request and upload limits, and the typing limit. Each worker decides
at once from memory and keeps in step with the others through the store process every
``cluster_limits_sync_s`` (yim/gateway/limits.py, yim/bus/workers.py): within one sync
period the workers may together admit more than one would, so the tests let a few sync
periods pass between the steps whose order they check ("settle").

Which worker holds a connection: ``/healthz`` answers the node id of the worker the HTTP
connection reached (``node_id + k``), a WebSocket's worker is found by its socket in /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.rawclient import Device, ProtocolError, login, make_users, until
from tests.services import RedisServer
from tests.test_cluster_state import _cluster
from tests.test_workers_bus import Worker, _attach, _until
from tests.test_workers_serve import WorkersNode, worker_of_connection
from yim.bus.workers_hub import HubState, WorkerHub
from yim.config import Settings
from yim.gateway.limits import ConnectionCounts, TypingLimiter
from yim.ipc.channel import Channel, connect

pytestmark = pytest.mark.slow

SYNC_S = 0.02
#: 25 sync periods: what one worker took, every other worker has heard of after this, even
#: on a busy machine
SETTLE_S = 0.5
CAP = 4  # TCP connections per IP
CLIENT_IP = "127.0.0.2"  # 127.0.0.1 stays exempt from per-IP limits: it makes the accounts
REQUESTS_BURST = 10
UPLOAD_BURST = 2


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersNode]:
    env = {
        "YIM_CLUSTER_LIMITS_SYNC_S": str(SYNC_S),
        "YIM_MAX_CONNECTIONS_PER_IP": str(CAP),
        "YIM_LIMITS_EXEMPT_NETWORKS": "127.0.0.1/32",
        # refills in 100 s: a spent budget stays spent for the test's length, however slow
        "YIM_RATE_REQUESTS_PER_USER_S": "0.01",
        "YIM_RATE_REQUESTS_BURST": str(REQUESTS_BURST),
        "YIM_RATE_UPLOAD_PER_USER_S": "0.01",
        "YIM_RATE_UPLOAD_BURST": str(UPLOAD_BURST),
        "YIM_TYPING_INTERVAL_S": "600",
    }
    n = WorkersNode(tmp_path_factory.mktemp("workers-limits") / "data", env)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest_asyncio.fixture
async def http(node: WorkersNode) -> AsyncIterator[aiohttp.ClientSession]:
    # a new TCP connection for every request and WebSocket: each is hashed to a worker anew
    async with aiohttp.ClientSession(node.url, connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def _devices_on_both_workers(node: WorkersNode, http: aiohttp.ClientSession, name: str) -> list[Device]:
    """Two devices of user ``name``, on two different workers."""
    workers = node.workers()
    found: dict[int, Device] = {}
    for i in range(40):
        d = Device(http, await login(http, name, f"dev{i}"))
        await d.connect()
        assert d.ws is not None
        pid = worker_of_connection(workers, node.port, d.ws.get_extra_info("sockname")[1])
        if pid in found:
            await d.close()
            continue
        found[pid] = d
        if len(found) == 2:
            return list(found.values())
    raise AssertionError("every connection went to one worker")


async def _sessions_on_both_workers(node: WorkersNode, token: str) -> list[aiohttp.ClientSession]:
    """Two HTTP clients, each keeping its one connection, to two different workers."""
    found: dict[int, aiohttp.ClientSession] = {}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(40):
        s = aiohttp.ClientSession(node.url, connector=aiohttp.TCPConnector(limit=1), headers=headers)
        r = await s.get("/healthz")
        worker = (await r.json())["node_id"]
        if worker in found:
            await s.close()
            continue
        found[worker] = s
        if len(found) == 2:
            return list(found.values())
    raise AssertionError("every connection went to one worker")


async def _open(port: int) -> tuple[asyncio.StreamWriter, int] | None:
    """A keep-alive connection from CLIENT_IP, and the node id of the worker answering on
    it; None if the node refused it (closed before answering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(CLIENT_IP, 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return None
    assert head.startswith("HTTP/1.1 200"), head
    size = next(int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length:"))
    return writer, json.loads(await reader.readexactly(size))["node_id"]


# --- with real workers ------------------------------------------------------------------------


async def test_connections_per_ip_stop_at_the_cap_of_the_node(node: WorkersNode) -> None:
    """One address opening connections one after another: the node holds CAP of them, over
    both workers (each worker alone would have admitted CAP); closed ones free their place."""
    held: list[tuple[asyncio.StreamWriter, int]] = []
    refused = 0
    try:
        async with asyncio.timeout(60):
            for _ in range(3):  # a round whose admitted connections all hashed to one worker proves nothing
                while refused < 6:
                    got = await _open(node.port)
                    if got is None:
                        refused += 1
                    else:
                        held.append(got)
                        await asyncio.sleep(SETTLE_S)  # the other worker hears of it
                    assert len(held) <= CAP, [w for _, w in held]
                if len({w for _, w in held}) == 2:
                    break
                for writer, _ in held:
                    writer.close()
                held, refused = [], 0
                await asyncio.sleep(SETTLE_S)
            assert len(held) == CAP and len({w for _, w in held}) == 2, [w for _, w in held]
            # the address's places come back as its connections end, on whichever worker
            for writer, _ in held[:2]:
                writer.close()
            held = held[2:]
            await asyncio.sleep(SETTLE_S)
            for _ in range(2):
                got = await _open(node.port)
                assert got is not None
                held.append(got)
                await asyncio.sleep(SETTLE_S)
            assert await _open(node.port) is None
    finally:
        for writer, _ in held:
            writer.close()


async def test_the_request_limit_refuses_at_the_budget_of_the_node(
    node: WorkersNode, http: aiohttp.ClientSession
) -> None:
    await make_users(http, ["req"])
    a, b = await _devices_on_both_workers(node, http, "req")
    for _ in range(6):
        await a.request("conversations")
    await asyncio.sleep(SETTLE_S)
    accepted = 0
    with pytest.raises(ProtocolError) as refused:
        for _ in range(REQUESTS_BURST + 1):  # a worker of its own budget would accept them all
            await b.request("conversations")
            accepted += 1
    assert refused.value.code == "rate_limited" and accepted == REQUESTS_BURST - 6
    await a.close()
    await b.close()


async def _upload_budget_is_shared(s0: aiohttp.ClientSession, s1: aiohttp.ClientSession, overdraw: int = 0) -> None:
    """The upload burst spent through ``s0``; through ``s1`` ``overdraw`` more are let
    through, then it is refused, as ``s0`` is."""

    async def upload(s: aiohttp.ClientSession) -> int:
        r = await s.post("/api/v1/media?kind=file&name=n.txt", data=b"hello", headers={"Content-Type": "text/plain"})
        assert r.status in (201, 429), await r.text()
        return r.status

    assert [await upload(s0) for _ in range(UPLOAD_BURST)] == [201] * UPLOAD_BURST
    await asyncio.sleep(SETTLE_S)
    assert [await upload(s1) for _ in range(overdraw)] == [201] * overdraw
    await asyncio.sleep(SETTLE_S)
    assert [await upload(s1), await upload(s0)] == [429, 429]


async def test_uploads_are_limited_for_the_node(node: WorkersNode, http: aiohttp.ClientSession) -> None:
    [up] = await make_users(http, ["uploader"])
    s0, s1 = await _sessions_on_both_workers(node, up["token"])
    try:
        await _upload_budget_is_shared(s0, s1)
    finally:
        await s0.close()
        await s1.close()


async def test_uploads_are_limited_across_the_nodes_of_a_cluster(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    """Uploads are rare, so a cluster shares their budget through Redis too (the per-request
    and typing limits stay per node there: yim.gateway.limits.Limits.share), as it shares
    sends: a node hears the shared level when it spends itself, so its first upload of the
    user is let through and leaves the shared bucket in debt, which every node then pays."""
    limits = {"rate_upload_per_user_s": 0.01, "rate_upload_burst": UPLOAD_BURST, "cluster_limits_sync_s": SYNC_S}
    async with (
        _cluster(tmp_path, postgres_dsn, redis_server, **limits) as servers,
        contextlib.AsyncExitStack() as stack,
        asyncio.timeout(60),
    ):
        first = await stack.enter_async_context(aiohttp.ClientSession(servers[0].url))
        [up] = await make_users(first, ["uploader"])
        headers = {"Authorization": f"Bearer {up['token']}"}
        second = await stack.enter_async_context(aiohttp.ClientSession(servers[1].url, headers=headers))
        first.headers.update(headers)
        await _upload_budget_is_shared(first, second, overdraw=1)


async def test_typing_from_two_workers_is_forwarded_once_per_interval(
    node: WorkersNode, http: aiohttp.ClientSession
) -> None:
    [_, peer_login] = await make_users(http, ["typist", "watcher"])
    a, b = await _devices_on_both_workers(node, http, "typist")
    watcher = Device(http, peer_login)
    await watcher.connect()
    sent = await a.request("send", to=peer_login["user_id"], kind="text", body={"text": "hi"}, client_msg_id="t")
    conv_id = sent["conv_id"]
    assert (await a.request("typing", conv_id=conv_id))["forwarded"] is True
    await until(lambda: any(n["type"] == "typing" for n in watcher.notices))
    await asyncio.sleep(SETTLE_S)
    assert (await b.request("typing", conv_id=conv_id))["forwarded"] is False  # the interval is the node's
    assert (await a.request("typing", conv_id=conv_id))["forwarded"] is False
    await asyncio.sleep(SETTLE_S)  # a notice wrongly forwarded through b's worker would be here by now
    assert len([n for n in watcher.notices if n["type"] == "typing"]) == 1
    for d in (a, b, watcher):
        await d.close()


# --- the parts, alone ------------------------------------------------------------------------


async def test_connection_counts_reach_a_late_worker_and_go_with_a_dead_one() -> None:
    """A hub and three workers in this process, on real channels (as tests/test_workers_bus.py):
    a worker that starts late hears the others' counts before it admits anything, and a
    worker that dies takes its counts with it."""
    settings = Settings(max_connections_per_ip=3, cluster_limits_sync_s=SYNC_S, limits_exempt_networks="")
    hub = WorkerHub(settings)
    workers = [Worker(k, settings) for k in range(3)]
    channels: list[Channel] = []

    async def start(w: Worker) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ch = await connect(a, on_call=w.bus.on_call, on_cast=w.bus.on_cast, name=f"worker-{w.k}")
        w.bus.bind(ch)
        w.bus.state.count_connections(w.limits.connections)  # as the node does (yim/node.py)
        channels.extend([ch, await _attach(hub, w.k, b)])
        await w.bus.start()
        # a call answered after what the hub cast at attach, on the one FIFO channel, as the
        # node's store.max_msg_id is before the worker listens (yim/node.py)
        await w.bus.ping()
        await w.bus.state.start(w.resync)

    w0, w1, w2 = workers
    ip = "198.51.100.7"
    try:
        async with asyncio.timeout(30):
            await start(w0)
            await start(w1)
            assert w0.limits.connection_opened(ip) and w0.limits.connection_opened(ip)
            await _until(lambda: w1.limits.connections.others == {ip: 2})
            assert w1.limits.connection_opened(ip)
            assert not w1.limits.connection_opened(ip)  # 2 on worker 0 + 1 here: the cap
            await _until(lambda: w0.limits.connections.others == {ip: 1})
            await start(w2)
            assert w2.limits.connections.others == {ip: 3}  # sent right after its snapshot
            assert not w2.limits.connection_opened(ip)
            channels[0].close()  # worker 0 dies: its connections are gone, its counts too
            await _until(lambda: w1.limits.connections.others == {} and w2.limits.connections.others == {ip: 1})
            assert hub.state.conns == {ip: {1: 1}}
            assert w2.limits.connection_opened(ip) and w1.limits.connection_opened(ip)
            w1.limits.connection_closed(ip)
            w1.limits.connection_closed(ip)
            w2.limits.connection_closed(ip)
            await _until(lambda: hub.state.conns == {} and w2.limits.connections.others == {})
            assert w1.limits.connections_ip == {} and w2.limits.connections_ip == {}  # nothing kept for an idle IP
    finally:
        for w in workers:
            await w.bus.state.stop()
        for ch in channels:
            ch.close()
        await hub.stop()


def test_connection_counts_of_a_worker_add_the_others() -> None:
    counts = ConnectionCounts(cap=3)
    assert counts.opened("198.51.100.1") and counts.changed is None  # one process: nothing recorded
    counts.changed = set()  # shared (WorkerState.count_connections)
    counts.set_others([("198.51.100.1", 1), ("198.51.100.2", 3)])
    assert counts.opened("198.51.100.1")
    assert not counts.opened("198.51.100.1")  # 2 here + 1 elsewhere
    assert not counts.opened("198.51.100.2")  # all 3 elsewhere
    assert counts.changes() == [("198.51.100.1", 2)] and counts.changes() == []
    counts.closed("198.51.100.1")
    counts.closed("198.51.100.1")
    report = counts.changes()
    assert report == [("198.51.100.1", 0)] and counts.mine == {}  # an IP with none is not kept
    counts.unreported(report)  # a report that did not leave goes with the next
    assert counts.changes() == [("198.51.100.1", 0)]
    counts.set_others([("198.51.100.2", 0)])
    assert counts.others == {"198.51.100.1": 1}


def test_hub_sums_each_workers_connections_and_forgets_a_dead_worker() -> None:
    state = HubState({}, 16)
    assert state.count_connections(0, [("a", 2), ("b", 1)]) == ["a", "b"]
    assert state.count_connections(1, [("a", 3)]) == ["a"]
    assert state.count_connections(1, [("a", 3)]) == []  # no change, nobody to tell
    assert state.others_connected(0, ["a", "b"]) == [("a", 3), ("b", 0)]
    assert state.others_connected(1, ["a", "b"]) == [("a", 2), ("b", 1)]
    assert state.count_connections(0, [("b", 0), ("c", 0)]) == ["b"]
    assert state.conns == {"a": {0: 2, 1: 3}}  # IPs with no connection are not kept
    assert state.drop_connections(1) == ["a"]
    assert state.others_connected(0, ["a"]) == [("a", 0)] and state.conns == {"a": {0: 2}}


def test_typing_limiter_is_one_signal_per_interval_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from yim.gateway import limits

    clock = [1000.0]
    monkeypatch.setattr(limits, "_monotonic", lambda: clock[0])
    t = TypingLimiter(4.0)  # steps exact in binary: the arithmetic is checked exactly
    assert t.allow(1, 10) and not t.allow(1, 10) and t.allow(1, 11) and t.allow(2, 10)
    clock[0] += 3.5
    assert not t.allow(1, 10)  # a refused signal costs nothing: the interval runs from the last one let through
    clock[0] += 0.5
    assert t.allow(1, 10) and not t.allow(1, 10)
    assert TypingLimiter(0).allow(1, 10) and TypingLimiter(0).allow(1, 10)  # 0: no limit
    for i in range(limits.TYPING_MAX_KEYS * 2):
        t.allow(i, 1)
    assert len(t.buckets) <= limits.TYPING_MAX_KEYS
