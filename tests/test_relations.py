"""Relation chain, privacy, presence and the multi-device policy over real connections."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, keepalive, login, make_users, until
from yim.node import NodeServer


def _relation_events(device: Device) -> list[dict[str, Any]]:
    return [e["data"] for e in device.events if e["type"] == "relation"]


async def test_friend_requests_from_both_sides_while_one_side_is_offline(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["alice", "bob", "carol", "dave"])
        alice, bob, carol, dave = (Device(http, x) for x in logins)
        alice_desktop = Device(http, await login(http, "alice", "desktop-1"))
        await alice.connect()
        await alice_desktop.connect()

        # Bob is offline when alice asks; her other device sees the request live.
        sent = await alice.request("friend_request", to=bob.user_id, message="我是 alice")
        assert sent["status"] == "pending"
        await until(lambda: _relation_events(alice_desktop))
        assert _relation_events(alice_desktop)[0]["event"] == "friend_request_sent"
        again = await alice.request("friend_request", to=bob.user_id, message="again")
        assert again["request_id"] == sent["request_id"]  # a repeated request is the same one

        await bob.connect()
        events, _ = await bob.sync_all()
        incoming = [e["data"] for e in events if e["type"] == "relation"]
        assert incoming == [
            {
                "event": "friend_request",
                "user_id": alice.user_id,
                "request_id": sent["request_id"],
                "message": "我是 alice",
            }
        ]
        pending = await bob.request("friend_requests", direction="incoming")
        assert [r["request_id"] for r in pending["requests"]] == [sent["request_id"]]

        # Alice goes offline; bob accepts; she learns it on reconnect by sync.
        await alice.close()
        await bob.request("friend_accept", request_id=sent["request_id"])
        await alice.connect()
        events, _ = await alice.sync_all()
        assert [e["data"]["event"] for e in events if e["type"] == "relation"][-1] == "friend_added"
        friends = await alice.request("friends")
        assert [f["user"]["user_id"] for f in friends["friends"]] == [bob.user_id]
        await until(lambda: any(e["event"] == "friend_added" for e in _relation_events(alice_desktop)))

        # Crossing requests accept each other.
        await carol.connect()
        await dave.connect()
        first = await carol.request("friend_request", to=dave.user_id)
        crossed = await dave.request("friend_request", to=carol.user_id)
        assert crossed["request_id"] == first["request_id"] and crossed["status"] == "accepted"
        assert (await carol.request("relation", user_id=dave.user_id))["friend"] is True

        # Reject and cancel, then deletion from either side.
        r = await carol.request("friend_request", to=alice.user_id)
        await alice.request("friend_reject", request_id=r["request_id"])
        with pytest.raises(ProtocolError) as err:
            await alice.request("friend_accept", request_id=r["request_id"])
        assert err.value.code == "bad_request"
        r = await carol.request("friend_request", to=bob.user_id)
        with pytest.raises(ProtocolError) as err:
            await bob.request("friend_cancel", request_id=r["request_id"])
        assert err.value.code == "forbidden"
        await carol.request("friend_cancel", request_id=r["request_id"])
        await dave.request("friend_delete", user_id=carol.user_id)
        assert (await carol.request("relation", user_id=dave.user_id))["friend"] is False
        await until(lambda: any(e["event"] == "friend_removed" for e in _relation_events(carol)))

        # Remarks and tags are the owner's own view.
        updated = await alice.request("friend_update", user_id=bob.user_id, remark="老同学", tags=["school"])
        assert (updated["remark"], updated["tags"]) == ("老同学", ["school"])
        for d in (alice, alice_desktop, bob, carol, dave):
            await d.close()


async def test_block_is_enforced_on_every_path(make_server: Any) -> None:
    server: NodeServer = await make_server(presence_debounce_s=0.05)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = (Device(http, x) for x in await make_users(http, ["alice", "bob"]))
        await alice.connect()
        await bob.connect()
        req = await alice.request("friend_request", to=bob.user_id)
        await bob.request("friend_accept", request_id=req["request_id"])
        await alice.request("follow", user_id=bob.user_id)
        ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "hi"}, client_msg_id="m1")
        seen = await alice.request("presence_query", user_ids=[bob.user_id])
        assert seen["presence"][0]["status"] == "online"

        state = await bob.request("block", user_id=alice.user_id)
        assert state["blocked"] and not state["friend"]
        assert (await alice.request("relation", user_id=bob.user_id))["following"] is False
        for op, fields in (
            ("send", {"to": bob.user_id, "kind": "text", "body": {"text": "x"}, "client_msg_id": "m2"}),
            ("send", {"conv_id": ack["conv_id"], "kind": "text", "body": {"text": "x"}, "client_msg_id": "m3"}),
            ("friend_request", {"to": bob.user_id}),
            ("follow", {"user_id": bob.user_id}),
            ("followers", {"user_id": bob.user_id}),
        ):
            with pytest.raises(ProtocolError) as err:
                await alice.request(op, **fields)
            assert err.value.code == "blocked", op
        # The blocker cannot message the blocked user either until unblocking.
        with pytest.raises(ProtocolError) as err:
            await bob.request("send", to=alice.user_id, kind="text", body={"text": "x"}, client_msg_id="b1")
        assert err.value.code == "blocked"
        # Presence: hidden from the blocked user, who is told "offline" at once.
        hidden = await alice.request("presence_query", user_ids=[bob.user_id])
        assert hidden["presence"][0]["status"] == "offline"
        await until(lambda: any(n["type"] == "presence" and n["data"]["status"] == "offline" for n in alice.notices))
        assert (await bob.request("blocks"))["users"][0]["user"]["user_id"] == alice.user_id
        await bob.request("unblock", user_id=alice.user_id)
        await alice.request("send", to=bob.user_id, kind="text", body={"text": "back"}, client_msg_id="m4")
        await alice.close()
        await bob.close()


async def test_friends_only_direct_messages(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        carol, dave = (Device(http, x) for x in await make_users(http, ["carol", "dave"]))
        await carol.connect()
        await dave.connect()
        assert (await carol.request("privacy_set", dm_policy="friends"))["dm_policy"] == "friends"
        with pytest.raises(ProtocolError) as err:
            await dave.request("send", to=carol.user_id, kind="text", body={"text": "hi"}, client_msg_id="d1")
        assert err.value.code == "friends_only"
        req = await dave.request("friend_request", to=carol.user_id, message="hello")
        await carol.request("friend_accept", request_id=req["request_id"])
        await dave.request("send", to=carol.user_id, kind="text", body={"text": "hi"}, client_msg_id="d2")
        await carol.close()
        await dave.close()


async def test_follow_lists_and_counts(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        devices = [Device(http, x) for x in await make_users(http, [f"fan{i}" for i in range(5)])]
        await asyncio.gather(*(d.connect() for d in devices))
        star, fans = devices[0], devices[1:]
        for fan in fans:
            await fan.request("follow", user_id=star.user_id)
        await fans[0].request("follow", user_id=star.user_id)  # idempotent
        counts = await fans[0].request("relation_counts", user_id=star.user_id)
        assert (counts["followers"], counts["following"]) == (4, 0)
        page = await star.request("followers", limit=3)
        assert len(page["users"]) == 3 and page["next_after"]
        rest = await star.request("followers", limit=3, after=page["next_after"])
        ids = [u["user"]["user_id"] for u in page["users"] + rest["users"]]
        assert sorted(ids) == sorted(f.user_id for f in fans)
        await until(lambda: len([e for e in _relation_events(star) if e["event"] == "follower_added"]) == 4)
        await fans[0].request("unfollow", user_id=star.user_id)
        assert (await star.request("relation_counts"))["followers"] == 3
        for d in devices:
            await d.close()


async def test_presence_of_three_devices_through_background_silence_and_timeout(make_server: Any) -> None:
    server: NodeServer = await make_server(idle_timeout_s=1.0, presence_debounce_s=0.05)
    async with aiohttp.ClientSession(server.url) as http:
        user_login, watcher_login, stranger_login = await make_users(http, ["uuu", "www", "sss"], platform="web")
        watcher, stranger = Device(http, watcher_login), Device(http, stranger_login)
        phone = Device(http, await login(http, "uuu", "phone", "android"))
        web = Device(http, user_login)
        desk = Device(http, await login(http, "uuu", "desk", "desktop"))
        await watcher.connect()
        await stranger.connect()
        req = await watcher.request("friend_request", to=phone.user_id)
        await phone.connect()
        await phone.request("friend_accept", request_id=req["request_id"])

        def last_presence(device: Device) -> dict[str, Any] | None:
            found = [
                n["data"] for n in device.notices if n["type"] == "presence" and n["data"]["user_id"] == phone.user_id
            ]
            return found[-1] if found else None

        async with keepalive(watcher, stranger, phone):
            await until(lambda: (last_presence(watcher) or {}).get("status") == "online")
            await web.connect()
            await desk.connect()
            async with keepalive(web, desk):
                await until(lambda: (last_presence(watcher) or {}).get("platforms") == ["android", "desktop", "web"])
                for d in (phone, web, desk):
                    await d.request("presence_set", status="away")
                await until(lambda: (last_presence(watcher) or {}).get("status") == "away")
                await desk.request("presence_set", status="online")
                await until(lambda: (last_presence(watcher) or {}).get("status") == "online")
            # web and desk now fall silent without closing (pseudo-online): the heartbeat
            # timeout takes them offline, and the aggregate follows.
            await until(lambda: (last_presence(watcher) or {}).get("platforms") == ["android"], timeout=6)
            assert last_presence(watcher)["status"] == "away"
            q = await watcher.request("presence_query", user_ids=[phone.user_id, stranger.user_id])
            assert [p["status"] for p in q["presence"]] == ["away", "offline"]  # not friends with s: hidden
            await phone.close()
            await until(lambda: (last_presence(watcher) or {}).get("status") == "offline")
            assert last_presence(watcher)["last_seen"] is not None
        assert last_presence(stranger) is None  # never told anything about u
        for d in (watcher, stranger, web, desk):
            await d.close()


async def test_presence_debounces_a_flapping_connection(make_server: Any) -> None:
    server: NodeServer = await make_server(presence_debounce_s=0.5)
    async with aiohttp.ClientSession(server.url) as http:
        a, b = (Device(http, x) for x in await make_users(http, ["aaa", "bbb"]))
        await a.connect()
        await b.connect()
        req = await a.request("friend_request", to=b.user_id)
        await b.request("friend_accept", request_id=req["request_id"])
        await asyncio.sleep(0.7)
        before = len([n for n in a.notices if n["type"] == "presence"])
        for _ in range(5):  # drop and come back well inside the window
            await b.close()
            await b.connect()
        await asyncio.sleep(0.8)
        after = [n for n in a.notices if n["type"] == "presence"]
        assert len(after) == before  # it flapped back: nothing to tell
        await a.close()
        await b.close()


async def test_second_mobile_device_signs_out_the_first(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        await make_users(http, ["mmm"])
        phone1 = Device(http, await login(http, "mmm", "phone-1", "android"))
        phone2 = Device(http, await login(http, "mmm", "phone-2", "ios"))
        web = Device(http, await login(http, "mmm", "browser", "web"))
        desk = Device(http, await login(http, "mmm", "laptop", "desktop"))
        for d in (phone1, web, desk):
            await d.connect()
        await phone2.connect()
        async with asyncio.timeout(5):
            await phone1.closed.wait()
        assert phone1.ws is not None and phone1.ws.close_code == 4006
        for d in (web, desk, phone2):
            assert (await d.request("ping"))["time"] > 0
        devices = await phone2.request("conversations")  # still fully usable
        assert devices["conversations"] == []
        r = await http.get("/api/v1/devices", headers={"Authorization": f"Bearer {phone2.token}"})
        online = {d["device_id"]: d["online"] for d in (await r.json())["devices"]}
        assert online == {"d1": False, "phone-1": False, "phone-2": True, "browser": True, "laptop": True}
        for d in (phone2, web, desk):
            await d.close()


async def test_presence_of_users_flushed_together_reaches_only_their_own_audiences(make_server: Any) -> None:
    """Presence changes that fall due together are published from one audience read; each
    user's change must still reach exactly that user's audience."""
    server: NodeServer = await make_server(presence_debounce_s=0.3)
    batch_sizes: list[int] = []
    relations = server.node.store.relations
    read_audiences = relations.presence_audiences

    async def recording(user_ids: list[int]) -> dict[int, list[int]]:
        batch_sizes.append(len(user_ids))
        return await read_audiences(user_ids)

    relations.presence_audiences = recording  # type: ignore[method-assign]  # records, then reads for real
    async with aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["watcher", "amy", "ben", "cleo", "hana"])
        watcher, amy, ben, cleo, hana = (Device(http, x) for x in logins)
        await watcher.connect()
        # The watcher is told of its own change too: that notice must be in before the
        # clear below, or a late one (a busy machine) reads as a change of the four.
        await until(
            lambda: any(n["type"] == "presence" and n["data"]["user_id"] == watcher.user_id for n in watcher.notices)
        )
        for friend in (amy, ben, hana):  # not cleo
            await friend.connect()
            req = await friend.request("friend_request", to=watcher.user_id)
            await watcher.request("friend_accept", request_id=req["request_id"])
        await hana.request("privacy_set", presence="nobody")
        for d in (amy, ben, hana):
            await d.close()
        await until(lambda: server.node.presence.state(int(amy.user_id))[0] == "offline")
        await asyncio.sleep(0.5)  # the offline changes are published and done with
        watcher.notices.clear()
        batch_sizes.clear()

        await asyncio.gather(*(d.connect() for d in (amy, ben, cleo, hana)))
        await until(lambda: sum(batch_sizes) >= 4)
        await asyncio.sleep(0.2)
        online = {n["data"]["user_id"] for n in watcher.notices if n["type"] == "presence"}
        assert online == {amy.user_id, ben.user_id}  # not cleo (no friend), not hana (hidden)
        assert max(batch_sizes) >= 2, batch_sizes  # the four came due together, or nearly
        # each user is told of their own change too (the "my devices" view), nobody else's
        for d in (amy, ben, cleo, hana):
            seen = {n["data"]["user_id"] for n in d.notices if n["type"] == "presence"}
            assert d.user_id in seen and seen <= {d.user_id, watcher.user_id}, (d.user_id, seen)
        for d in (watcher, amy, ben, cleo, hana):
            await d.close()
