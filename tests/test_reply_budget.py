"""Replies never outgrow a connection's send buffer: big pages stop at the reply budget."""

from __future__ import annotations

import asyncio

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


async def test_a_page_read_ahead_for_a_cut_connection_does_not_serve_the_next_one(server: NodeServer) -> None:
    """A device pages its backlog, and its connection is cut before it asks for the page
    read ahead for it. Messages sent while it has no connection are pushed to no one, so
    the new connection's sync from the same cursor must hold them: the page read ahead
    before them would end below them and say there is no more (found by the receiver-drop
    delivery test under load, where the device then waited forever)."""
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = (Device(http, x) for x in await make_users(http, ["alice", "bob"]))
        await alice.connect()
        for i in range(150):
            await alice.request("send", to=bob.user_id, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}")
        await bob.connect()
        page = await bob.request("sync", since=0, limit=100)
        assert page["has_more"] and page["next_since"] == 100
        pages = server.node.read_ahead._pages  # the page for since=100, read while page 1 travelled
        async with asyncio.timeout(10):
            while not all(task.done() for _at, _size, task in pages.values()):
                await asyncio.sleep(0.01)
        await bob.close()  # cut before asking for it
        for i in range(150, 160):
            await alice.request("send", to=bob.user_id, kind="text", body={"text": f"m{i}"}, client_msg_id=f"m{i}")
        await bob.connect()
        page = await bob.request("sync", since=100, limit=100)
        assert [e["seq"] for e in page["events"]] == list(range(101, 161))
        assert page["head"] == 160 and not page["has_more"]
        assert not bob.events  # nothing pushed: the ten were sent before this connection
        await alice.close()
        await bob.close()
