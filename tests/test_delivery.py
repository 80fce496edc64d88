"""One-to-one delivery through the SDK against a real node: ordering across reconnects,
no loss and no duplicates across receiver drops, merging pushes that race the sync,
gap-triggered sync, idempotent resends, endpoint failover."""

from __future__ import annotations

import asyncio
import socket

from yim.client import Client, HttpApi
from yim.node import NodeServer
from yim.protocol.frames import MessageOut, SendAck

from .sdk_helpers import Chat, history_of, login_device, reconnected


def texts(messages: list[MessageOut]) -> list[str]:
    return [m.body["text"] for m in messages]


async def test_thousand_messages_keep_order_across_sender_reconnects(server: NodeServer) -> None:
    """1,000 pipelined sends; the sender's socket is cut three times while sends are in
    flight. The receiver gets all 1,000 in order, each exactly once."""
    async with asyncio.timeout(60), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        inbox = chat.inbox(await chat.client("bob", "phone", format="msgpack"))
        tasks: list[asyncio.Task[SendAck]] = []
        for batch in range(4):
            await reconnected(alice, batch)
            for i in range(batch * 250, (batch + 1) * 250):
                tasks.append(asyncio.create_task(alice.send_text(f"m{i:04d}", to=bob.user_id)))
            if batch < 3:
                # One loop turn lets every new task write its frame (no timing involved);
                # then the socket dies under them, their replies unread.
                await asyncio.sleep(0)
                alice.drop_connection()
        acks = await asyncio.gather(*tasks)
        assert alice.connects == 4 and alice.resent >= 3
        assert [a.seq for a in acks] == list(range(1, 1001))  # send order == timeline order
        assert len({a.msg_id for a in acks}) == 1000

        await inbox.wait_messages(1000)
        await inbox.client.sync_now()
        got = inbox.messages()
        assert texts(got) == [f"m{i:04d}" for i in range(1000)]
        assert [m.seq for m in got] == list(range(1, 1001))
        assert [m.msg_id for m in got] == [a.msg_id for a in acks]

        timeline = await history_of(alice, acks[0].conv_id)
        assert texts(timeline) == [f"m{i:04d}" for i in range(1000)]
        assert [m.seq for m in timeline] == list(range(1, 1001))
        # The sender's cursor covers its own messages: the replies stand for their events.
        await alice.sync_now()
        assert alice.cursor == 1000


