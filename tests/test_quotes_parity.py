"""Replies, forwards and custom messages on both stores, byte for byte: the quotable read
and its refusals, a recall rewriting the quotes of its replies (text and media), media
sends keeping the server's fields, custom messages found by their text fallback. Same
method as tests/test_store_parity.py: one scenario, two transcripts, equal."""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from yim.storage.base import Store
from yim.storage.records import CreateGroupCmd, MessageRec, SendCmd, UserRec
from yim.storage.rules import quotes

from .test_store_parity import T0, Transcript, _blob, _media, _send, _text, _wire_sync, stores

__all__ = ["stores"]  # the fixture of tests/test_store_parity.py, used here


def _reply(msg_id: int, sender: int, text: str, quoted: MessageRec, **kw: Any) -> SendCmd:
    """A text reply as the messages service submits it: the quote in the body."""
    quote = {quotes.QUOTE: quotes.quote_snapshot(quoted, withheld=False)}
    return _send(msg_id, sender, body=quotes.with_fields(msgspec.json.encode({"text": text}), quote), **kw)


async def quotes_scenario(t: Transcript) -> None:
    s: Store = t.store
    m = s.media
    for i, name in enumerate(["alice", "bob", "carol", "dave"], start=1):
        await s.create_user(UserRec(i, name, name, "h", T0))
    first = await t("dm", s.send_message(_text(2000, 1, "明天下午三点开会", to=2)))
    dm = first.message.conv_id
    await t("pic", m.create_media(2900, 1, "image", "cat.png", _blob("qq", "image/png", 64), T0 + 1))
    pic = await t("image", m.send(_media(2002, 1, "image", 2900, conv_id=dm)))
    got = await t("quotable", s.quotable(dm, 2, [1, 2]))
    await t("quotable outsider", s.quotable(dm, 3, [1]))
    await t("quotable missing", s.quotable(dm, 2, [1, 99]))
    await t("reply text", s.send_message(_reply(2004, 2, "好", got.messages[0], conv_id=dm)))
    fields = {quotes.QUOTE: quotes.quote_snapshot(got.messages[0], withheld=False)}
    ref = quotes.with_fields(b'{"media_id":"2900"}', fields)
    await t("reply image", m.send(_send(2006, 2, kind="image", body=ref, conv_id=dm)))
    await t("reply to image", s.send_message(_reply(2008, 1, "看图", pic.message, conv_id=dm)))
    await t("recall quoted", s.recall(dm, 1, 1, 2010, T0 + 2010, 120_000))
    await t("history after recall", s.history(2, dm, None, None, 50))
    await t("sync after recall", _wire_sync(s, 2, 0, 100))
    await t("quotable recalled", s.quotable(dm, 2, [1]))
    await t("quotable recall entry", s.quotable(dm, 2, [6]))
    # a group: the newest join withholds quotes of what came before it
    group = await s.create_group(
        CreateGroupCmd(
            conv_id=2100, msg_id=2101, owner_id=1, member_ids=[2], name="g", announcement="",
            avatar="", join_policy="open", max_members=10, threshold=100, created_at=T0 + 2100,
        )
    )  # fmt: skip
    gid = group.group.conv_id
    old = await t("g old", s.send_message(_text(2102, 1, "before carol", conv_id=gid)))
    await t("quotable before join", s.quotable(gid, 1, [old.message.seq]))
    await s.add_members(gid, 1, [3], "invite", 2104, T0 + 2104, 100)
    await t("quotable after join", s.quotable(gid, 1, [old.message.seq]))
    await t("carol cannot quote it", s.quotable(gid, 3, [old.message.seq]))
    await t("system entry", s.quotable(gid, 1, [1]))
    await s.remove_member(gid, 1, 2, 2106, T0 + 2106)
    await t("bob left", s.quotable(gid, 2, [old.message.seq]))
    # custom messages, found by their text fallback only
    order = b'{"type":"order","data":{"id":42,"note":"findme-not"},"text":"order 42 paid"}'
    await t("custom", s.send_message(_send(2108, 1, kind="custom", body=order, conv_id=gid)))
    loc = b'{"type":"location","data":{"lat":31.2}}'
    await t("custom no text", s.send_message(_send(2110, 1, kind="custom", body=loc, conv_id=gid)))
    await t("search custom", s.search.search(1, gid, ["42 paid"], None, 10))
    await t("search data", s.search.search(1, gid, ["findme"], None, 10))


async def test_quotes_transcripts_equal(stores: tuple[Store, Store]) -> None:
    lite, pg = (Transcript(s) for s in stores)
    await quotes_scenario(lite)
    await quotes_scenario(pg)
    assert len(pg.lines) == len(lite.lines)
    for (label, want), (_, got) in zip(lite.lines, pg.lines, strict=True):
        assert got == want, label
    lines = dict(lite.lines)
    bodies = {
        msg["seq"]: msgspec.json.decode(base64.b64decode(msg["body"])) for msg in lines["history after recall"][0]
    }
    recalled = {"seq": 1, "msg_id": "2000", "sender_id": "1", "kind": "text", "recalled": True}
    assert bodies[3] == {"text": "好", "quote": recalled}
    assert bodies[4]["media_id"] == "2900" and bodies[4]["quote"] == recalled  # the media job kept the quote
    assert bodies[5]["quote"] == {"seq": 2, "msg_id": "2002", "sender_id": "1", "kind": "image", "excerpt": ""}
    assert lines["quotable outsider"][:2] == ["error", "not_member"]
    assert lines["quotable missing"][:2] == ["error", "not_found"]
    assert lines["quotable recalled"][:2] == ["error", "already_recalled"]
    assert lines["quotable recall entry"][:2] == ["error", "bad_request"]
    assert lines["quotable before join"]["newest_join"] < lines["quotable after join"]["newest_join"]
    assert lines["carol cannot quote it"][:2] == ["error", "not_found"]
    assert lines["bob left"][:2] == ["error", "not_member"]
    assert [h["text"] for h in lines["search custom"][0]] == ["order 42 paid"]
    assert lines["search data"][0] == []
