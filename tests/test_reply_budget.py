"""Replies never outgrow a connection's send buffer: big pages stop at the reply budget."""

from __future__ import annotations

import aiohttp

from tests.rawclient import Device, make_users
from yim.node import NodeServer
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


async def test_read_ahead_pages_equal_what_the_store_holds_while_messages_keep_arriving(server: NodeServer) -> None:
    """Sync reads the next page while the device handles the current one. Interleave new
    messages, a page size change and a second device of the same user: every device still
    ends with the exact gap-free inbox."""
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = (Device(http, x) for x in await make_users(http, ["alice", "bob"]))
        await alice.connect()
        for i in range(450):
            await alice.request(
                "send", to=bob.user_id, kind="text", body={"text": f"before {i}"}, client_msg_id=f"b{i}"
            )
        await bob.connect()
        since, got, extra = 0, [], 0
        for limit in [100, 100, 50, 100, 100, 100, 100, 100, 100, 100, 100, 100]:
            page = await bob.request("sync", since=since, limit=limit)
            got += page["events"]
            since = page["next_since"]
            if not page["has_more"]:
                break
            # a new message lands between pages: the next pages (read ahead or not) hold it
            await alice.request("send", to=bob.user_id, kind="text", body={"text": f"during {extra}"},
                                client_msg_id=f"d{extra}")  # fmt: skip
            extra += 1
        head = await bob.request("sync", since=since, limit=1000)
        got += head["events"]
        seqs = [e["seq"] for e in got]
        assert seqs == list(range(1, head["head"] + 1))
        texts = [e["data"]["body"]["text"] for e in got if e["type"] == "message"]
        assert texts[:450] == [f"before {i}" for i in range(450)]
        assert sorted(t for t in texts if t.startswith("during")) == sorted(f"during {i}" for i in range(extra))
        assert server.node.read_ahead.hits >= 2  # the path under test was taken
        await alice.close()
        await bob.close()