async def test_receiver_drops_mid_stream_and_resyncs_without_loss_or_duplicates(server: NodeServer) -> None:
    async with asyncio.timeout(60), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        receiver = await chat.client("bob", "laptop")
        inbox = chat.inbox(receiver)
        total = 600
        drops = 0
        for chunk in range(total // 50):
            await asyncio.gather(
                *(alice.send_text(f"m{i:04d}", to=bob.user_id) for i in range(chunk * 50, chunk * 50 + 50))
            )
            if chunk in (2, 5, 8):
                # cut the receiver while the stream goes on: what is pushed meanwhile is lost
                # to it and must come back through sync
                await reconnected(receiver, drops)
                receiver.drop_connection()
                drops += 1
        got = await inbox.wait_messages(total)
        assert texts(got) == [f"m{i:04d}" for i in range(total)]
        assert [i.seq for i in inbox.items] == list(range(1, total + 1))
        await reconnected(receiver, drops)
        await receiver.wait_synced()
        assert receiver.connects == 4 and receiver.syncs >= 4

        # A device that goes away entirely and comes back with its stored cursor gets
        # exactly what it lacks.
        cursor = receiver.cursor
        assert cursor == total
        await receiver.close()
        more = [await alice.send_text(f"later{i}", to=bob.user_id) for i in range(20)]
        again = await chat.connect(receiver.token, cursor=cursor)
        inbox2 = chat.inbox(again)
        later = await inbox2.wait_messages(20)
        assert texts(later) == [f"later{i}" for i in range(20)]
        assert [m.msg_id for m in later] == [a.msg_id for a in more]
        assert [i.seq for i in inbox2.items] == list(range(cursor + 1, cursor + 21))


async def test_pushes_during_initial_sync_are_merged_by_seq(server: NodeServer) -> None:
    """Bob connects with a backlog of 400 and a small sync page while alice keeps sending:
    pushes race the paged sync and are merged by seq, with nothing lost or repeated."""
    async with asyncio.timeout(60), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        backlog = await asyncio.gather(*(alice.send_text(f"m{i:04d}", to=bob.user_id) for i in range(400)))
        assert backlog[-1].seq == 400
        session = await login_device(server.url, "bob", "tablet")
        live = asyncio.gather(*(alice.send_text(f"m{i:04d}", to=bob.user_id) for i in range(400, 600)))
        receiver = await chat.connect(session.token, sync_limit=10)
        inbox = chat.inbox(receiver)
        await live
        got = await inbox.wait_messages(600)
        assert texts(got) == [f"m{i:04d}" for i in range(600)]
        assert [i.seq for i in inbox.items] == list(range(1, 601))
        assert receiver.syncs >= 40


async def test_a_gap_in_pushed_seqs_triggers_a_sync_of_the_missing_range(server: NodeServer) -> None:
    """A read marked with the raw op (not through ``mark_read``) leaves this device without
    its own ``read`` event; the next push skips that seq, and the client syncs the hole."""
    async with asyncio.timeout(30), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        receiver = await chat.client("bob", "phone")
        inbox = chat.inbox(receiver)
        first = await alice.send_text("one", to=bob.user_id)
        await inbox.wait_messages(1)
        result = await receiver.call("read", catch_up=False, conv_id=first.conv_id, seq=first.seq)
        assert result["inbox_seq"] == 2 and receiver.cursor == 1
        gaps = receiver.gaps
        await alice.send_text("two", to=bob.user_id)
        await inbox.wait_for(lambda: len(inbox.items) == 3)
        assert [(i.seq, i.type) for i in inbox.items] == [(1, "message"), (2, "read"), (3, "message")]
        assert receiver.gaps == gaps + 1
        assert receiver.cursor == 3


async def test_resend_with_the_same_client_msg_id_is_idempotent(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        receiver = await chat.client("bob", "phone")
        inbox = chat.inbox(receiver)
        first = await alice.send(to=bob.user_id, body={"text": "once"}, client_msg_id="cmid-1")
        assert not first.duplicate
        again = await alice.send(to=bob.user_id, body={"text": "once"}, client_msg_id="cmid-1")
        assert again.duplicate
        assert (again.msg_id, again.seq, again.inbox_seq) == (first.msg_id, first.seq, first.inbox_seq)
        # ... also on a new connection of the device, addressed by conv_id,
        alice.drop_connection()
        third = await alice.send(conv_id=first.conv_id, body={"text": "once"}, client_msg_id="cmid-1")
        assert third.duplicate and third.msg_id == first.msg_id
        # ... and over HTTP.
        async with HttpApi(server.url, alice.token) as api:
            body = {"to": bob.user_id, "kind": "text", "body": {"text": "once"}, "client_msg_id": "cmid-1"}
            data = await api.request("POST", "/api/v1/messages", body=body, type_=SendAck)
            assert data.duplicate and data.msg_id == first.msg_id
        await alice.send_text("after", to=bob.user_id)
        timeline = await history_of(alice, first.conv_id)
        assert texts(timeline) == ["once", "after"]
        assert [m.seq for m in timeline] == [1, 2]
        assert texts(await inbox.wait_messages(2)) == ["once", "after"]
        await receiver.sync_now()
        assert len(inbox.messages()) == 2 and [i.seq for i in inbox.items] == [1, 2]


async def test_client_moves_to_the_next_endpoint_when_one_is_down(server: NodeServer) -> None:
    # A port bound and not listening: connecting is refused, and no other process (the other
    # test group starts servers too) can take it meanwhile, as it could a port chosen and freed.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{held.getsockname()[1]}"
        async with asyncio.timeout(30), Chat([dead, server.url]) as chat:
            bob = await chat.user("bob")
            await chat.user("alice")
            alice = await chat.client("alice", "phone")
            assert alice.endpoint.http == server.url
            ack = await alice.send_text("hi", to=bob.user_id)
            assert ack.seq == 1
            devices = await alice.devices()
            assert [d.device_id for d in devices] == ["phone"] and devices[0].online and devices[0].current


def test_endpoint_urls_are_normalised() -> None:
    from yim.client import parse_endpoint

    assert parse_endpoint("http://h:1") == ("http://h:1", "ws://h:1/ws")
    assert parse_endpoint("https://h:1/") == ("https://h:1", "wss://h:1/ws")
    assert parse_endpoint("ws://h:1/ws") == ("http://h:1", "ws://h:1/ws")
    assert parse_endpoint("wss://h/im/ws") == ("https://h/im", "wss://h/im/ws")
    assert Client("http://h:1", "t").endpoint.ws == "ws://h:1/ws"
