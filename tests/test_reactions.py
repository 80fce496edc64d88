"""Reactions and pins over real connections, on both stores: counts and "me", the per-user
limit and the rate limit, unread counts and the conversation list left alone, recall of a
reacted message, read fan-out without per-member writes, and devices that were offline
converging on exactly what online devices show."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, login, make_users, until
from tests.sdk_helpers import Chat
from yim.node import NodeServer
from yim.protocol.frames import ReactionEvent, ReactionOut


async def _devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    devices = [Device(http, one) for one in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in devices))
    return devices


async def _text(device: Device, text: str, **to: str) -> dict[str, Any]:
    return await device.request("send", kind="text", body={"text": text}, client_msg_id=f"{text}-{id(to)}", **to)


def _pushed(device: Device, type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in device.events if e["type"] == type_] + [
        n["data"] for n in device.notices if n["type"] == type_
    ]


class View:
    """What a client shows of reactions and pins, built only from what it was sent: the
    ``reaction`` events and notices (absolute counts; "me" from its own user's changes),
    the ``reactions`` pull of read-fan-out groups, and the pin system entries."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.counts: dict[tuple[str, int], dict[str, int]] = {}
        self.mine: dict[tuple[str, int], set[str]] = {}
        self.pinned: dict[str, list[int]] = {}

    def apply_reaction(self, data: dict[str, Any]) -> None:
        key = (data["conv_id"], data["seq"])
        self.counts[key] = {c["emoji"]: c["count"] for c in data["counts"]}
        if data["user_id"] == self.user_id:
            mine = self.mine.setdefault(key, set())
            (mine.add if data["op"] == "add" else mine.discard)(data["emoji"])

    def apply_pulled(self, conv_id: str, message: dict[str, Any]) -> None:
        key = (conv_id, message["seq"])
        self.counts[key] = {r["emoji"]: r["count"] for r in message["reactions"]}
        self.mine[key] = {r["emoji"] for r in message["reactions"] if r["me"]}

    def apply_entry(self, m: dict[str, Any]) -> None:
        if m["kind"] == "system" and m["body"].get("event") in ("pinned", "unpinned"):
            pins = self.pinned.setdefault(m["conv_id"], [])
            if m["body"]["seq"] in pins:
                pins.remove(m["body"]["seq"])
            if m["body"]["event"] == "pinned":
                pins.insert(0, m["body"]["seq"])

    def shown(self) -> tuple[dict[Any, Any], dict[Any, Any], dict[str, list[int]]]:
        counts = {k: v for k, v in self.counts.items() if v}
        mine = {k: v for k, v in self.mine.items() if v}
        return counts, mine, {k: v for k, v in self.pinned.items() if v}


async def _truth(device: Device, conv_ids: list[str]) -> tuple[dict[Any, Any], dict[Any, Any], dict[str, list[int]]]:
    """What the server holds, as history and the conversation object give it."""
    view = View(device.user_id)
    for conv_id in conv_ids:
        for m in await device.pull(conv_id, 0):
            if m.get("reactions"):
                view.apply_pulled(conv_id, m)
        conv = await device.request("conversation", conv_id=conv_id)
        view.pinned[conv_id] = [p["seq"] for p in conv["pinned"]]
    return view.shown()


async def test_react_counts_me_limit_reactors_and_recall(make_server: MakeServer) -> None:
    server = await make_server(reactions_per_user_max=3)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        first = await _text(alice, "hello", to=bob.user_id)
        conv = first["conv_id"]
        second = await _text(alice, "second", conv_id=conv)

        out = await bob.request("react", conv_id=conv, seq=first["seq"], emoji="👍")
        assert out["changed"] and out["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
        assert out["inbox_seq"] > 0 and out["msg_id"] == first["msg_id"]
        out = await alice.request("react", conv_id=conv, seq=first["seq"], emoji="👍")
        assert out["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
        # adding what one has is a no-op: no count, no event
        again = await alice.request("react", conv_id=conv, seq=first["seq"], emoji="👍")
        assert not again["changed"] and again["ver"] == out["ver"] and again["inbox_seq"] == 0
        await alice.request("react", conv_id=conv, seq=first["seq"], emoji="❤️")
        # alice's event reached bob, bob's reached alice, with absolute counts
        await until(lambda: len(_pushed(alice, "reaction")) == 1 and len(_pushed(bob, "reaction")) == 2)
        assert _pushed(bob, "reaction")[-1]["counts"] == [{"emoji": "👍", "count": 2}, {"emoji": "❤️", "count": 1}]
        assert _pushed(bob, "reaction")[-1] | {"counts": []} == {
            "conv_id": conv,
            "seq": first["seq"],
            "msg_id": first["msg_id"],
            "user_id": alice.user_id,
            "emoji": "❤️",
            "op": "add",
            "counts": [],
            "ver": 3,
        }

        # history carries counts, and "me" as each reader sees it
        page = await bob.request("history", conv_id=conv)
        by_seq = {m["seq"]: m for m in page["messages"]}
        assert by_seq[first["seq"]]["reactions"] == [
            {"emoji": "👍", "count": 2, "me": True},
            {"emoji": "❤️", "count": 1, "me": False},
        ]
        assert "reactions" not in by_seq[second["seq"]]

        # at most reactions_per_user_max different emoji per user and message
        for emoji in ("😀", "🎉"):
            await bob.request("react", conv_id=conv, seq=first["seq"], emoji=emoji)
        with pytest.raises(ProtocolError) as err:
            await bob.request("react", conv_id=conv, seq=first["seq"], emoji="🔥")
        assert err.value.code == "too_many_reactions"
        removed = await bob.request("react", conv_id=conv, seq=first["seq"], emoji="😀", remove=True)
        assert {r["emoji"] for r in removed["reactions"]} == {"👍", "❤️", "🎉"}
        await bob.request("react", conv_id=conv, seq=first["seq"], emoji="🔥")

        # who reacted, paged by user id
        who = await alice.request("reactors", conv_id=conv, seq=first["seq"], emoji="👍")
        assert sorted(who["users"]) == sorted([alice.user_id, bob.user_id]) and who["next_after"] is None
        one = await alice.request("reactors", conv_id=conv, seq=first["seq"], emoji="👍", limit=1)
        assert len(one["users"]) == 1 and one["next_after"] == one["users"][0]

        # bad input: system entries, unknown seqs, non-members, blank emoji
        with pytest.raises(ProtocolError) as err:
            await bob.request("react", conv_id=conv, seq=99, emoji="👍")
        assert err.value.code == "not_found"
        with pytest.raises(ProtocolError) as err:
            await bob.request("react", conv_id=conv, seq=first["seq"], emoji=" ")
        assert err.value.code == "bad_request"
        (carol,) = await _devices(http, ["carol"])
        with pytest.raises(ProtocolError) as err:
            await carol.request("react", conv_id=conv, seq=first["seq"], emoji="👍")
        assert err.value.code == "not_member"

        # recall of a reacted message: its reactions go with it, and it takes no more
        await alice.request("recall", conv_id=conv, seq=first["seq"])
        page = await bob.request("history", conv_id=conv)
        recalled = next(m for m in page["messages"] if m["seq"] == first["seq"])
        assert recalled["recalled"] and "reactions" not in recalled
        with pytest.raises(ProtocolError) as err:
            await bob.request("react", conv_id=conv, seq=first["seq"], emoji="👍")
        assert err.value.code == "already_recalled"
        pulled = await bob.request("reactions", conv_id=conv, after_ver=0)
        assert pulled["messages"] == [{"seq": first["seq"], "msg_id": first["msg_id"], "reactions": []}]


async def test_reactions_leave_unread_and_the_conversation_list_alone(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        to_bob = await _text(alice, "to bob", to=bob.user_id)
        for i in range(3):
            await _text(bob, f"from bob {i}", conv_id=to_bob["conv_id"])
        await _text(carol, "from carol", to=alice.user_id)  # carol's conversation is now the newest
        before = await alice.request("conversations")
        assert [c["unread"] for c in before["conversations"]] == [1, 3] and before["total_unread"] == 4

        # bob reacts a lot to the older conversation; alice too (her own reactions read nothing)
        for emoji in ("👍", "😀", "🎉"):
            await bob.request("react", conv_id=to_bob["conv_id"], seq=to_bob["seq"], emoji=emoji)
        await alice.request("react", conv_id=to_bob["conv_id"], seq=2, emoji="👍")
        await until(lambda: len(_pushed(alice, "reaction")) == 3)

        after = await alice.request("conversations")
        keep = ("conv_id", "unread", "last_seq", "read_seq", "updated_at", "last_message")
        assert [{k: c[k] for k in keep} for c in after["conversations"]] == [
            {k: c[k] for k in keep} for c in before["conversations"]
        ]
        assert after["total_unread"] == 4
        assert after["conversations"][1]["reaction_ver"] == 4
        read = await alice.request("read", conv_id=to_bob["conv_id"], seq=4)
        assert (read["unread"], read["total_unread"]) == (0, 1)


async def test_reaction_flood_from_one_user_is_limited(make_server: MakeServer) -> None:
    server = await make_server(rate_react_per_user_s=1.0, rate_react_burst=5)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        sent = await _text(alice, "flood me", to=bob.user_id)
        outcomes: list[str] = []
        for i in range(40):
            try:
                await bob.request("react", conv_id=sent["conv_id"], seq=sent["seq"], emoji="👍", remove=bool(i % 2))
                outcomes.append("ok")
            except ProtocolError as exc:
                outcomes.append(exc.code)
        done = outcomes.count("ok")
        assert set(outcomes) == {"ok", "rate_limited"}
        assert 5 <= done <= 10  # the burst, and what refilled while the flood ran
        # alice's devices got exactly the reactions that were accepted, no more
        await until(lambda: len(_pushed(alice, "reaction")) == done)
        await asyncio.sleep(0.2)
        assert len(_pushed(alice, "reaction")) == done
        # bob's other requests are not limited by it
        assert (await bob.request("history", conv_id=sent["conv_id"]))["messages"]


async def test_read_fanout_group_reactions_write_nothing_per_member(make_server: MakeServer) -> None:
    server = await make_server(group_write_fanout_max=2)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol, dave = await _devices(http, ["alice", "bob", "carol", "dave"])
        group = await alice.request("group_create", name="big", members=[bob.user_id, carol.user_id, dave.user_id])
        gid = group["group"]["conv_id"]
        assert group["group"]["fanout"] == "read"
        sent = await _text(alice, "react to me", conv_id=gid)
        heads = {d.user_id: (await d.request("sync", since=0))["head"] for d in (alice, bob, carol, dave)}

        out = await bob.request("react", conv_id=gid, seq=sent["seq"], emoji="👍")
        assert out["inbox_seq"] == 0 and out["ver"] == 1
        await carol.request("react", conv_id=gid, seq=sent["seq"], emoji="👍")
        await until(lambda: len(_pushed(dave, "reaction")) == 2 and len(_pushed(alice, "reaction")) == 2)
        assert _pushed(dave, "reaction")[-1]["counts"] == [{"emoji": "👍", "count": 2}]
        # no inbox moved: the reactions are in the group, not in anyone's inbox
        for d in (alice, bob, carol, dave):
            page = await d.request("sync", since=0)
            assert page["head"] == heads[d.user_id]
            assert [g["reaction_ver"] for g in page["groups"] if g["conv_id"] == gid] == [2]
        pulled = await dave.request("reactions", conv_id=gid, after_ver=0)
        assert pulled == {
            "conv_id": gid,
            "messages": [
                {"seq": sent["seq"], "msg_id": sent["msg_id"], "reactions": [{"emoji": "👍", "count": 2, "me": False}]}
            ],
            "ver": 2,
            "has_more": False,
        }
        assert (await dave.request("reactions", conv_id=gid, after_ver=2))["messages"] == []


async def test_pins_policy_entries_and_limit(make_server: MakeServer) -> None:
    server = await make_server(pins_max=2)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        group = await alice.request("group_create", name="pins", members=[bob.user_id, carol.user_id])
        gid = group["group"]["conv_id"]
        assert group["group"]["pin_policy"] == "admins"
        msgs = [await _text(bob, f"m{i}", conv_id=gid) for i in range(3)]

        # by default only the owner and admins pin
        with pytest.raises(ProtocolError) as err:
            await bob.request("pin", conv_id=gid, seq=msgs[0]["seq"])
        assert err.value.code == "forbidden"
        pinned = await alice.request("pin", conv_id=gid, seq=msgs[0]["seq"])
        assert pinned["pinned"] and pinned["entry_seq"] == msgs[-1]["seq"] + 1
        # a system entry every member sees, in order with the chat
        await until(
            lambda: any(
                e["data"]["kind"] == "system" and e["data"]["body"]["event"] == "pinned"
                for e in carol.events
                if e["type"] == "message"
            )
        )
        entry = next(
            e["data"]
            for e in carol.events
            if e["type"] == "message" and e["data"]["kind"] == "system" and e["data"]["body"]["event"] == "pinned"
        )
        assert entry["body"] == {
            "event": "pinned",
            "actor": alice.user_id,
            "seq": msgs[0]["seq"],
            "msg_id": msgs[0]["msg_id"],
        }
        # pinning again is a no-op
        assert (await alice.request("pin", conv_id=gid, seq=msgs[0]["seq"]))["entry_seq"] is None

        # the owner lets members pin
        updated = await alice.request("group_update", conv_id=gid, pin_policy="members")
        assert updated["group"]["pin_policy"] == "members"
        await bob.request("pin", conv_id=gid, seq=msgs[1]["seq"])
        with pytest.raises(ProtocolError) as err:
            await bob.request("pin", conv_id=gid, seq=msgs[2]["seq"])
        assert err.value.code == "too_many_pins"
        conv = await carol.request("conversation", conv_id=gid)
        assert [(p["seq"], p["pinned_by"]) for p in conv["pinned"]] == [
            (msgs[1]["seq"], bob.user_id),
            (msgs[0]["seq"], alice.user_id),
        ]
        # pins never count as unread
        assert conv["unread"] == 3
        await carol.request("unpin", conv_id=gid, seq=msgs[0]["seq"])
        assert [p["seq"] for p in (await bob.request("conversation", conv_id=gid))["pinned"]] == [msgs[1]["seq"]]
        # system entries take no pins
        with pytest.raises(ProtocolError) as err:
            await alice.request("pin", conv_id=gid, seq=1)
        assert err.value.code == "bad_request"

        # one-to-one: both users pin
        direct = await _text(alice, "pin me", to=bob.user_id)
        await bob.request("pin", conv_id=direct["conv_id"], seq=direct["seq"])
        await alice.request("unpin", conv_id=direct["conv_id"], seq=direct["seq"])
        # over HTTP too
        r = await http.post(
            f"/api/v1/conversations/{direct['conv_id']}/pins",
            json={"seq": direct["seq"]},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert r.status == 200 and (await r.json())["pinned"]
        r = await http.post(
            f"/api/v1/conversations/{direct['conv_id']}/reactions",
            json={"seq": direct["seq"], "emoji": "👍"},
            headers={"Authorization": f"Bearer {bob.token}"},
        )
        assert r.status == 200 and (await r.json())["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]


async def test_offline_device_converges_on_reactions_and_pins(make_server: MakeServer) -> None:
    """Three devices of alice: the phone acts, the web stays online, the desktop is offline
    through it all. On sync the desktop shows exactly what the web shows, and the server."""
    server = await make_server(group_write_fanout_max=3)
    async with asyncio.timeout(90), aiohttp.ClientSession(server.url) as http:
        alice_phone, bob, carol, dave = await _devices(http, ["alice", "bob", "carol", "dave"])
        web = Device(http, await login(http, "alice", "web"))
        desktop = Device(http, await login(http, "alice", "desktop"))
        await web.connect()
        await desktop.connect()
        direct = await _text(bob, "direct", to=alice_phone.user_id)
        group = await alice_phone.request("group_create", name="g", members=[bob.user_id, carol.user_id, dave.user_id])
        gid, cid = group["group"]["conv_id"], direct["conv_id"]
        assert group["group"]["fanout"] == "read"
        g_msgs = [await _text(bob, f"g{i}", conv_id=gid) for i in range(3)]
        d_msgs = [direct] + [await _text(bob, f"d{i}", conv_id=cid) for i in range(2)]
        await until(lambda: len([n for n in web.notices if n["type"] == "group_message"]) >= 3)

        # the desktop holds everything so far, then goes offline
        events, groups = await desktop.sync_all()
        cursor = events[-1]["seq"]
        desktop_view, web_view = View(desktop.user_id), View(web.user_id)
        group_cursor = {g["conv_id"]: (g["last_seq"], g.get("reaction_ver", 0)) for g in groups}
        await desktop.close()
        seen_events, seen_notices = len(web.events), len(web.notices)

        # reactions and pins from everyone, alice's phone among them, adds and removes
        actions: list[tuple[Device, str, dict[str, Any]]] = []
        for msgs, conv in ((g_msgs, gid), (d_msgs, cid)):
            for i, m in enumerate(msgs):
                for d, emoji in ((bob, "👍"), (alice_phone, "👍"), (alice_phone, "❤️"), (carol, "🎉")):
                    if d is carol and conv == cid:
                        continue
                    actions.append((d, "react", {"conv_id": conv, "seq": m["seq"], "emoji": emoji}))
                if i == 1:
                    actions.append(
                        (alice_phone, "react", {"conv_id": conv, "seq": m["seq"], "emoji": "👍", "remove": True})
                    )
                    actions.append((bob, "react", {"conv_id": conv, "seq": m["seq"], "emoji": "🎉", "remove": True}))
            actions.append((alice_phone, "pin", {"conv_id": conv, "seq": msgs[0]["seq"]}))
            actions.append((alice_phone, "pin", {"conv_id": conv, "seq": msgs[2]["seq"]}))
            actions.append((alice_phone, "unpin", {"conv_id": conv, "seq": msgs[0]["seq"]}))
        for d, op, fields in actions:
            await d.request(op, **fields)
        ver = (await bob.request("reactions", conv_id=gid, after_ver=0))["ver"]

        # the online web device: what it was pushed
        def web_done() -> bool:
            pushed = web.events[seen_events:] + web.notices[seen_notices:]
            pins = [p for p in pushed if p["type"] in ("message", "group_message") and p["data"]["kind"] == "system"]
            last = [p for p in pushed if p["type"] == "reaction" and p["data"]["conv_id"] == gid]
            return len(pins) == 6 and bool(last) and last[-1]["data"]["ver"] == ver

        await until(web_done, timeout=20)
        # (events and notices are of different conversations here: their order is each one's own)
        for p in web.events[seen_events:] + web.notices[seen_notices:]:
            if p["type"] == "reaction":
                web_view.apply_reaction(p["data"])
            elif p["type"] in ("message", "group_message"):
                web_view.apply_entry(p["data"])

        # the desktop comes back: sync from its cursor, then pull what the group heads say
        desktop.events.clear()
        desktop.notices.clear()
        await desktop.connect()
        events, groups = await desktop.sync_all(cursor)
        for e in events:
            if e["type"] == "reaction":
                desktop_view.apply_reaction(e["data"])
            elif e["type"] == "message":
                desktop_view.apply_entry(e["data"])
        for g in groups:
            last_seq, reaction_ver = group_cursor[g["conv_id"]]
            for m in await desktop.pull(g["conv_id"], last_seq):
                desktop_view.apply_entry(m)
            after = reaction_ver
            while True:
                page = await desktop.request("reactions", conv_id=g["conv_id"], after_ver=after)
                for m in page["messages"]:
                    desktop_view.apply_pulled(g["conv_id"], m)
                after = page["ver"]
                if not page["has_more"]:
                    break
            assert after == g.get("reaction_ver", 0)

        truth = await _truth(web, [gid, cid])
        assert desktop_view.shown() == web_view.shown() == truth
        counts, mine, pinned = truth
        assert pinned == {gid: [g_msgs[2]["seq"]], cid: [d_msgs[2]["seq"]]}
        assert mine[(gid, g_msgs[0]["seq"])] == {"👍", "❤️"} and mine[(gid, g_msgs[1]["seq"])] == {"❤️"}
        assert counts[(gid, g_msgs[1]["seq"])] == {"👍": 1, "❤️": 1, "🎉": 1}


async def test_sdk_react_and_pin_reach_every_device_stream(server: NodeServer) -> None:
    """The SDK's typed calls; each device's event stream carries the reaction event, the
    reacting device's own included (its reply names the inbox seq: the client syncs it)."""
    async with asyncio.timeout(60), Chat(server.url) as chat:
        await chat.user("alice")
        bob_user = await chat.user("bob")
        phone, web = await chat.client("alice", "phone"), await chat.client("alice", "web")
        bob = await chat.client("bob", "phone")
        inboxes = [chat.inbox(c) for c in (phone, web, bob)]
        ack = await phone.send_text("react to me", to=bob_user.user_id)
        out = await bob.react(ack.conv_id, ack.seq, "👍")
        assert out.changed and out.reactions == [ReactionOut(emoji="👍", count=1, me=True)]
        pinned = await phone.pin(ack.conv_id, ack.seq)
        assert pinned.pinned and pinned.entry_seq == ack.seq + 1
        for inbox in inboxes:
            await inbox.wait_for(
                lambda inbox=inbox: (
                    any(isinstance(i.data, ReactionEvent) for i in inbox.items)
                    and any(m.kind == "system" for m in inbox.entries)
                )
            )
            event = next(i.data for i in inbox.items if isinstance(i.data, ReactionEvent))
            assert (event.user_id, event.emoji, event.op, event.ver) == (bob.user_id, "👍", "add", 1)
            assert [(c.emoji, c.count) for c in event.counts] == [("👍", 1)]
        assert (await phone.conversation(ack.conv_id)).pinned[0].seq == ack.seq
