"""Push end to end: pushers registered over the protocol, and a node waking devices that are
not connected through a real Web Push stand-in (tests/push_standins), on both stores."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from tests.conftest import MakeServer, ServerProcess
from tests.conftest import test_settings as node_settings
from tests.push_standins.common import unb64url
from tests.push_standins.webpush import WebPushStandin
from tests.rawclient import Device, ProtocolError, login, make_users, until
from tests.services import RedisServer
from tests.test_cluster import _data_dirs, _flush
from yim.config import SettingsError
from yim.node import NodeServer, push_providers
from yim.push.vapid import KEY_FILE, load_or_create

Serve = Callable[[web.Application], Awaitable[str]]
#: push settings of these tests: Web Push to loopback, short intervals so bursts end quickly
PUSH = {
    "push_enabled": True,
    "push_vapid_subject": "mailto:ops@example.com",
    "push_webpush_allow_http": True,
    "push_poll_s": 0.1,
    "push_collapse_s": 1.0,
    "push_retry_s": 0.2,
    "push_timeout_s": 2.0,
}


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[WebPushStandin]:
    s = WebPushStandin("")  # the node's VAPID key is set once the node made it
    runner = web.AppRunner(s.app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    s.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield s
    s.m.release.set()
    await runner.cleanup()


async def push_node(make_server: MakeServer, standin: WebPushStandin, **overrides: Any) -> NodeServer:
    server = await make_server(**{**PUSH, **overrides})
    async with aiohttp.ClientSession(server.url) as http:
        (who,) = await make_users(http, ["keyreader"])
        r = await http.get("/api/v1/push/vapid-key", headers={"Authorization": f"Bearer {who['token']}"})
        assert r.status == 200, await r.text()
        standin.application_server_key = unb64url((await r.json())["vapid_public_key"])
    return server


async def subscribe(device: Device, standin: WebPushStandin, name: str) -> dict[str, Any]:
    sub = standin.subscribe(name)
    return await device.request(
        "pusher_set", kind="webpush", endpoint=sub.endpoint, p256dh=sub.p256dh, auth=sub.auth_b64
    )


def pushed(standin: WebPushStandin, name: str) -> list[dict[str, Any]]:
    return [a["payload"] for a in standin.m.accepted if a["name"] == name]


async def settle(seconds: float) -> None:
    """Give the worker rounds to do anything more it would (wrongly) do."""
    await asyncio.sleep(seconds)


async def test_pusher_ops_and_errors(make_server: MakeServer, standin: WebPushStandin) -> None:
    server = await push_node(make_server, standin)
    async with aiohttp.ClientSession(server.url) as http:
        (bob_login,) = await make_users(http, ["bob"], device_id="phone")
        bob = Device(http, bob_login)
        await bob.connect()
        out = await subscribe(bob, standin, "bob")
        assert out["device_id"] == "phone" and out["kind"] == "webpush" and out["endpoint"].endswith("/push/bob")
        assert "p256dh" not in out and "auth" not in out  # the subscription's secrets are never echoed
        listed = (await bob.request("pushers"))["pushers"]
        assert [(p["device_id"], p["kind"]) for p in listed] == [("phone", "webpush")]

        with pytest.raises(ProtocolError) as e:
            await bob.request("pusher_set", kind="webpush", endpoint="https://push.example/x")
        assert e.value.code == "invalid_pusher" and "auth, p256dh" in str(e.value)
        with pytest.raises(ProtocolError) as e:
            await bob.request("pusher_set", kind="fcm", token="t", pushkey="k")
        assert e.value.code == "invalid_pusher"
        with pytest.raises(ProtocolError) as e:
            await bob.request("pusher_set", kind="apns", token="ab" * 32)
        assert e.value.code == "push_unavailable"  # no APNs key configured on this node

        # HTTP: the same ops
        auth = {"Authorization": f"Bearer {bob.token}"}
        r = await http.get("/api/v1/me/pushers", headers=auth)
        assert r.status == 200 and len((await r.json())["pushers"]) == 1
        r = await http.delete("/api/v1/me/pusher", headers=auth, json={})
        assert r.status == 200 and (await r.json()) == {"removed": True}
        assert (await bob.request("pushers"))["pushers"] == []

        # a logged-out device loses its pusher
        await subscribe(bob, standin, "bob2")
        r = await http.delete("/api/v1/sessions/current", headers=auth)
        assert r.status in (200, 204), await r.text()
        other = Device(http, await login(http, "bob", "laptop"))
        await other.connect()
        assert (await other.request("pushers"))["pushers"] == []
        await other.close()


async def test_push_unavailable_without_push(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        (x,) = await make_users(http, ["nopush"])
        d = Device(http, x)
        await d.connect()
        with pytest.raises(ProtocolError) as e:
            await d.request("push_key")
        assert e.value.code == "push_unavailable"
        with pytest.raises(ProtocolError) as e:
            await d.request("pusher_set", kind="webpush", endpoint="https://p.example/x", p256dh="AAAA", auth="AAAA")
        assert e.value.code == "push_unavailable"
        await d.close()


async def test_offline_device_gets_one_push_per_burst_online_device_none(
    make_server: MakeServer, standin: WebPushStandin
) -> None:
    server = await push_node(make_server, standin)
    async with aiohttp.ClientSession(server.url) as http:
        alice_login, bob_login = await make_users(http, ["alice", "bob"], device_id="phone")
        alice, bob_phone = Device(http, alice_login), Device(http, bob_login)
        bob_desk = Device(http, await login(http, "bob", "desk", platform="desktop"))
        for d in (alice, bob_phone, bob_desk):
            await d.connect()
        await subscribe(bob_phone, standin, "phone")
        await subscribe(bob_desk, standin, "desk")
        await subscribe(alice, standin, "alice")
        await bob_phone.close()  # the phone goes away; the desktop stays connected

        # one burst: the three written at once (in order on the one connection), so that they
        # commit within the collapse interval however long each round trip takes on a loaded
        # machine; three sends one after another could span it and rightly be pushed three times
        to = bob_phone.user_id
        burst = [{"kind": "text", "body": {"text": f"hi {i}"}, "client_msg_id": f"m{i}", "to": to} for i in range(3)]
        await asyncio.gather(*(alice.request("send", **fields) for fields in burst))
        await until(lambda: sum(int(p["data"]["count"]) for p in pushed(standin, "phone")) >= 3)
        await settle(2.5)  # past the collapse interval: nothing more comes
        phone = pushed(standin, "phone")
        assert sum(int(p["data"]["count"]) for p in phone) == 3  # every entry pushed once
        assert len(phone) <= 2  # the first at once, the rest of the burst together
        assert phone[-1]["badge"] == 3 and phone[-1]["body"].startswith("hi 2")
        assert phone[-1]["title"] == "alice"
        assert pushed(standin, "desk") == []  # connected: it got the messages live
        assert pushed(standin, "alice") == []  # her own messages wake none of her devices

        # bob reads on the desktop: the next push's badge is the unread count now
        conv_id = bob_desk.events[-1]["data"]["conv_id"]
        await bob_desk.request("read", conv_id=conv_id, seq=bob_desk.events[-1]["data"]["seq"])
        await alice.request("send", kind="text", body={"text": "again"}, client_msg_id="m9", to=bob_phone.user_id)
        await until(lambda: len(pushed(standin, "phone")) == len(phone) + 1)
        assert pushed(standin, "phone")[-1]["badge"] == 1
        assert pushed(standin, "phone")[-1]["data"]["count"] == "1"


async def test_gone_removes_pusher_and_errors_are_retried(make_server: MakeServer, standin: WebPushStandin) -> None:
    server = await push_node(make_server, standin)
    async with aiohttp.ClientSession(server.url) as http:
        alice_login, bob_login, carol_login = await make_users(http, ["alice", "bob", "carol"], device_id="phone")
        alice, bob, carol = Device(http, alice_login), Device(http, bob_login), Device(http, carol_login)
        for d in (alice, bob, carol):
            await d.connect()
        await subscribe(bob, standin, "bob")
        await subscribe(carol, standin, "carol")
        await bob.close()
        await carol.close()
        standin.m.modes["bob"] = "gone"
        standin.m.modes["carol"] = "error"  # 500 without Retry-After: the node backs off and tries again

        await alice.request("send", kind="text", body={"text": "x"}, client_msg_id="b1", to=bob.user_id)
        await alice.request("send", kind="text", body={"text": "y"}, client_msg_id="c1", to=carol.user_id)
        bob2 = Device(http, await login(http, "bob", "laptop"))
        await bob2.connect()

        async def bob_has_pushers() -> bool:
            return bool((await bob2.request("pushers"))["pushers"])

        async with asyncio.timeout(10):
            while await bob_has_pushers():
                await asyncio.sleep(0.05)
        await settle(0.5)
        standin.m.modes["carol"] = "ok"
        await until(lambda: len(pushed(standin, "carol")) == 1)
        await settle(1.5)
        assert len(pushed(standin, "carol")) == 1  # retried until delivered, then once only
        assert pushed(standin, "bob") == []


async def test_slow_provider_does_not_slow_sends(make_server: MakeServer, standin: WebPushStandin) -> None:
    server = await push_node(make_server, standin, push_timeout_s=30.0)
    async with aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["alice"] + [f"user{i}" for i in range(5)], device_id="phone")
        alice, *others = (Device(http, x) for x in logins)
        for d in (alice, *others):
            await d.connect()
        for i, d in enumerate(others):
            await subscribe(d, standin, f"u{i}")
            standin.m.modes[f"u{i}"] = "slow"  # holds every push until released
            await d.close()
        await alice.request("send", kind="text", body={"text": "first"}, client_msg_id="s0", to=others[0].user_id)
        await until(lambda: standin.m.waiting >= 1)
        # the provider holds a push: sends to everyone still answer at once. It holds it until
        # released below, so a send waiting on it would never answer: the bound only has to be
        # finite, and is wide enough for 50 sends one after another on a loaded machine
        async with asyncio.timeout(30):
            for i in range(50):
                d = others[i % 5]
                await alice.request("send", kind="text", body={"text": f"n{i}"}, client_msg_id=f"n{i}", to=d.user_id)
        standin.m.modes.clear()
        standin.m.release.set()
        await until(lambda: {a["name"] for a in standin.m.accepted} == {f"u{i}" for i in range(5)})


async def test_muted_conversation_pushes_only_mentions_and_quiet_hours_hold(
    make_server: MakeServer, standin: WebPushStandin
) -> None:
    server = await push_node(make_server, standin, push_dnd_recheck_s=0.3)
    async with aiohttp.ClientSession(server.url) as http:
        alice_login, bob_login = await make_users(http, ["alice", "bob"], device_id="phone")
        alice, bob = Device(http, alice_login), Device(http, bob_login)
        await alice.connect()
        await bob.connect()
        await subscribe(bob, standin, "bob")
        group = (await alice.request("group_create", name="team", members=[bob.user_id]))["group"]["conv_id"]
        dm = (await alice.request("send", kind="text", body={"text": "hello"}, client_msg_id="d0", to=bob.user_id))[
            "conv_id"
        ]
        muted = await bob.request("push_mute", conv_id=group, mute="mentions")
        assert muted["mutes"] == [{"conv_id": group, "mute": "mentions"}]
        await bob.request("push_mute", conv_id=dm, mute="all")
        with pytest.raises(ProtocolError) as e:
            await alice.request("push_mute", conv_id="12345", mute="all")
        assert e.value.code == "not_member"
        await bob.close()

        await alice.request("send", kind="text", body={"text": "plain"}, client_msg_id="g1", conv_id=group)
        await alice.request("send", kind="text", body={"text": "dm"}, client_msg_id="d1", to=bob.user_id)
        await alice.request(
            "send", kind="text", body={"text": "@bob look"}, client_msg_id="g2", conv_id=group, mentions=[bob.user_id]
        )
        await until(lambda: len(pushed(standin, "bob")) == 1)
        await settle(1.5)
        (only,) = pushed(standin, "bob")
        assert only["body"] == "@bob look" and only["data"]["count"] == "1" and only["conv_id"] == group

        # quiet hours around now, in bob's time zone: held, then pushed when they are lifted
        bob2 = Device(http, await login(http, "bob", "desk"))
        await bob2.connect()
        with pytest.raises(ProtocolError) as e:
            await bob2.request("push_settings_set", time_zone="Mars/Base")
        assert e.value.code == "bad_request"
        with pytest.raises(ProtocolError) as e:
            await bob2.request("push_settings_set", dnd="25:00-07:00")
        assert e.value.code == "bad_request"
        await bob2.request("push_mute", conv_id=dm, mute="off")
        zone = "Asia/Kathmandu"  # UTC+05:45: a quarter-hour offset, so a wrong zone misses the window
        now = datetime.now(ZoneInfo(zone))
        start, end = now - timedelta(minutes=30), now + timedelta(minutes=30)
        settings = await bob2.request(
            "push_settings_set", time_zone=zone, dnd=f"{start:%H:%M}-{end:%H:%M}", preview=False
        )
        assert settings["dnd"] == f"{start:%H:%M}-{end:%H:%M}" and settings["preview"] is False
        await bob2.close()
        await alice.request("send", kind="text", body={"text": "late"}, client_msg_id="d2", to=bob.user_id)
        await settle(2.0)
        assert len(pushed(standin, "bob")) == 1  # held by the quiet hours
        bob3 = Device(http, await login(http, "bob", "desk"))
        await bob3.connect()
        await bob3.request("push_settings_set", dnd="")
        await bob3.close()
        await until(lambda: len(pushed(standin, "bob")) == 2)
        late = pushed(standin, "bob")[-1]
        assert late["conv_id"] == dm and late["body"] == "New message from alice" and "title" not in late


@pytest.mark.backends("postgres")
async def test_two_nodes_push_each_entry_once(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer, standin: WebPushStandin
) -> None:
    await _flush(redis_server.url)
    dirs = _data_dirs(tmp_path, 2)
    key = load_or_create(dirs[0])
    shutil.copy(dirs[0] / KEY_FILE, dirs[1] / KEY_FILE)  # every node signs with the one key
    standin.application_server_key = unb64url(key.public_key)
    servers = [
        NodeServer(
            node_settings(
                d, store=postgres_dsn, redis_url=redis_server.url, node_id_lease=True, group_write_fanout_max=2, **PUSH
            )
        )
        for d in dirs
    ]
    await asyncio.gather(*(s.start() for s in servers))
    try:
        async with aiohttp.ClientSession(servers[0].url) as h0, aiohttp.ClientSession(servers[1].url) as h1:
            names = [f"user{i}" for i in range(8)]
            logins = await make_users(h0, ["alice", *names], device_id="phone")
            alice = Device(h0, logins[0])
            await alice.connect()
            for i, (name, lg) in enumerate(zip(names, logins[1:], strict=True)):
                d = Device(h1 if i % 2 else h0, lg)
                await d.connect()
                await subscribe(d, standin, name)
                await d.close()
            alice1 = Device(h1, await login(h1, "alice", "desk"))
            await alice1.connect()
            # connected to the other node: no node pushes to it
            online_login = (await make_users(h0, ["online"], device_id="phone"))[0]
            online = Device(h1, online_login)
            await online.connect()
            await subscribe(online, standin, "online")
            redis = aioredis.Redis.from_url(redis_server.url)
            try:  # node 1 has shared that the device is connected (its presence sync)
                async with asyncio.timeout(10):
                    while not await redis.hexists(f"yim:p:{{{online.user_id}}}", "phone"):
                        await asyncio.sleep(0.05)
            finally:
                await redis.aclose()
            await alice.request("send", kind="text", body={"text": "live"}, client_msg_id="o1", to=online.user_id)
            await until(lambda: len(online.events) == 1)
            for i, lg in enumerate(logins[1:]):
                sender = alice1 if i % 2 else alice
                await sender.request(
                    "send", kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}", to=lg["user_id"]
                )
            await until(lambda: set(names) <= {a["name"] for a in standin.m.accepted}, timeout=20)
            # a read-fan-out group of them all: a mention of everyone is pushed to each, by one node
            members = [lg["user_id"] for lg in logins[1:]]
            group = (await alice.request("group_create", name="big", members=members))["group"]["conv_id"]
            await alice1.request(
                "send", kind="text", body={"text": "@all"}, client_msg_id="all", conv_id=group, mention_all=True
            )
            await until(lambda: all(in_conv(standin, n, group) for n in names), timeout=20)
            await settle(2.5)
            dms = [a["name"] for a in standin.m.accepted if a["payload"]["conv_id"] != group]
            assert sorted(dms) == sorted(names)  # each once, by one node
            assert all(len(in_conv(standin, n, group)) == 1 for n in names)
            assert pushed(standin, "online") == []
            await alice.close()
            await alice1.close()
    finally:
        for s in servers:
            await s.stop()


async def _big_group(alice: Device, members: list[Device]) -> str:
    """A group above the nodes' group_write_fanout_max (2): read fan-out, no inbox entries."""
    out = await alice.request("group_create", name="big", members=[d.user_id for d in members])
    return str(out["group"]["conv_id"])


