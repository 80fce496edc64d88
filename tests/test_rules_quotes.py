"""Reply and forward rules both stores apply (yim.storage.rules.quotes), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.records import MessageRec
from yim.storage.rules import quotes


def msg(seq: int, kind: str = "text", body: bytes = b'{"text":"hi"}', *, recalled: bool = False) -> MessageRec:
    return MessageRec(
        msg_id=100 + seq,
        conv_id=9,
        seq=seq,
        sender_id=7,
        sender_device="d",
        kind=kind,
        body=body,
        client_msg_id=f"c{seq}",
        created_at=0,
        recalled=recalled,
    )


def quotable_code(joined_seq: int | None, seqs: list[int], found: dict[int, MessageRec]) -> str | None:
    try:
        quotes.check_quotable(9, seqs, joined_seq, found)
    except YimError as exc:
        return exc.code
    return None


# the asker's joined_seq (None: not a current member), seqs, messages found -> error code
QUOTABLE = [
    (0, [3], {3: msg(3)}, None),
    (None, [3], {3: msg(3)}, "not_member"),  # left, removed or never a member
    (3, [3], {3: msg(3)}, "not_found"),  # from before they joined: does not exist for them
    (2, [3], {3: msg(3)}, None),
    (0, [4], {3: msg(3)}, "not_found"),
    (0, [3, 4], {3: msg(3)}, "not_found"),  # one missing refuses all
    (0, [3], {3: msg(3, recalled=True)}, "already_recalled"),
    (0, [3], {3: msg(3, "system", b'{"event":"joined"}')}, "bad_request"),
    (0, [3], {3: msg(3, "recall", b'{"seq":1}')}, "bad_request"),
    (0, [3], {3: msg(3, "custom", b'{"type":"x","data":{}}')}, None),
]


@pytest.mark.parametrize(("joined", "seqs", "found", "code"), QUOTABLE)
def test_check_quotable(joined: int | None, seqs: list[int], found: dict[int, MessageRec], code: str | None) -> None:
    assert quotable_code(joined, seqs, found) == code


def test_check_quotable_keeps_the_order_asked_for() -> None:
    found = {2: msg(2), 5: msg(5)}
    assert [m.seq for m in quotes.check_quotable(9, [5, 2], 0, found)] == [5, 2]


# kind, body -> excerpt
EXCERPTS = [
    ("text", ('{"text":"' + "长" * 150 + '"}').encode(), "长" * quotes.EXCERPT_CHARS),
    ("emoji", b'{"emoji":"\xf0\x9f\x91\x8d"}', "👍"),
    ("file", b'{"media_id":"1","name":"a.pdf","mime":"application/pdf"}', "a.pdf"),
    ("image", b'{"media_id":"1","name":"a.jpg"}', ""),
    ("custom", b'{"type":"order","data":{},"text":"Order 42"}', "Order 42"),
    ("custom", b'{"type":"order","data":{"text":"not this"}}', ""),
]


@pytest.mark.parametrize(("kind", "body", "want"), EXCERPTS)
def test_excerpt(kind: str, body: bytes, want: str) -> None:
    assert quotes.excerpt(kind, body) == want


def test_snapshot_full_and_withheld() -> None:
    m = msg(3, body=b'{"text":"hello","quote":{"seq":1}}')
    assert quotes.quote_snapshot(m, withheld=False) == {
        "seq": 3,
        "msg_id": "103",
        "sender_id": "7",
        "kind": "text",
        "excerpt": "hello",
    }
    assert quotes.quote_snapshot(m, withheld=True) == {"seq": 3, "withheld": True}


def test_fields_appended_byte_for_byte() -> None:
    assert quotes.with_fields(b'{"text":"a"}', {"quote": {"seq": 1}}) == b'{"text":"a","quote":{"seq":1}}'
    assert quotes.with_fields(b'{"text":"a"}', {}) == b'{"text":"a"}'
    assert quotes.with_fields(b"{}", {"forwarded": {}}) == b'{"forwarded":{}}'
    body = quotes.with_fields(b'{"media_id":"5"}', {"quote": {"seq": 1}})
    assert quotes.server_fields(body) == {"quote": {"seq": 1}}
    assert quotes.QUOTE_MARK.encode() in body


def test_quote_recalled() -> None:
    body = b'{"text":"ok","quote":{"seq":1,"msg_id":"9","sender_id":"7","kind":"text","excerpt":"secret"}}'
    out = msgspec.json.decode(quotes.quote_recalled(body))
    assert out == {"text": "ok", "quote": {"seq": 1, "msg_id": "9", "sender_id": "7", "kind": "text", "recalled": True}}
    assert quotes.quote_recalled(b'{"text":"no quote"}') == b'{"text":"no quote"}'


# source conversation type, original body -> the copy's body and server fields
FORWARDS = [
    ("direct", b'{"text":"a"}', b'{"text":"a"}', {"forwarded": {"sender_id": "7"}}),
    ("group", b'{"text":"a","quote":{"seq":1}}', b'{"text":"a"}', {"forwarded": {"sender_id": "7"}}),
    ("service", b'{"text":"a"}', b'{"text":"a"}', {"forwarded": {}}),  # agents stay anonymous outside
    ("group", b'{"text":"a","forwarded":{"sender_id":"1"}}', b'{"text":"a"}', {"forwarded": {"sender_id": "1"}}),
]


@pytest.mark.parametrize(("conv_type", "body", "want_body", "want_fields"), FORWARDS)
def test_forwarded_body(conv_type: str, body: bytes, want_body: bytes, want_fields: dict[str, object]) -> None:
    assert quotes.forwarded_body(msg(3, body=body), conv_type) == (want_body, want_fields)
