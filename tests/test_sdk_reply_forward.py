"""Replies, forwards and custom messages through the SDK against a real node: the sending
device's own stream carries its reply and its forwarded copies as the server stored them
(quote, forwarded), once each, in a one-to-one conversation and a read-fan-out group."""

from __future__ import annotations

import asyncio
from typing import Any

from yim.node import NodeServer
from yim.protocol.frames import ForwardTarget

from .sdk_helpers import Chat


async def test_sdk_reply_forward_and_custom(make_server: Any) -> None:
    server: NodeServer = await make_server(group_write_fanout_max=2)
    async with asyncio.timeout(60), Chat(server.url) as chat:
        users = {name: await chat.user(name) for name in ("ann", "bob", "cat")}
        a = await chat.client("ann", "desktop")
        b = await chat.client("bob", "desktop")
        a_inbox, b_inbox = chat.inbox(a), chat.inbox(b)

        first = await a.send_text("周五聚餐?", to=users["bob"].user_id)
        conv = first.conv_id
        reply = await b.send(conv_id=conv, kind="text", body={"text": "好"}, reply_to=first.seq)
        quote = {
            "seq": 1,
            "msg_id": first.msg_id,
            "sender_id": users["ann"].user_id,
            "kind": "text",
            "excerpt": "周五聚餐?",
        }
        # Both devices' streams carry the reply as stored, quote included; the sender's once.
        for inbox in (a_inbox, b_inbox):
            await inbox.wait_for(lambda inbox=inbox: any(m.seq == reply.seq for m in inbox.timeline(conv)))
            mine = [m for m in inbox.timeline(conv) if m.seq == reply.seq]
            assert len(mine) == 1 and mine[0].body == {"text": "好", "quote": quote}

        order = {"type": "order", "data": {"id": 7}, "text": "订单 7"}
        custom = await a.send(conv_id=conv, kind="custom", body=order)
        await b_inbox.wait_for(lambda: any(m.seq == custom.seq for m in b_inbox.timeline(conv)))
        assert b_inbox.timeline(conv)[-1].kind == "custom" and b_inbox.timeline(conv)[-1].body == order

        # A read-fan-out group (over 2 members): the forwarder's own stream gets the copies.
        created = await b.call("group_create", name="g", members=[users["ann"].user_id, users["cat"].user_id])
        gid = created["group"]["conv_id"]
        assert created["group"]["fanout"] == "read"
        out = await b.forward(conv, [first.seq, custom.seq], [ForwardTarget(client_msg_id="fw", conv_id=gid)])
        seqs = [ack.seq for ack in out.results[0].sent]
        assert seqs == [2, 3] and out.results[0].error is None
        for inbox in (a_inbox, b_inbox):
            await inbox.wait_for(lambda inbox=inbox: any(m.seq == 3 for m in inbox.timeline(gid)))
            copies = [m for m in inbox.timeline(gid) if m.seq in seqs]
            assert [m.body.get("forwarded") for m in copies] == [{"sender_id": users["ann"].user_id}] * 2
            assert copies[1].body["type"] == "order"
