"""Read-fan-out groups through the SDK against a real node: every member's event stream
carries the group timeline from their join, once and in order, whether they stayed online,
lost their connection mid-stream, came back after being away, or are a new device."""

from __future__ import annotations

import asyncio
from typing import Any

from yim.client import Client, GroupItem
from yim.node import NodeServer
from yim.protocol.frames import MessageOut

from .sdk_helpers import Chat, Inbox, history_of, reconnected


def _keys(messages: list[MessageOut]) -> list[tuple[str, str, int, str, Any]]:
    """Entries as comparable tuples. A message recalled after it was delivered still has its
    body on the device that got it live (the later recall entry says to hide it), while
    a pull after the recall reads it empty: compare those by identity only."""
    recalled = {m.body["msg_id"] for m in messages if m.kind == "recall"}
    return [(m.msg_id, m.conv_id, m.seq, m.kind, None if m.msg_id in recalled else m.body) for m in messages]


async def _caught_up(inbox: Inbox, conv_id: str, last_seq: int, timeout: float = 20.0) -> list[MessageOut]:
    await inbox.wait_for(lambda: any(m.seq >= last_seq for m in inbox.timeline(conv_id)), timeout)
    return inbox.timeline(conv_id)


async def _expected(client: Client, conv_id: str) -> list[tuple[str, str, int, str, Any]]:
    """What the member may see of the group, by the server's own window."""
    return _keys(await history_of(client, conv_id))


async def test_read_fanout_group_timeline_reaches_every_member_once_and_in_order(make_server: Any) -> None:
    server: NodeServer = await make_server(group_write_fanout_max=3)
    async with asyncio.timeout(60), Chat(server.url) as chat:
        users = {name: await chat.user(name) for name in ("owner", "talker", "online", "flaky", "away", "late")}
        owner = await chat.client("owner", "desktop")
        talker = await chat.client("talker", "desktop")
        online = await chat.client("online", "desktop", format="msgpack")
        flaky = await chat.client("flaky", "desktop")
        away = await chat.client("away", "desktop")
        inboxes = {name: chat.inbox(c) for name, c in (("owner", owner), ("online", online), ("flaky", flaky))}
        away_inbox = chat.inbox(away)

        # Three members: write fan-out. Then the invite that makes five switches it to read fan-out.
        created = await owner.call(
            "group_create", name="大群", members=[users["online"].user_id, users["flaky"].user_id]
        )
        gid = created["group"]["conv_id"]
        assert created["group"]["fanout"] == "write"
        await owner.send_text("写扩散的消息", conv_id=gid)
        invited = await owner.call(
            "group_invite", conv_id=gid, user_ids=[users["talker"].user_id, users["away"].user_id]
        )
        assert invited["group"]["fanout"] == "read"

        # Both talk at once; flaky's socket is cut twice mid-stream; away leaves after a while.
        async def talk(client: Client, tag: str, n: int) -> None:
            for i in range(n):
                await client.send_text(f"{tag} 第{i}条", conv_id=gid)
                await asyncio.sleep(0.002)

        async def disturb() -> tuple[int, dict[str, int]]:
            for drop in range(2):
                await reconnected(flaky, drop)
                await asyncio.sleep(0.05)
                flaky.drop_connection()
            await asyncio.sleep(0.05)
            await away.sync_now()
            saved = (away.cursor, dict(away.group_cursors))
            await away.close()
            return saved

        results = await asyncio.gather(talk(owner, "owner", 60), talk(talker, "talker", 60), disturb())
        away_cursor, away_groups = results[2]
        assert gid in away_groups and away_groups[gid] >= invited["seq"]

        # A member joins late, recall and a settings change happen under read fan-out.
        joined = await owner.call("group_invite", conv_id=gid, user_ids=[users["late"].user_id])
        assert joined["inbox_seq"] == 0
        ack = await talker.send_text("要撤回的", conv_id=gid)
        await talker.call("recall", conv_id=gid, seq=ack.seq)
        await owner.call("group_update", conv_id=gid, announcement="新公告")
        last = await owner.send_text("最后一条 👋", conv_id=gid)

        # A member who was away comes back with both stored cursors; a new device starts from 0.
        back = await chat.connect(away.token, cursor=away_cursor, group_cursors=away_groups)
        back_inbox = chat.inbox(back)
        late = await chat.client("late", "desktop")
        late_inbox = chat.inbox(late)

        for name, inbox in (*inboxes.items(), ("back", back_inbox), ("late", late_inbox)):
            got = await _caught_up(inbox, gid, last.seq)
            seqs = [m.seq for m in got]
            assert seqs == sorted(set(seqs)), f"{name}: out of order or repeated: {seqs}"
        assert flaky.connects == 3 and flaky.group_pulls >= 1

        for name, client, inbox in (
            ("owner", owner, inboxes["owner"]),
            ("online", online, inboxes["online"]),
            ("flaky", flaky, inboxes["flaky"]),
            ("late", late, late_inbox),
        ):
            await client.sync_now()
            assert _keys(inbox.timeline(gid)) == await _expected(client, gid), name

        # away's two lives together are the whole timeline, the second starting where the first stopped.
        await back.sync_now()
        # The first life as it saved its cursors: a push that came between the save and the
        # close was applied in memory but is not in what it saved (the second life gets it).
        first = [m for m in away_inbox.timeline(gid) if m.seq <= away_groups[gid]]
        second = back_inbox.timeline(gid)
        assert second and second[0].seq == away_groups[gid] + 1
        assert _keys(first + second) == await _expected(back, gid)

        # Entries after the switch came as group entries; before it, through the inbox.
        online_inbox = inboxes["online"]
        assert all(g.seq > invited["seq"] for g in online_inbox.group_items if g.conv_id == gid)
        assert [m.seq for m in online_inbox.messages(gid)] == list(range(1, invited["seq"] + 1))
        # The recalled message reads as recalled to whoever pulled it after the recall.
        recalled = next(m for m in late_inbox.timeline(gid) if m.seq == ack.seq)
        assert recalled.recalled and recalled.body == {}
        assert late.group_cursors[gid] == last.seq == owner.group_cursors[gid]


