"""Mentions typed in the terminal chat: in a group, ``@name`` (a member's username or display
name, Chinese included, case- and width-insensitive) sends the member's id in ``mentions``; a
name two members share is refused with who they are, and nothing is sent. Run through the
real ``yim chat`` process against a real node, as tests/test_terminal.py does."""

# ruff: noqa: RUF001 - Chinese test texts use fullwidth punctuation, as real ones do

from __future__ import annotations

import asyncio
from typing import Any

from yim.client import HttpApi

from .test_terminal import PASSWORD, Cli, call, cli, node, piped_chat

__all__ = ["cli", "node"]  # the fixtures of tests/test_terminal.py, used here


def accounts(url: str, *people: tuple[str, str]) -> dict[str, str]:
    """(username, display name) accounts; their ids by username."""

    async def go() -> dict[str, str]:
        async with HttpApi(url) as api:
            return {u: (await api.register(u, PASSWORD, d)).user_id for u, d in people}

    return asyncio.run(go())


def entries(url: str, username: str, conv_id: str) -> list[dict[str, Any]]:
    """The group's text messages as ``username`` reads them, oldest first."""
    page = call(url, username, "history", conv_id=conv_id, limit=50)
    return [m for m in page["messages"] if m["kind"] == "text"]


def test_chat_mentions_members_by_name(cli: Cli) -> None:
    url = cli.server.url
    ids = accounts(
        url, ("mt_ming", "王明"), ("mt_bo", "鲍勃"), ("mt_li1", "小李"), ("mt_li2", "小李"), ("mt_lin", "Lin")
    )
    others = [ids[u] for u in ("mt_bo", "mt_li1", "mt_li2", "mt_lin")]
    group = call(url, "mt_ming", "group_create", name="登山队", members=others)["group"]
    conv_id = group["conv_id"]

    with piped_chat(cli, "mt_ming") as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Logged in as mt_ming")
        type_line("/group 登山队")
        out.expect(r"── #?登山队 ──")
        # A display name in Chinese, followed by text without a space, as Chinese is typed.
        type_line("@鲍勃你好，看一下路线")
        out.expect(r"王明: @鲍勃你好，看一下路线$")
        type_line("路线在https://127.0.0.1/@mt_lin ，问@鲍勃")
        out.expect(r"王明: 路线在https://127.0.0.1/@mt_lin ，问@鲍勃$")
        # A username in other case and in fullwidth letters; then "@Linda" is not Lin, an address no mention.
        type_line("@ＭＴ_LIN 你好")
        out.expect(r"王明: @ＭＴ_LIN 你好$")
        type_line("@Linda, mail lin@example.com")
        out.expect(r"王明: @Linda, mail lin@example.com$")
        # Two members are called 小李: refused, saying who, and nothing sent.
        type_line("@小李 在吗")
        refused = out.expect(r"could be")
        assert "@mt_li1" in refused and "@mt_li2" in refused and "not sent" in refused
        # Their usernames tell them apart; a reply mentions too.
        type_line("@mt_li2 在吗")
        out.expect(r"王明: @mt_li2 在吗$")
        type_line("/reply 2 @mt_li1 你呢")
        out.expect(r"王明: .*@mt_li1 你呢$")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0

    sent = entries(url, "mt_bo", conv_id)
    assert [m["body"]["text"] for m in sent] == [
        "@鲍勃你好，看一下路线",
        "路线在https://127.0.0.1/@mt_lin ，问@鲍勃",
        "@ＭＴ_LIN 你好",
        "@Linda, mail lin@example.com",
        "@mt_li2 在吗",
        "@mt_li1 你呢",
    ]
    assert [m.get("mentions") for m in sent] == [
        [ids["mt_bo"]],
        [ids["mt_bo"]],
        [ids["mt_lin"]],
        None,
        [ids["mt_li2"]],
        [ids["mt_li1"]],
    ]
    # The mentioned member is told as mentions are today: the conversation's `mentioned` flag.
    assert call(url, "mt_bo", "conversation", conv_id=conv_id)["mentioned"] is True
