"""Replies never outgrow a connection's send buffer: big pages stop at the reply budget."""

from __future__ import annotations

import aiohttp

from tests.rawclient import Device, make_users
from yim.gateway.app import NodeServer
from yim.services.sync import REPLY_BUDGET_BYTES


async def test_pages_of_long_messages_stop_at_the_budget_and_the_connection_lives(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = (Device(http, x) for x in await make_users(http, ["alice", "bob"]))
        await alice.connect()
        text = "长" * server.settings.max_text_chars  # 24 KB of UTF-8 per message
        sent = 300  # ~7 MB in all: more than the 4 MiB send buffer if sent as one page
        for i in range(sent):
            ack = await alice.request("send", to=bob.user_id, kind="text", body={"text": text}, client_msg_id=f"m{i}")
        await bob.connect()
        since, pages, got = 0, 0, []
        while True:
            page = await bob.request("sync", since=since, limit=1000)
            pages += 1
            assert sum(len(e["data"]["body"]["text"].encode()) for e in page["events"]) <= REPLY_BUDGET_BYTES
            got += page["events"]
            since = page["next_since"]
            if not page["has_more"]:
                break
        assert pages > 5 and [e["seq"] for e in got] == list(range(1, sent + 1))
        history = await bob.request("history", conv_id=ack["conv_id"], limit=200)
        assert history["has_more"] and history["messages"][-1]["seq"] == sent  # the newest kept
        convs = await bob.request("conversations", limit=1000)
        assert convs["conversations"][0]["unread"] == sent
        assert not bob.closed.is_set()
        await alice.close()
        await bob.close()