async def test_new_group_from_head_and_removal(make_server: Any) -> None:
    """A group with read fan-out from its first entry: a member's stream has it from the
    `created` entry on. A device started from the head gets only what follows. A removed
    member gets everything up to the removal once, then the group is forgotten."""
    server: NodeServer = await make_server(group_write_fanout_max=3)
    async with asyncio.timeout(30), Chat(server.url) as chat:
        users = {name: await chat.user(name) for name in ("ann", "bob", "cat", "dan")}
        a = await chat.client("ann", "desktop")
        b = await chat.client("bob", "desktop")
        inbox = chat.inbox(b)
        created = await a.call("group_create", name="g", members=[users[n].user_id for n in ("bob", "cat", "dan")])
        gid = created["group"]["conv_id"]
        assert created["group"]["fanout"] == "read"
        before = [await a.send_text(f"前{i}", conv_id=gid) for i in range(3)]
        got = await _caught_up(inbox, gid, before[-1].seq)
        assert [m.seq for m in got] == list(range(1, before[-1].seq + 1))
        assert got[0].kind == "system" and got[0].body["event"] == "created"
        assert [type(i) for i in inbox.group_items] == [GroupItem] * len(got)

        fresh = await chat.client("bob", "laptop", cursor=None)
        fresh_inbox = chat.inbox(fresh)
        assert fresh.group_cursors == {gid: before[-1].seq}
        after = await a.send_text("后", conv_id=gid)
        assert [m.seq for m in await _caught_up(fresh_inbox, gid, after.seq)] == [after.seq]

        # b's laptop goes away; b is removed meanwhile; it comes back and gets the rest once.
        saved = (fresh.cursor, dict(fresh.group_cursors))
        await fresh.close()
        more = await a.send_text("再", conv_id=gid)
        removed = await a.call("group_remove", conv_id=gid, user_id=users["bob"].user_id)
        await a.send_text("bob 看不到", conv_id=gid)
        back = await chat.connect(fresh.token, cursor=saved[0], group_cursors=saved[1])
        back_inbox = chat.inbox(back)
        got = await _caught_up(back_inbox, gid, removed["seq"])
        assert [m.seq for m in got] == [more.seq, removed["seq"]]
        assert got[-1].body["event"] == "removed"
        await back.sync_now()
        assert gid not in back.group_cursors
        assert len(back_inbox.timeline(gid)) == 2
