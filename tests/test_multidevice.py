"""Several devices of one user converge: same inbox timeline, same history, same read
markers and unread counts (per conversation and total), whichever device acted."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from yim import node as node_module
from yim.client import Client
from yim.node import NodeServer
from yim.protocol.frames import ReadMarker

from .conftest import MakeServer
from .rawclient import Device, make_users, until
from .sdk_helpers import Chat, derived_unread, history_of, list_view, reconnected, timeline_key


async def test_three_devices_converge_on_history_reads_and_unread_counts(server: NodeServer) -> None:
    async with asyncio.timeout(60), Chat(server.url) as chat:
        alice = await chat.user("alice")
        await chat.user("bob")
        await chat.user("carol")
        devices = {name: await chat.client("alice", name) for name in ("phone", "web", "desktop")}
        inboxes = {name: chat.inbox(c) for name, c in devices.items()}
        bob = await chat.client("bob", "phone")
        carol = await chat.client("carol", "phone", format="msgpack")

        # alice writes first from her phone; the other two devices are pushed her messages
        own = [await devices["phone"].send_text(f"a{i}", to=bob.user_id) for i in range(5)]
        conv_bob = own[0].conv_id
        # then bob and carol write at once, while the desktop loses its connection twice
        stream = asyncio.gather(
            *(bob.send_text(f"b{i}", to=alice.user_id) for i in range(30)),
            *(carol.send_text(f"c{i}", to=alice.user_id) for i in range(20)),
        )
        for drop in range(2):
            await reconnected(devices["desktop"], drop)
            devices["desktop"].drop_connection()
        acks = await stream
        conv_carol = acks[-1].conv_id
        for inbox in inboxes.values():
            await inbox.wait_for(lambda inbox=inbox: len(inbox.items) == 55)

        # one device reads, the others learn it by a pushed `read` event
        result = await devices["phone"].mark_read(conv_bob, 20)
        assert (result.read_seq, result.unread, result.total_unread) == (20, 15, 35)
        result = await devices["web"].mark_read(conv_carol, 20)
        assert (result.read_seq, result.unread, result.total_unread) == (20, 0, 15)
        # marking read again, or behind the marker, changes nothing and writes no event
        result = await devices["desktop"].mark_read(conv_bob, 3)
        assert (result.read_seq, result.unread, result.total_unread) == (20, 15, 15)
        for inbox in inboxes.values():
            await inbox.wait_for(lambda inbox=inbox: len(inbox.items) == 57)

        timelines = {name: [timeline_key(i) for i in inbox.items] for name, inbox in inboxes.items()}
        assert timelines["phone"] == timelines["web"] == timelines["desktop"]
        assert [k[0] for k in timelines["phone"]] == list(range(1, 58))
        assert [k[1] for k in timelines["phone"][-2:]] == ["read", "read"]

        pages = {name: await c.conversations() for name, c in devices.items()}
        views = {name: list_view(p) for name, p in pages.items()}
        assert views["phone"] == views["web"] == views["desktop"]
        page = pages["phone"]
        assert page.total_unread == sum(c.unread for c in page.conversations) == 15
        assert all(c.unread == c.last_seq - c.read_seq for c in page.conversations)
        assert {c.conv_id: c.unread for c in page.conversations} == {conv_bob: 15, conv_carol: 0}
        for inbox in inboxes.values():
            assert derived_unread(inbox.items, alice.user_id) == {conv_bob: 15, conv_carol: 0}

        # every device's messages per conversation are exactly the conversation's history
        for conv in (conv_bob, conv_carol):
            history = [(m.msg_id, m.seq) for m in await history_of(bob if conv == conv_bob else carol, conv)]
            assert [s for _, s in history] == list(range(1, len(history) + 1))
            for inbox in inboxes.values():
                assert [(m.msg_id, m.seq) for m in inbox.messages(conv)] == history

        # a fourth device that logs in later starts from cursor 0 and lands in the same place
        late = await chat.client("alice", "tablet")
        late_inbox = chat.inbox(late)
        await late_inbox.wait_for(lambda: len(late_inbox.items) == 57)
        assert [timeline_key(i) for i in late_inbox.items] == timelines["phone"]
        assert list_view(await late.conversations()) == views["phone"]
        assert all(c.cursor == 57 for c in (*devices.values(), late))


async def test_device_that_was_offline_catches_up_reads_made_elsewhere(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat:
        alice = await chat.user("alice")
        await chat.user("bob")
        phone = await chat.client("alice", "phone")
        laptop = await chat.client("alice", "laptop")
        bob = await chat.client("bob", "phone")
        acks = [await bob.send_text(f"b{i}", to=alice.user_id) for i in range(10)]
        conv = acks[0].conv_id
        await laptop.sync_now()
        token, cursor = laptop.token, laptop.cursor
        await laptop.close()
        await phone.mark_read(conv, 10)
        await bob.send_text("more", to=alice.user_id)
        back: Client = await chat.connect(token, cursor=cursor)
        inbox = chat.inbox(back)
        await inbox.wait_for(lambda: len(inbox.items) == 2)
        assert [i.type for i in inbox.items] == ["read", "message"]
        assert inbox.reads() == [ReadMarker(conv_id=conv, read_seq=10)]
        page = await back.conversations()
        assert page.total_unread == 1 and page.conversations[0].unread == 1
        assert derived_unread(inbox.items, alice.user_id) == {conv: 11 - 10}


async def test_an_idle_device_is_not_rewritten_every_turn_but_a_moving_cursor_is(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last-seen rows of connected devices: written when the delivery cursor moves, and
    otherwise only every few minutes — not once per flush turn for every connection."""
    monkeypatch.setattr(node_module, "_SEEN_FLUSH_S", 0.05)
    server = await make_server()
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = (Device(http, x) for x in await make_users(http, ["alice", "bob"]))

        async def row() -> tuple[int, int]:
            [device] = await server.node.store.list_devices(int(bob.user_id))
            return device.last_seen_at, device.acked_seq

        logged_in = await row()
        await bob.connect()
        # A flush turn writes the new connection once (a later last-seen than the login's).
        # Awaited, not slept on: a loaded machine may run the first turn late, and a write
        # landing after `settled` was read would look like an idle device rewritten.
        async with asyncio.timeout(10):
            while (settled := await row())[0] <= logged_in[0]:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # ten more turns
        assert await row() == settled
        await alice.connect()
        await alice.request("send", to=bob.user_id, kind="text", body={"text": "hi"}, client_msg_id="m1")
        await until(lambda: bool(bob.events))
        seq = bob.events[-1]["seq"]
        await bob.request("ack", seq=seq)
        async with asyncio.timeout(10):
            while (now := await row())[1] != seq:
                await asyncio.sleep(0.05)
        assert now[0] >= settled[0]
        await alice.close()
        await bob.close()
