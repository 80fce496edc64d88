"""The terminal chat with replies, forwarded copies, custom messages and edits: ``/reply SEQ
TEXT`` quotes a message, and lines show a quote, a forward, a custom message's text fallback
and an edit."""

from __future__ import annotations

import contextlib

from yim.client import HttpApi

from .test_terminal import Cli, as_user, cli, node, piped_chat, register, say

__all__ = ["cli", "node"]  # the fixtures of tests/test_terminal.py, used here


def test_chat_replies_and_shows_quotes_forwards_and_custom(cli: Cli) -> None:
    url = cli.server.url
    register(url, "mei", "lan")
    say(url, "lan", "mei", "周六爬山吗")

    async def custom_and_forward(api: HttpApi) -> None:
        peer = await api.user_by_name("mei")
        ack = await api.send(
            to=peer.user_id, kind="custom", body={"type": "poll", "data": {"q": 1}, "text": "投票: 去哪"}
        )
        await api.request(
            "POST",
            f"/api/v1/conversations/{ack.conv_id}/forward",
            body={"seqs": [1], "targets": [{"to": peer.user_id, "client_msg_id": "fw"}]},
        )

    with piped_chat(cli, "mei") as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Logged in as mei")
        type_line("/open lan")
        out.expect(r"\d\d:\d\d lan: 周六爬山吗")
        type_line("/reply 1 去!")
        out.expect(r"^\d\d:\d\d mei: \[re #1 lan: 周六爬山吗\] 去!$")
        type_line("/reply x")
        out.expect(r"/reply SEQ TEXT")
        as_user(url, "lan", custom_and_forward)
        out.expect(r"^\d\d:\d\d lan: 投票: 去哪$")
        out.expect(r"^\d\d:\d\d lan: \[fwd lan\] 周六爬山吗$")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0


def test_chat_shows_edits_live_and_history_marks_them(cli: Cli) -> None:
    """An edit arrives as an entry carrying the new text (protocol.md §11.2a): the chat says
    who edited which message and how it reads now; `/history` lists the message once, with
    its latest text marked "(edited)", and not the edit entry beside it."""
    url = cli.server.url
    register(url, "kai", "yan")
    say(url, "yan", "kai", "明天十点见")

    async def edit_it(api: HttpApi) -> None:
        peer = await api.user_by_name("kai")
        convs = await api.request("GET", "/api/v1/conversations")
        conv_id = next(
            c["conv_id"] for c in convs["conversations"] if (c.get("peer") or {}).get("user_id") == peer.user_id
        )
        await api.request("POST", f"/api/v1/conversations/{conv_id}/edit", body={"seq": 1, "text": "明天十一点见"})

    with piped_chat(cli, "kai") as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Logged in as kai")
        type_line("/open yan")
        out.expect(r"\d\d:\d\d yan: 明天十点见$")
        as_user(url, "yan", edit_it)
        out.expect(r"\* yan edited #1: 明天十一点见$")
        type_line("/history")
        out.expect(r"yan: 明天十一点见 \(edited\)$")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0
        with contextlib.suppress(AssertionError):  # read the rest of the output, to its end
            out.expect(r"^\x00 never printed$", timeout=5)
        # the live line once; /history listed the message, not the edit entry beside it
        assert sum("edited #1" in line for line in out.seen) == 1, out.seen
