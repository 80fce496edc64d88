"""Rate limits and abuse: token buckets on sends and requests (per user, per IP), login
lockout with exponential back-off (per username, per IP), registrations per IP. Errors are
``rate_limited`` with ``retry_after`` (HTTP 429 + Retry-After). Tests configure low limits;
the defaults are far above what a person's client does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, login, make_users
from tests.report import record
from yim.gateway import limits
from yim.gateway.limits import Backoff, TokenBuckets

PASSWORD = "password123"
# Limits live in the gateway's memory, whatever the store: one backend is enough.
pytestmark = pytest.mark.backends("sqlite")


def _session(url: str, source: str | None = None) -> aiohttp.ClientSession:
    """A client whose connections come from ``source`` (any 127/8 address is local)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0)) if source else None
    return aiohttp.ClientSession(url, connector=connector)


async def _login(http: aiohttp.ClientSession, username: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
    body = {"username": username, "password": password, "device_id": "d1", "platform": "web"}
    return await http.post("/api/v1/sessions", json=body)


# --- the building blocks ------------------------------------------------------------------


def test_token_bucket_and_backoff_arithmetic_and_bounded_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # The limits' clock, moved by the test: the arithmetic is checked exactly. On the real
    # clock, a pause of this process between two steps (a busy machine) refilled tokens and
    # shortened locks under the bounds checked.
    clock = [1000.0]
    monkeypatch.setattr(limits, "_monotonic", lambda: clock[0])
    b = TokenBuckets(rate=8.0, burst=3, max_keys=100)  # steps of 1/16 s: exact in binary
    assert [b.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k") == 0.125  # one token at 8/s
    clock[0] += 0.0625
    assert b.take("k") == 0.0625  # half a token came meanwhile
    clock[0] += 0.0625
    assert b.take("k") == 0.0
    assert b.take("k", now=clock[0] + 0.125) == 0.0  # a time the caller read for several buckets
    assert TokenBuckets(rate=0, burst=1).take("x") == 0.0  # rate 0: off
    for i in range(10_000):  # a key churn attack keeps the table bounded
        b.take(i)
    assert len(b) <= 100

    bo = Backoff(free=2, base_s=0.05, max_s=0.2, window_s=60, max_keys=100)
    bo.failed("u")
    bo.failed("u")
    assert bo.locked_for("u") == 0.0  # free failures
    bo.failed("u")
    assert bo.locked_for("u") == pytest.approx(0.05)
    clock[0] += 0.02
    assert bo.locked_for("u") == pytest.approx(0.03)
    bo.failed("u")
    assert bo.locked_for("u") == pytest.approx(0.1)  # doubled
    for _ in range(50):
        bo.failed("u")
    assert bo.locked_for("u") == pytest.approx(0.2)  # capped
    bo.succeeded("u")
    assert bo.locked_for("u") == 0.0
    clock[0] += 61
    bo.failed("v")
    bo.failed("v")
    bo.failed("v")
    clock[0] += 61
    assert bo.locked_for("v") == 0.0  # forgotten a window after the last failure
    for i in range(10_000):
        bo.failed(i)
    assert len(bo) <= 100


def test_a_send_check_costs_a_few_hundred_nanoseconds() -> None:
    """The send hot path pays one check per message: two bucket lookups (user, IP)."""
    from yim.config import Settings
    from yim.gateway.limits import Limits

    limits = Limits(Settings(rate_send_per_user_s=1e9, rate_send_burst=10**9, rate_send_per_ip_s=1e9))
    check = limits.check_send
    n, runs = 50_000, []
    for _ in range(5):  # best of 5: the machine may be busy with other work
        t0 = time.perf_counter()
        for i in range(n):
            check(i & 1023, "203.0.113.7")
        runs.append((time.perf_counter() - t0) / n * 1e9)
    per_check = min(runs)
    assert per_check < 5_000  # generous: ~500 ns on a slow 2-core VM
    record(f"rate limit check on the send path (user + IP bucket): {per_check:.0f} ns per message")


# --- sends and requests ---------------------------------------------------------------------------


async def test_sends_are_limited_per_user_with_retry_after(make_server: MakeServer) -> None:
    server = await make_server(rate_send_per_user_s=5.0, rate_send_burst=10)
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        a_l, b_l, c_l = await make_users(http, ["alice", "bob", "carol"])
        alice, carol = Device(http, a_l), Device(http, c_l)
        await alice.connect()
        await carol.connect()

        async def send(d: Device, i: int) -> str:
            try:
                await d.request("send", to=b_l["user_id"], kind="text", body={"text": str(i)}, client_msg_id=f"{i}")
            except ProtocolError as exc:
                return exc.code
            return "ok"

        results = [await send(alice, i) for i in range(12)]
        assert results == ["ok"] * 10 + ["rate_limited"] * 2
        # the err frame carries retry_after (another device of alice: the bucket is per user)
        ws = await http.ws_connect("/ws")
        await ws.send_json({"op": "auth", "rid": 0, "token": (await login(http, "alice", "d2"))["token"]})
        assert (await ws.receive_json(timeout=5))["t"] == "ok"
        send_r = {"op": "send", "rid": "r", "to": b_l["user_id"], "kind": "text", "body": {"text": "x"}}
        await ws.send_json({**send_r, "client_msg_id": "r"})
        frame = await ws.receive_json(timeout=5)
        assert frame["rid"] == "r" and frame["code"] == "rate_limited" and 0 < frame["retry_after"] <= 0.2
        await ws.close()
        await asyncio.sleep(frame["retry_after"] + 0.05)
        assert await send(alice, 100) == "ok"
        # another user is not affected; pings and acks are never limited
        assert await send(carol, 200) == "ok"
        for _ in range(20):
            await alice.request("ping")
        # HTTP shares the same per-user bucket: 429 with Retry-After
        headers = {"Authorization": f"Bearer {a_l['token']}"}
        body = {"to": b_l["user_id"], "kind": "text", "body": {"text": "h"}}
        statuses = [
            (await http.post("/api/v1/messages", json={**body, "client_msg_id": f"h{i}"}, headers=headers))
            for i in range(3)
        ]
        limited = [r for r in statuses if r.status == 429]
        assert limited, [r.status for r in statuses]
        err = await limited[0].json()
        assert err["code"] == "rate_limited" and err["retry_after"] > 0
        assert int(limited[0].headers["Retry-After"]) >= 1
        await alice.close()
        await carol.close()


async def test_sends_are_limited_per_ip_across_users(make_server: MakeServer) -> None:
    server = await make_server(rate_send_per_ip_s=1.0, rate_send_ip_burst=4, limits_exempt_networks="")
    async with asyncio.timeout(30), _session(server.url, "127.0.0.2") as http:
        logins = await make_users(http, ["ann", "ben", "cat"])
        ann, ben = Device(http, logins[0]), Device(http, logins[1])
        await ann.connect()
        await ben.connect()
        codes = []
        for i in range(6):
            d = ann if i % 2 else ben
            try:
                await d.request("send", to=logins[2]["user_id"], kind="text", body={"text": "x"}, client_msg_id=f"{i}")
                codes.append("ok")
            except ProtocolError as exc:
                codes.append(exc.code)
        assert codes == ["ok"] * 4 + ["rate_limited"] * 2
        # another address has its own bucket
        async with _session(server.url, "127.0.0.3") as other:
            cat = Device(other, logins[2])
            await cat.connect()
            await cat.request("send", to=logins[0]["user_id"], kind="text", body={"text": "y"}, client_msg_id="c")
            await cat.close()
        await ann.close()
        await ben.close()


async def test_other_requests_are_limited_per_user(make_server: MakeServer) -> None:
    server = await make_server(rate_requests_per_user_s=1.0, rate_requests_burst=5)
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        (a_l,) = await make_users(http, ["alice"])
        alice = Device(http, a_l)
        await alice.connect()
        codes = []
        for _ in range(7):
            try:
                await alice.request("conversations")
                codes.append("ok")
            except ProtocolError as exc:
                codes.append(exc.code)
        assert codes == ["ok"] * 5 + ["rate_limited"] * 2
        r = await http.get("/api/v1/sync", headers={"Authorization": f"Bearer {a_l['token']}"})
        assert r.status == 429 and "Retry-After" in r.headers  # the same bucket over HTTP
        await alice.request("ping")
        await alice.request("ack", seq=0)
        await alice.close()


# --- logins and registrations ------------------------------------------------------------------------


async def test_login_lockout_backs_off_exponentially_per_username(make_server: MakeServer) -> None:
    server = await make_server(login_free_failures=3, login_backoff_base_s=0.4, login_backoff_max_s=5)
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        await make_users(http, ["alice", "bob"])
        for username in ("alice", "ghost"):  # an unknown name behaves the same: no enumeration
            statuses = [(await _login(http, username, "wrong-password")).status for _ in range(4)]
            assert statuses == [401, 401, 401, 401], username
            r = await _login(http, username, PASSWORD)  # locked: not even the right password is checked
            assert r.status == 429, username
            body: dict[str, Any] = await r.json()
            assert body["code"] == "rate_limited" and 0 < body["retry_after"] <= 0.4
            assert r.headers["Retry-After"] == "1"
        # other users log in fine meanwhile
        assert (await _login(http, "bob")).status == 201
        # the next failure doubles the lock
        await asyncio.sleep(0.45)
        assert (await _login(http, "alice", "wrong-again")).status == 401
        r = await _login(http, "alice")
        assert r.status == 429 and 0.4 < (await r.json())["retry_after"] <= 0.8
        await asyncio.sleep(0.85)
        assert (await _login(http, "alice")).status == 201  # and a success clears the slate
        assert (await _login(http, "alice", "wrong")).status == 401
        assert (await _login(http, "alice")).status == 201


async def test_login_lockout_per_ip_across_usernames(make_server: MakeServer) -> None:
    server = await make_server(
        login_ip_free_failures=5, login_backoff_base_s=2.0, login_free_failures=100, limits_exempt_networks=""
    )
    async with asyncio.timeout(30), _session(server.url, "127.0.0.2") as attacker:
        await make_users(attacker, ["alice", "bob"])
        for i in range(6):  # one guess per username: only the per-IP count sees the pattern
            assert (await _login(attacker, f"user{i}", "guess")).status == 401
        r = await _login(attacker, "alice")
        assert r.status == 429 and (await r.json())["code"] == "rate_limited"
        async with _session(server.url, "127.0.0.3") as bystander:
            assert (await _login(bystander, "bob")).status == 201


async def test_login_attempts_and_registrations_are_paced_per_ip(make_server: MakeServer) -> None:
    server = await make_server(
        rate_register_per_ip_s=0.01,
        rate_register_ip_burst=3,
        rate_login_per_ip_s=0.01,
        rate_login_ip_burst=5,
        limits_exempt_networks="127.0.0.5/32",
    )
    async with asyncio.timeout(30), _session(server.url, "127.0.0.2") as http:
        statuses = []
        for i in range(5):
            r = await http.post("/api/v1/accounts", json={"username": f"spam{i}", "password": PASSWORD})
            statuses.append(r.status)
        assert statuses == [201, 201, 201, 429, 429]
        statuses = [(await _login(http, "spam0")).status for _ in range(7)]  # correct password every time
        assert statuses == [201] * 5 + [429] * 2
        async with _session(server.url, "127.0.0.5") as exempt:  # the exempt network is not paced
            for i in range(5):
                r = await exempt.post("/api/v1/accounts", json={"username": f"tool{i}", "password": PASSWORD})
                assert r.status == 201


async def test_uploads_are_limited_per_user(make_server: MakeServer) -> None:
    server = await make_server(rate_upload_per_user_s=0.01, rate_upload_burst=2)
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        (a_l,) = await make_users(http, ["alice"])
        headers = {"Authorization": f"Bearer {a_l['token']}", "Content-Type": "text/plain"}
        statuses = []
        for i in range(3):
            r = await http.post(f"/api/v1/media?kind=file&name=n{i}.txt", data=b"hello %d" % i, headers=headers)
            statuses.append(r.status)
        assert statuses == [201, 201, 429]
        assert (await r.json())["code"] == "rate_limited" and "Retry-After" in r.headers


@pytest.mark.parametrize("default", ["rate_send_per_user_s", "rate_requests_per_user_s", "login_free_failures"])
def test_defaults_are_generous(default: str) -> None:
    from yim.config import Settings

    s = Settings()
    assert getattr(s, default) >= 5
    assert s.rate_send_burst >= 1000 and s.max_connections_per_ip >= 100
    assert "127.0.0.0/8" in s.limits_exempt_networks
