"""The terminal chat with replies, forwarded copies and custom messages: ``/reply SEQ TEXT``
quotes a message, and lines show a quote, a forward and a custom message's text fallback."""

from __future__ import annotations

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