def in_conv(standin: WebPushStandin, name: str, conv_id: str) -> list[dict[str, Any]]:
    return [p for p in pushed(standin, name) if p["conv_id"] == conv_id]


async def test_read_fanout_group_pushes_collapsed_mentions_by_default(
    make_server: MakeServer, standin: WebPushStandin
) -> None:
    server = await push_node(make_server, standin, group_write_fanout_max=2)
    async with aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["alice", "bob", "carol", "dave", "erin"], device_id="phone")
        alice, bob, carol, dave, erin = (Device(http, x) for x in logins)
        for d in (alice, bob, carol, dave, erin):
            await d.connect()
        group = await _big_group(alice, [bob, carol, dave, erin])
        await alice.request("send", kind="text", body={"text": "old"}, client_msg_id="g0", conv_id=group)
        for d, name in ((bob, "bob"), (carol, "carol"), (dave, "dave"), (erin, "erin")):
            await subscribe(d, standin, name)
        on = await bob.request("push_mute", conv_id=group, mute="off")  # bob turns the group's messages on
        assert on["mutes"] == [{"conv_id": group, "mute": "off"}]
        await dave.request("push_mute", conv_id=group, mute="all")
        await erin.request("push_mute", conv_id=group, mute="mentions")  # the default, set explicitly
        for d in (bob, carol, dave, erin):
            await d.close()

        for i in range(3):
            await alice.request(
                "send", kind="text", body={"text": f"busy {i}"}, client_msg_id=f"g{i + 1}", conv_id=group
            )
        await until(lambda: sum(int(p["data"]["count"]) for p in pushed(standin, "bob")) >= 3)
        await alice.request(
            "send",
            kind="text",
            body={"text": "@carol @dave @erin look"},
            client_msg_id="g9",
            conv_id=group,
            mentions=[carol.user_id, dave.user_id, erin.user_id],
        )
        await until(lambda: len(pushed(standin, "carol")) == 1 and len(pushed(standin, "erin")) == 1)
        await until(lambda: sum(int(p["data"]["count"]) for p in pushed(standin, "bob")) >= 4)
        await settle(2.5)  # past the collapse interval: nothing more comes
        to_bob = in_conv(standin, "bob", group)
        # every message once (not "old": it came before the pusher), at most one push per interval
        assert sum(int(p["data"]["count"]) for p in to_bob) == 4 and len(to_bob) <= 3
        assert to_bob[-1]["body"].startswith("@carol @dave @erin look") and to_bob[-1]["title"] == "alice"
        for name in ("carol", "erin"):  # mentions only, by default for a big group and when set
            (note,) = pushed(standin, name)
            assert note["conv_id"] == group and note["body"] == "@carol @dave @erin look"
            assert note["data"]["count"] == "1"
        assert pushed(standin, "dave") == []  # muted: not even a mention

        # connected, or read: nothing more is pushed for what the device has had
        bob2 = Device(http, await login(http, "bob", "phone"))
        await bob2.connect()
        await alice.request("send", kind="text", body={"text": "live"}, client_msg_id="g10", conv_id=group)
        await settle(1.5)
        assert sum(int(p["data"]["count"]) for p in in_conv(standin, "bob", group)) == 4
        await bob2.close()
        await alice.close()


