"""Hostile clients over real sockets: malformed and oversized frames, a connection that
floods thousands of frames per second (others stay responsive, memory stays bounded),
half-open connections, and slowloris HTTP clients (closed on a deadline, capped per IP)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

import aiohttp
import msgspec
import psutil
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, login, make_users
from tests.report import record

# --- helpers ------------------------------------------------------------------------------


async def _reply(ws: aiohttp.ClientWebSocketResponse, *, binary: bool = False) -> dict[str, Any]:
    """The next ok/err frame (pushed events and notices are skipped)."""
    while True:
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        frame = msgspec.msgpack.decode(msg.data) if binary else msgspec.json.decode(msg.data)
        if frame["t"] in ("ok", "err"):
            return frame


async def _authed_ws(http: aiohttp.ClientSession, token: str, fmt: str = "json") -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"/ws?format={fmt}")
    auth = {"op": "auth", "rid": 0, "token": token}
    if fmt == "json":
        await ws.send_json(auth)
    else:
        await ws.send_bytes(msgspec.msgpack.encode(auth))
    assert (await _reply(ws, binary=fmt == "msgpack"))["t"] == "ok"
    return ws


async def _closed_within(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closes the socket (reads and discards anything it sends)."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            try:
                if not await reader.read(65536):
                    break
            except ConnectionResetError:
                break
    return time.monotonic() - start


# --- frames -------------------------------------------------------------------------------


@pytest.mark.backends("sqlite")  # the gateway, not the store
async def test_malformed_and_oversized_frames_get_errors_and_the_connection_lives(make_server: MakeServer) -> None:
    server = await make_server(max_frame_bytes=4096, hard_frame_bytes=65536)
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        alice, bob = await make_users(http, ["alice", "bob"])
        ws = await _authed_ws(http, alice["token"])
        send = {"op": "send", "to": bob["user_id"], "kind": "text", "client_msg_id": "c"}
        cases: list[tuple[str, Any, str]] = [
            ("x" * 5000, None, "frame_too_large"),
            ('{"op":"ping","rid":7,"pad":"' + "x" * 5000 + '"}', 7, "frame_too_large"),
            ('{"op":"send","rid":8,"body":' + "[" * 1500 + "]" * 1500 + "}", None, "bad_frame"),
            ('{"op":"ping","rid":123456789012345678901234567890}', None, "bad_request"),
            (
                msgspec.json.encode({**send, "rid": 9, "body": {"text": "hi"}, "sender_id": "1"}).decode(),
                9,
                "bad_request",
            ),
            (msgspec.json.encode({**send, "rid": 10, "body": {"text": "a\x00b"}}).decode(), 10, "invalid_body"),
            (msgspec.json.encode({**send, "rid": 11, "kind": "system", "body": {}}).decode(), 11, "invalid_kind"),
            ("[]", None, "bad_request"),
            ("null", None, "bad_request"),
            ('{"op":"auth","rid":12,"token":"x"}', 12, "already_authenticated"),
        ]
        for frame, rid, code in cases:
            await ws.send_str(frame)
            reply = await _reply(ws)
            assert (reply["t"], reply["rid"], reply["code"]) == ("err", rid, code), (frame[:60], reply)
        await ws.send_json({"op": "ping", "rid": "alive"})
        assert (await _reply(ws))["rid"] == "alive"

        # MessagePack connection: invalid UTF-8 strings, ext types, and a JSON text frame
        # whose int rid must be echoed in MessagePack (int64 bound)
        mp = await _authed_ws(http, (await login(http, "alice", "d2"))["token"], "msgpack")
        await mp.send_bytes(b"\x82\xa2op\xa4ping\xa3rid\xa2\x80\x81")
        assert (await _reply(mp, binary=True))["code"] == "bad_frame"
        bad_body = {**send, "rid": 3, "body": msgspec.msgpack.Ext(1, b"x")}
        await mp.send_bytes(msgspec.msgpack.encode(bad_body))
        assert (await _reply(mp, binary=True))["code"] == "invalid_body"
        await mp.send_str('{"op":"ping","rid":9223372036854775807}')
        assert (await _reply(mp, binary=True))["rid"] == 2**63 - 1
        await mp.send_bytes(msgspec.msgpack.encode({"op": "ping", "rid": 4}))
        assert (await _reply(mp, binary=True))["t"] == "ok"

        # invalid UTF-8 in a text frame is a protocol violation: that connection closes
        # (1007), nobody else notices
        bad = await _authed_ws(http, (await login(http, "alice", "d3"))["token"])
        await bad.send_frame(b'{"op":"ping","rid":"\xff"}', aiohttp.WSMsgType.TEXT)
        msg = await bad.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert bad.close_code == 1007
        # above the hard limit: close 1009
        await ws.send_str("x" * 70_000)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1009
        await mp.send_bytes(msgspec.msgpack.encode({"op": "ping", "rid": 5}))
        assert (await _reply(mp, binary=True))["t"] == "ok"
        await mp.close()

        # HTTP: a body above the hard limit, a body that is not UTF-8, one nested too deep
        r = await http.post(
            "/api/v1/messages", data=b"x" * 70_000, headers={"Authorization": f"Bearer {alice['token']}"}
        )
        assert r.status == 413 and (await r.json())["code"] == "frame_too_large"
        bad_login = b'{"username":"\x80\x81","password":"x","device_id":"d","platform":"web"}'
        r = await http.post("/api/v1/sessions", data=bad_login, headers={"Content-Type": "application/json"})
        assert r.status == 400 and (await r.json())["code"] == "bad_frame"
        text = b'{"kind":"text","client_msg_id":"u","to":"%s","body":{"text":"\xff"}}' % bob["user_id"].encode()
        r = await http.post("/api/v1/messages", data=text, headers={"Authorization": f"Bearer {alice['token']}"})
        assert r.status == 400 and (await r.json())["code"] == "invalid_body"
        deep = b'{"seq":' + b"[" * 5000 + b"]" * 5000 + b"}"
        r = await http.post(
            "/api/v1/conversations/1/read", data=deep, headers={"Authorization": f"Bearer {alice['token']}"}
        )
        assert r.status == 400 and (await r.json())["code"] == "bad_frame"
        r = await http.get("/api/v1/users?username=a&username=b", headers={"Authorization": f"Bearer {alice['token']}"})
        assert r.status == 400
        r = await http.get("/api/v1/search?q=a%00b", headers={"Authorization": f"Bearer {alice['token']}"})
        assert r.status == 400 and (await r.json())["code"] == "bad_request"  # was a 500 (FTS5 syntax)
        r = await http.put("/api/v1/me")
        assert r.status == 405 and "GET" in r.headers["Allow"] and (await r.json())["code"] == "method_not_allowed"


# --- flood ----------------------------------------------------------------------------------

FLOOD_S = 3.0


def _flood_frame(i: int, to: str) -> str:
    """Pings, junk and sends, interleaved."""
    kind = i % 3
    if kind == 0:
        return f'{{"op":"ping","rid":{i}}}'
    if kind == 1:
        return "{not json"
    body = {"op": "send", "rid": i, "to": to, "kind": "text", "client_msg_id": f"f{i}", "body": {"text": f"flood {i}"}}
    return msgspec.json.encode(body).decode()


async def test_a_flooding_connection_leaves_others_responsive_and_memory_bounded(server_process: Any) -> None:
    """One connection sends frames as fast as it can for a few seconds (pings, junk, sends)
    and reads its replies; another user's pings keep being answered and the send limit
    answers ``rate_limited``. Then a connection floods *without* reading: it is cut off
    (4008) once its replies fill its send buffer, and aborted if it does not read the close
    either. The server's RSS grows by a bounded amount."""
    proc = server_process()
    await asyncio.to_thread(proc.start)
    assert proc.proc is not None
    server = psutil.Process(proc.proc.pid)
    async with asyncio.timeout(120), aiohttp.ClientSession(proc.url) as http:
        flooder_login, victim_login, peer_login = await make_users(http, ["flooder", "victim", "peer"])
        victim, peer = Device(http, victim_login), Device(http, peer_login)
        await victim.connect()
        await peer.connect()
        for _ in range(50):  # warm up the code paths before the baseline
            await victim.request("ping")
        rss_before = server.memory_info().rss

        rtts: list[float] = []
        stop = asyncio.Event()

        async def measure() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.wait_for(victim.request("ping"), timeout=5.0)  # "answered within 5 s"
                rtts.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)

        meter = asyncio.get_running_loop().create_task(measure())

        # 1. a flooder that reads its replies
        flood = await _authed_ws(http, flooder_login["token"])
        codes: dict[str, int] = {}
        replies = 0

        async def drain() -> None:
            nonlocal replies
            async for msg in flood:
                frame = msgspec.json.decode(msg.data)
                if frame["t"] in ("ok", "err"):
                    replies += 1
                    code = frame.get("code", frame["t"])
                    codes[code] = codes.get(code, 0) + 1

        reader = asyncio.get_running_loop().create_task(drain())
        sent = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + FLOOD_S
        while sent < 500_000 and time.monotonic() < deadline:
            for _ in range(300):
                await flood.send_str(_flood_frame(sent, peer.user_id))
                sent += 1
            await asyncio.sleep(0)  # let the meter and the reader run in this process too
        elapsed = time.perf_counter() - t0
        async with asyncio.timeout(60):
            while replies < sent:
                await asyncio.sleep(0.05)
        await flood.close()
        await reader

        # 2. a flooder that never reads
        mute = await _authed_ws(http, (await login(http, "flooder", "d2"))["token"])
        mute_sent = 0
        t1 = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while mute_sent < 1_000_000 and time.monotonic() - t1 < 30:
                for _ in range(300):
                    await mute.send_str(f'{{"op":"ping","rid":{mute_sent},"pad":"{"x" * 200}"}}')
                    mute_sent += 1
                await asyncio.sleep(0)
        cut_after = time.monotonic() - t1
        stop.set()
        await meter
        mute_code = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                while (await mute.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    pass
            mute_code = mute.close_code
        mute._response.close()  # the server already aborted it; do not wait for a handshake
        rss_after = server.memory_info().rss
        await victim.close()
        await peer.close()
    rate = sent / elapsed
    growth_mb = (rss_after - rss_before) / 2**20
    assert rate > 1000, (sent, rate)
    assert codes.get("rate_limited", 0) > 0  # the send bucket (burst 5000) ran dry
    assert replies == sent  # every frame answered, none lost
    assert cut_after < 30  # the mute flooder was cut off, not served forever
    assert len(rtts) >= 10 and max(rtts) < 5.0
    assert growth_mb < 150, growth_mb
    p50 = statistics.median(rtts) * 1000
    record(
        f"flood: {sent} frames from one connection in {elapsed:.1f} s ({rate:,.0f}/s), all answered: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(codes.items()))}; a non-reading flooder cut off after "
        f"{mute_sent} frames in {cut_after:.1f} s (close code {mute_code}); another user's ping p50 {p50:.1f} ms, "
        f"max {max(rtts) * 1000:.0f} ms over {len(rtts)} pings; server RSS {rss_before / 2**20:.0f} -> "
        f"{rss_after / 2**20:.0f} MB"
    )


# --- half-open connections and slowloris ------------------------------------------------------


@pytest.mark.backends("sqlite")  # the gateway, not the store
async def test_half_open_connections_are_closed_on_deadlines(make_server: MakeServer) -> None:
    server = await make_server(auth_timeout_s=0.5, http_idle_timeout_s=1.0)
    host, port = "127.0.0.1", server.port
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        # a WebSocket that never authenticates: 4005 after auth_timeout_s
        t0 = time.monotonic()
        ws = await http.ws_connect("/ws")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4005
        assert time.monotonic() - t0 < 3

        # TCP connected, nothing sent; and an upgrade request never finished
        # each timed from its own open (the second open may wait on a loaded machine)
        loop = asyncio.get_running_loop()
        idle_r, idle_w = await asyncio.open_connection(host, port)
        idle_closed = loop.create_task(_closed_within(idle_r, 5))
        part_r, part_w = await asyncio.open_connection(host, port)
        part_closed = loop.create_task(_closed_within(part_r, 5))
        part_w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        waits = await asyncio.gather(idle_closed, part_closed)
        assert all(0.5 < w < 3 for w in waits), waits
        idle_w.close()
        part_w.close()

        # a finished HTTP request on a keep-alive connection: idle after the response
        r = await http.get("/healthz")
        assert r.status == 200


@pytest.mark.backends("sqlite")  # the gateway, not the store
async def test_slowloris_sockets_are_closed_and_capped_per_ip(make_server: MakeServer) -> None:
    server = await make_server(http_idle_timeout_s=1.0, max_connections_per_ip=10, limits_exempt_networks="")
    port = server.port
    attacker = ("127.0.0.2", 0)  # loopback has the whole 127/8: the attacker has its own address

    async def trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
        for byte in header:
            if stop.is_set() or writer.is_closing():
                return
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.05)

    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        # each socket's close timed from its own open: opening 25 one after another can take
        # a while on a loaded machine, and timed from the last open the first admitted ones
        # would seem closed "at once"
        watches: list[asyncio.Task[float]] = []
        for _ in range(25):
            conns.append(await asyncio.open_connection("127.0.0.1", port, local_addr=attacker))
            watches.append(loop.create_task(_closed_within(conns[-1][0], 5)))
        stop = asyncio.Event()
        trickles = [loop.create_task(trickle(w, stop)) for _, w in conns]
        # beyond the cap of 10: closed at once; the 10 admitted: closed after 1 s despite trickling
        closes = await asyncio.gather(*watches)
        refused = sum(1 for c in closes if c < 0.5)
        assert refused == 15, closes
        assert all(c < 3 for c in closes), closes
        # meanwhile everyone else is served
        r = await http.get("/healthz")
        assert r.status == 200
        stop.set()
        for task in trickles:
            await task
        for _, w in conns:
            w.close()
        elapsed = time.monotonic() - t0
        # the attacker's address is usable again once its sockets are gone
        await asyncio.sleep(0.1)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port, local_addr=attacker)
        w2.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await r2.read(12)).startswith(b"HTTP/1.1 200")
        w2.close()
    assert server.node.limits.connections_ip.get("127.0.0.2", 0) <= 1
    record(
        f"slowloris: 25 trickling sockets from one IP: 15 refused at the per-IP cap, 10 closed by the "
        f"1 s request deadline, all gone in {elapsed:.1f} s; other clients served throughout"
    )
