"""History search: Chinese without spaces and English words, scoped to what the user can
see (their conversations, inside their membership window), recall, short-query fallback,
paging and context."""

# ruff: noqa: RUF001 - Chinese test texts use fullwidth punctuation, as real ones do

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, make_users
from tests.test_media import auth, uploaded
from yim.node import NodeServer


async def devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    found = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in found))
    return found


_ids = itertools.count(1)


async def say(dev: Device, text: str, *, to: Device | None = None, conv_id: str | None = None) -> dict[str, Any]:
    target = {"to": to.user_id} if to is not None else {"conv_id": conv_id}
    return await dev.request("send", kind="text", body={"text": text}, client_msg_id=f"s{next(_ids)}", **target)


def texts(page: dict[str, Any]) -> list[str]:
    return [hit["text"] for hit in page["hits"]]


async def test_chinese_and_english_search_with_context(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        await say(alice, "我们的系统要支持亿级消息量", to=bob)
        await say(bob, "好的，先看存储设计", to=alice)
        await say(alice, "Hello brave new World", to=bob)
        await say(bob, "world peace and HELLO kitty", to=alice)
        await say(alice, "完全无关的一句话", to=bob)

        page = await bob.request("search", q="亿级消息")
        assert texts(page) == ["我们的系统要支持亿级消息量"]
        hit = page["hits"][0]
        assert hit["message"]["sender_id"] == alice.user_id and hit["message"]["kind"] == "text"
        assert hit["message"]["body"] == {"text": "我们的系统要支持亿级消息量"}
        assert hit["highlights"] == [[8, 12]]
        assert hit["previous"] is None  # the first message of the conversation
        assert hit["next"]["body"] == {"text": "好的，先看存储设计"}
        assert page["next_before"] is None

        # English: case-insensitive, every word required, newest first.
        assert texts(await alice.request("search", q="hello")) == [
            "world peace and HELLO kitty",
            "Hello brave new World",
        ]
        page = await alice.request("search", q="WORLD hello")
        assert len(page["hits"]) == 2
        assert page["hits"][1]["highlights"] == [[0, 5], [16, 21]]
        assert texts(await alice.request("search", q="hello brave")) == ["Hello brave new World"]
        assert texts(await alice.request("search", q="hello nothing")) == []
        # A query with FTS syntax in it is taken literally.
        assert texts(await alice.request("search", q='"hello" OR NOT*')) == []

        # The same over HTTP.
        r = await http.get("/api/v1/search", params={"q": "存储设计"}, headers=auth(alice.login))
        assert r.status == 200
        assert texts(await r.json()) == ["好的，先看存储设计"]
        r = await http.get("/api/v1/search", params={"q": "  "}, headers=auth(alice.login))
        assert r.status == 400
        for d in (alice, bob):
            await d.close()


async def test_search_never_crosses_into_other_conversations(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol, dave = await devices(http, ["alice", "bob", "carol", "dave"])
        mine = await say(alice, "秘密计划：周五发布", to=bob)
        theirs = await say(carol, "秘密计划：周六发布", to=dave)
        group = await carol.request("group_create", name="g", members=[dave.user_id])
        await say(carol, "秘密计划在群里", conv_id=group["group"]["conv_id"])

        assert texts(await alice.request("search", q="秘密计划")) == ["秘密计划：周五发布"]
        assert texts(await alice.request("search", q="秘密")) == ["秘密计划：周五发布"]  # fallback path too
        assert texts(await alice.request("search", q="秘密计划", conv_id=mine["conv_id"])) == ["秘密计划：周五发布"]
        assert len((await dave.request("search", q="秘密计划"))["hits"]) == 2
        for q in ("秘密计划", "秘密"):
            with pytest.raises(ProtocolError) as err:
                await alice.request("search", q=q, conv_id=theirs["conv_id"])
            assert err.value.code == "not_member"
        r = await http.get(
            "/api/v1/search", params={"q": "秘密计划", "conv_id": theirs["conv_id"]}, headers=auth(alice.login)
        )
        assert r.status == 403
        for d in (alice, bob, carol, dave):
            await d.close()


async def test_membership_window_limits_group_search(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await devices(http, ["alice", "bob", "carol"])
        group = await alice.request("group_create", name="团队", members=[bob.user_id])
        gid = group["group"]["conv_id"]
        await say(alice, "发布计划 第一版", conv_id=gid)
        await alice.request("group_invite", conv_id=gid, user_ids=[carol.user_id])
        await say(alice, "发布计划 第二版", conv_id=gid)
        await bob.request("group_leave", conv_id=gid)
        third = await say(alice, "发布计划 第三版", conv_id=gid)

        assert texts(await alice.request("search", q="发布计划")) == [
            "发布计划 第三版",
            "发布计划 第二版",
            "发布计划 第一版",
        ]
        # Bob left after the second; Carol joined before it.
        assert texts(await bob.request("search", q="发布计划")) == ["发布计划 第二版", "发布计划 第一版"]
        assert texts(await carol.request("search", q="发布计划")) == ["发布计划 第三版", "发布计划 第二版"]
        assert texts(await bob.request("search", q="第三")) == []  # fallback path
        assert texts(await carol.request("search", q="第一", conv_id=gid)) == []
        # Context stays inside the window too: Bob never sees the third as a neighbour.
        hit = (await bob.request("search", q="第二版"))["hits"][0]
        assert hit["next"] is None or hit["next"]["seq"] < third["seq"]
        hit = (await carol.request("search", q="第二版"))["hits"][0]
        assert hit["previous"] is None or hit["previous"]["body"] != {"text": "发布计划 第一版"}
        for d in (alice, bob, carol):
            await d.close()


async def test_recalled_messages_disappear_from_results(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        keep = await say(alice, "会议改到明天上午", to=bob)
        gone = await say(alice, "会议改到明天下午", to=bob)
        assert len((await bob.request("search", q="会议改到"))["hits"]) == 2
        await alice.request("recall", conv_id=gone["conv_id"], seq=gone["seq"])
        page = await bob.request("search", q="会议改到")
        assert [h["message"]["seq"] for h in page["hits"]] == [keep["seq"]]
        assert texts(await bob.request("search", q="下午")) == []  # fallback path
        assert texts(await bob.request("search", q="明天下午")) == []
        assert texts(await bob.request("search", q="上午")) == ["会议改到明天上午"]
        # The neighbour of a hit is never the recalled message nor the recall marker.
        page = await bob.request("search", q="上午")
        assert page["hits"][0]["next"] is None
        for d in (alice, bob):
            await d.close()


async def test_short_queries_use_the_fallback(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        await say(alice, "支持亿级消息量", to=bob)
        await say(alice, "亿万富翁", to=bob)
        await say(alice, "go 100%_done", to=bob)
        assert texts(await bob.request("search", q="亿级")) == ["支持亿级消息量"]  # 2 CJK characters
        assert texts(await bob.request("search", q="亿")) == ["亿万富翁", "支持亿级消息量"]
        assert (await bob.request("search", q="亿级"))["hits"][0]["highlights"] == [[2, 4]]
        # Short and long terms together: the index narrows, the short term filters.
        assert texts(await bob.request("search", q="消息量 亿级")) == ["支持亿级消息量"]
        assert texts(await bob.request("search", q="消息量 万")) == []
        # LIKE wildcards in the query are literal.
        assert texts(await bob.request("search", q="%_")) == ["go 100%_done"]
        assert texts(await bob.request("search", q="_")) == ["go 100%_done"]
        assert texts(await bob.request("search", q="GO")) == ["go 100%_done"]
        for d in (alice, bob):
            await d.close()


async def test_paging_newest_first_and_file_names(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        for i in range(23):
            await say(alice, f"日报 第{i:02d}期", to=bob)
        seen: list[str] = []
        before = None
        pages = 0
        while True:
            args = {"q": "日报 第", "limit": 10} | ({"before": before} if before else {})
            page = await bob.request("search", **args)
            seen += texts(page)
            pages += 1
            before = page["next_before"]
            if before is None:
                break
        assert pages == 3 and seen == [f"日报 第{i:02d}期" for i in reversed(range(23))]

        # File names are searchable (a file message's text is its name).
        report = await uploaded(http, alice.login, b"%PDF-1.4\n%\xe2\xe3\n", name="2024年第三季度财务报告.pdf")
        await alice.request(
            "send", to=bob.user_id, kind="file", body={"media_id": report["media_id"]}, client_msg_id="f"
        )
        page = await bob.request("search", q="季度财务")
        assert texts(page) == ["2024年第三季度财务报告.pdf"]
        assert page["hits"][0]["message"]["kind"] == "file"
        assert page["hits"][0]["message"]["body"]["media_id"] == report["media_id"]
        assert texts(await bob.request("search", q="报告")) == ["2024年第三季度财务报告.pdf"]
        for d in (alice, bob):
            await d.close()