async def test_node_killed_after_commit_pushes_after_restart_once(
    server_process: Callable[..., ServerProcess], standin: WebPushStandin, store_url: str
) -> None:
    env = {f"YIM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in PUSH.items()}
    env |= {"YIM_STORE": store_url, "YIM_GROUP_WRITE_FANOUT_MAX": "2"}
    first = server_process(**{**env, "YIM_PUSH_POLL_S": "60"})  # looks for work at start, then not for a minute
    first.start()
    async with aiohttp.ClientSession(first.url) as http:
        logins = await make_users(http, ["alice", "bob", "carol"], device_id="phone")
        alice, bob, carol = (Device(http, x) for x in logins)
        for d in (alice, bob, carol):
            await d.connect()
        standin.application_server_key = unb64url((await bob.request("push_key"))["vapid_public_key"])
        group = await _big_group(alice, [bob, carol])
        await subscribe(bob, standin, "bob")
        await bob.close()
        await alice.request("send", kind="text", body={"text": "before the crash"}, client_msg_id="k1", to=bob.user_id)
        # and a mention in a read-fan-out group: no inbox entry, its own cursor
        await alice.request(
            "send", kind="text", body={"text": "@bob crash"}, client_msg_id="k2", conv_id=group, mentions=[bob.user_id]
        )
        await alice.close()
        await carol.close()
    first.kill()  # committed, not pushed yet
    assert standin.m.accepted == []

    again = ServerProcess(first.data_dir, port=first.port, **env)
    try:
        again.start()
        await until(lambda: len(pushed(standin, "bob")) == 2, timeout=20)
        await settle(1.5)
        notes = {n["body"]: n for n in pushed(standin, "bob")}
        assert len(pushed(standin, "bob")) == 2 and set(notes) == {"before the crash", "@bob crash"}
        assert notes["@bob crash"]["conv_id"] == group and notes["before the crash"]["badge"] == 2
    finally:
        again.stop()


def test_bad_push_settings_stop_the_start_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^push_enabled needs a provider"):
        push_providers(node_settings(tmp_path, push_enabled=True))
    with pytest.raises(ValueError, match=r"^push: APNs needs push_apns_key_file, push_apns_key_id"):
        push_providers(node_settings(tmp_path, push_enabled=True, push_apns_key_file="/nonexistent"))
    with pytest.raises(ValueError, match=r"^push: push_vapid_subject 'ops'"):
        push_providers(node_settings(tmp_path, push_enabled=True, push_vapid_subject="ops"))
    with pytest.raises(SettingsError, match=r"^bad setting: push_timeout_s = 0 .*allowed: a number from 0 to 300"):
        node_settings(tmp_path, push_timeout_s=0)
