"""Group chat over real connections: roles, fan-out switch under load, receipts, recall,
mentions, typing."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, make_users
from yim.node import NodeServer


async def _devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    devices = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in devices))
    return devices


def _messages_for(device: Device, conv_id: str) -> list[dict[str, Any]]:
    """Timeline entries of one conversation this device got pushed, by either fan-out."""
    got = [e["data"] for e in device.events if e["type"] == "message" and e["data"]["conv_id"] == conv_id]
    got += [n["data"] for n in device.notices if n["type"] == "group_message" and n["data"]["conv_id"] == conv_id]
    return got


async def _settle(devices: list[Device], conv_id: str, last_seq: int, timeout: float = 20.0) -> None:
    """Wait until every device got the entry at last_seq pushed (bounded). The connection
    that caused an entry gets no echo of it (its reply stands for it): give only others."""
    async with asyncio.timeout(timeout):
        while not all(any(m["seq"] == last_seq for m in _messages_for(d, conv_id)) for d in devices):
            await asyncio.sleep(0.02)


def _not_mine(device: Device, timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in timeline if m["sender_id"] != device.user_id]


async def test_roles_membership_and_system_entries(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol, dave = await _devices(http, ["alice", "bob", "carol", "dave"])
        created = await alice.request("group_create", name="团队", members=[bob.user_id, carol.user_id])
        gid = created["group"]["conv_id"]
        assert created["group"]["member_count"] == 3 and created["group"]["fanout"] == "write"
        assert created["seq"] == 1

        # A plain member cannot manage members; the owner promotes bob, who then can.
        with pytest.raises(ProtocolError) as err:
            await carol.request("group_remove", conv_id=gid, user_id=bob.user_id)
        assert err.value.code == "forbidden"
        await alice.request("group_role", conv_id=gid, user_id=bob.user_id, role="admin")
        await bob.request("group_invite", conv_id=gid, user_ids=[dave.user_id])
        removed = await bob.request("group_remove", conv_id=gid, user_id=carol.user_id)
        await _settle([alice, dave], gid, removed["seq"])

        # carol got her removal entry, then nothing more; she cannot speak or page past it.
        await _settle([carol], gid, removed["seq"])
        ack = await alice.request(
            "send", conv_id=gid, kind="text", body={"text": "after carol left"}, client_msg_id="a1"
        )
        await _settle([bob, dave], gid, ack["seq"])
        assert max(m["seq"] for m in _messages_for(carol, gid)) == removed["seq"]
        with pytest.raises(ProtocolError) as err:
            await carol.request("send", conv_id=gid, kind="text", body={"text": "hi"}, client_msg_id="c1")
        assert err.value.code == "not_member"
        page = await carol.request("history", conv_id=gid, after=0)
        assert page["messages"][-1]["seq"] == removed["seq"]

        # dave was invited by entry 3: he sees it and what follows, nothing before.
        dave_page = await dave.request("history", conv_id=gid)
        seqs = [m["seq"] for m in dave_page["messages"]]
        assert seqs == list(range(3, ack["seq"] + 1))
        kinds = [(m["kind"], m["body"].get("event")) for m in dave_page["messages"]]
        assert kinds[0] == ("system", "invited") and ("system", "removed") in kinds

        # Mute one member, then the whole group: admins still speak.
        await alice.request("group_mute", conv_id=gid, user_id=dave.user_id, duration_s=60)
        with pytest.raises(ProtocolError) as err:
            await dave.request("send", conv_id=gid, kind="text", body={"text": "x"}, client_msg_id="d1")
        assert err.value.code == "muted"
        await alice.request("group_mute", conv_id=gid, user_id=dave.user_id, duration_s=0)
        await alice.request("group_update", conv_id=gid, mute_all=True, announcement="公告")
        with pytest.raises(ProtocolError) as err:
            await dave.request("send", conv_id=gid, kind="text", body={"text": "x"}, client_msg_id="d2")
        assert err.value.code == "muted"
        await bob.request("send", conv_id=gid, kind="text", body={"text": "admin speaks"}, client_msg_id="b1")

        # Ownership: the owner cannot leave before transferring; after it they can.
        with pytest.raises(ProtocolError) as err:
            await alice.request("group_leave", conv_id=gid)
        assert err.value.code == "forbidden"
        info = await alice.request("group_role", conv_id=gid, user_id=bob.user_id, role="owner")
        assert info["group"]["owner_id"] == bob.user_id
        await alice.request("group_leave", conv_id=gid)
        members = await bob.request("group_members", conv_id=gid)
        assert {m["user_id"]: m["role"] for m in members["members"]} == {bob.user_id: "owner", dave.user_id: "member"}

        # System entries never count as unread.
        convs = await dave.request("conversations")
        entry = next(c for c in convs["conversations"] if c["conv_id"] == gid)
        assert entry["type"] == "group" and entry["name"] == "团队"
        # alice's and bob's texts; the invite, remove, mute, update and role entries are not counted
        assert entry["unread"] == 2

        dissolved = await bob.request("group_dissolve", conv_id=gid)
        assert dissolved["group"]["dissolved"] is True
        with pytest.raises(ProtocolError) as err:
            await dave.request("send", conv_id=gid, kind="text", body={"text": "x"}, client_msg_id="d3")
        assert err.value.code == "group_dissolved"
        for d in (alice, bob, carol, dave):
            await d.close()


async def test_600_members_cross_the_fanout_threshold_while_messages_flow(make_server: Any) -> None:
    server: NodeServer = await make_server(group_write_fanout_max=500)
    async with aiohttp.ClientSession(server.url, connector=aiohttp.TCPConnector(limit=0)) as http:
        devices = await _devices(http, [f"m{i:03d}" for i in range(600)])
        owner, talker = devices[0], devices[1]
        created = await owner.request("group_create", name="big", members=[d.user_id for d in devices[1:400]])
        gid = created["group"]["conv_id"]
        assert created["group"]["fanout"] == "write"

        counter = itertools.count()

        async def talk(device: Device, n: int) -> None:
            for _ in range(n):
                i = next(counter)
                await device.request("send", conv_id=gid, kind="text", body={"text": f"msg {i}"}, client_msg_id=f"c{i}")
                await asyncio.sleep(0.002)

        async def grow() -> None:
            for start in range(400, 600, 50):
                await asyncio.sleep(0.03)
                await owner.request(
                    "group_invite", conv_id=gid, user_ids=[d.user_id for d in devices[start : start + 50]]
                )

        async with asyncio.timeout(60):
            await asyncio.gather(talk(owner, 40), talk(talker, 40), grow())
        info = await owner.request("group_info", conv_id=gid)
        assert info["fanout"] == "read" and info["member_count"] == 600
        last = info["last_seq"]
        timeline = await owner.pull(gid, 0)
        await _settle([d for d in devices if d.user_id != timeline[-1]["sender_id"]], gid, last, timeout=30)

        assert [m["seq"] for m in timeline] == list(range(1, last + 1))
        joined = {}
        after = None
        while True:
            page = await owner.request("group_members", conv_id=gid, limit=1000, **({"after": after} if after else {}))
            joined.update({m["user_id"]: m["joined_seq"] for m in page["members"]})
            if not page["next_after"]:
                break
            after = page["next_after"]
        assert len(joined) == 600

        for d in devices:
            got = _messages_for(d, gid)
            counts = Counter(m["seq"] for m in got)
            assert max(counts.values()) == 1, f"duplicate delivery to {d.user_id}"
            expected = _not_mine(d, [m for m in timeline if m["seq"] > joined[d.user_id]])
            assert sorted(got, key=lambda m: m["seq"]) == expected

        # A device catching up from nothing: inbox up to the switch, then the group timeline.
        late = devices[450]
        events, heads = await late.sync_all()
        head = next(h for h in heads if h["conv_id"] == gid)
        via_inbox = [e["data"] for e in events if e["type"] == "message" and e["data"]["conv_id"] == gid]
        pulled = await late.pull(gid, head["from_seq"])
        caught_up = via_inbox + [m for m in pulled if m["seq"] > (via_inbox[-1]["seq"] if via_inbox else 0)]
        assert caught_up == [m for m in timeline if m["seq"] > joined[late.user_id]]
        await asyncio.gather(*(d.close() for d in devices))


async def test_receipts_and_recall_reach_devices_that_were_offline(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        acks = [
            await alice.request("send", to=bob.user_id, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}")
            for i in range(3)
        ]
        conv = acks[0]["conv_id"]
        await alice.close()
        # Bob reads while alice is offline; alice learns it by sync.
        await bob.request("read", conv_id=conv, seq=acks[1]["seq"])
        await bob.close()
        await alice.connect()
        events, _ = await alice.sync_all()
        receipts = [e["data"] for e in events if e["type"] == "receipt"]
        assert receipts == [{"conv_id": conv, "user_id": bob.user_id, "read_seq": 2}]
        one = await alice.request("conversation", conv_id=conv)
        assert (one["conv_id"], one["peer_read_seq"], one["unread"]) == (conv, 2, 0)

        # Alice recalls her unread third message while bob is offline.
        recall = await alice.request("recall", conv_id=conv, seq=acks[2]["seq"])
        assert recall["recall_seq"] == 4
        await bob.connect()
        events, _ = await bob.sync_all()
        entries = [e["data"] for e in events if e["type"] == "message"]
        assert entries[-1]["kind"] == "recall" and entries[-1]["body"] == {"seq": 3, "msg_id": acks[2]["msg_id"]}
        history = await bob.request("history", conv_id=conv)
        third = next(m for m in history["messages"] if m["seq"] == 3)
        assert third["recalled"] is True and third["body"] == {}
        convs = await bob.request("conversations")
        assert convs["conversations"][0]["unread"] == 0 and convs["total_unread"] == 0
        with pytest.raises(ProtocolError) as err:
            await bob.request("recall", conv_id=conv, seq=1)
        assert err.value.code == "forbidden"
        with pytest.raises(ProtocolError) as err:
            await alice.request("recall", conv_id=conv, seq=3)
        assert err.value.code == "already_recalled"

        # Group receipts: read by k of n, and who.
        carol, dave = await _devices(http, ["carol", "dave"])
        g = await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id, dave.user_id])
        gid = g["group"]["conv_id"]
        ack = await alice.request("send", conv_id=gid, kind="text", body={"text": "read me"}, client_msg_id="g1")
        await carol.request("read", conv_id=gid, seq=ack["seq"])
        r = await alice.request("receipts", conv_id=gid, seq=ack["seq"])
        assert (r["read_count"], r["total"], r["readers"]) == (1, 3, [carol.user_id])
        for d in (alice, bob, carol, dave):
            await d.close()


async def test_recall_time_limit(make_server: Any) -> None:
    server: NodeServer = await make_server(recall_limit_s=0)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": "x"}, client_msg_id="x")
        await asyncio.sleep(0.01)
        with pytest.raises(ProtocolError) as err:
            await alice.request("recall", conv_id=ack["conv_id"], seq=ack["seq"])
        assert err.value.code == "recall_expired"
        await alice.close()
        await bob.close()


async def test_mentions_and_typing(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        g = await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id])
        gid = g["group"]["conv_id"]
        with pytest.raises(ProtocolError) as err:
            await bob.request(
                "send", conv_id=gid, kind="text", body={"text": "@all"}, client_msg_id="b0", mention_all=True
            )
        assert err.value.code == "forbidden"
        ack = await bob.request(
            "send", conv_id=gid, kind="text", body={"text": "@carol hi"}, client_msg_id="b1", mentions=[carol.user_id]
        )
        convs = {c["conv_id"]: c for c in (await carol.request("conversations"))["conversations"]}
        assert convs[gid]["mentioned"] is True
        alice_convs = {c["conv_id"]: c for c in (await alice.request("conversations"))["conversations"]}
        assert alice_convs[gid]["mentioned"] is False
        await carol.request("read", conv_id=gid, seq=ack["seq"])
        convs = {c["conv_id"]: c for c in (await carol.request("conversations"))["conversations"]}
        assert convs[gid]["mentioned"] is False

        assert (await alice.request("typing", conv_id=gid))["forwarded"] is True
        assert (await alice.request("typing", conv_id=gid))["forwarded"] is False  # rate-limited
        async with asyncio.timeout(5):
            while not any(n["type"] == "typing" for n in bob.notices + carol.notices):
                await asyncio.sleep(0.01)
            while not all(any(n["type"] == "typing" for n in d.notices) for d in (bob, carol)):
                await asyncio.sleep(0.01)
        assert not any(n["type"] == "typing" for n in alice.notices)
        # bob's typing notices, not his last notice of any type: his own presence notice comes
        # a debounce after he connected, before or after this one
        assert [n["data"] for n in bob.notices if n["type"] == "typing"] == [{"conv_id": gid, "user_id": alice.user_id}]
        for d in (alice, bob, carol):
            await d.close()
