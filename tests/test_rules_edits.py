"""Edit rules both stores apply (yim.storage.rules.timeline.check_edit, the edit entry, and
the bodies yim.storage.rules.quotes writes for an edit), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.records import MessageRec
from yim.storage.rules import quotes, timeline
from yim.storage.rules.timeline import RecallTarget

ME, OTHER = 1, 2
WINDOW = 86_400_000


def target(sender: int = ME, *, at: int = 0, recalled: bool = False, kind: str = "text") -> RecallTarget:
    return RecallTarget(sender_id=sender, created_at=at, recalled=recalled, kind=kind, msg_id=77)


# joined_seq (None: not a member), target, now, window -> error code
EDIT = [
    (0, target(), 1000, WINDOW, None),
    (0, target(), WINDOW, WINDOW, None),  # the window's end is still in time
    (0, target(), WINDOW + 1, WINDOW, "edit_window_passed"),
    (0, target(), 1000, 0, "edit_window_passed"),  # editing off
    (0, target(OTHER), 1000, WINDOW, "forbidden"),  # not even a group owner edits another's words
    (None, target(), 1000, WINDOW, "not_member"),
    (0, None, 1000, WINDOW, "not_found"),
    (5, target(), 1000, WINDOW, "not_found"),  # before the actor joined: not theirs to see
    (0, target(kind="image"), 1000, WINDOW, "bad_request"),
    (0, target(kind="edit"), 1000, WINDOW, "bad_request"),
    (0, target(recalled=True), 1000, WINDOW, "already_recalled"),
]


@pytest.mark.parametrize(("joined", "tgt", "now", "window", "code"), EDIT)
def test_check_edit(joined: int | None, tgt: RecallTarget | None, now: int, window: int, code: str | None) -> None:
    try:
        timeline.check_edit(9, 5, ME, joined, tgt, now, window)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None


def test_edit_entry_names_the_message_and_counts_nothing() -> None:
    e = timeline.edit_entry(ME, 900, 1234, 5, 77, b'{"text":"new","edited_at":1234}', (OTHER,))
    assert msgspec.json.decode(e.body) == {"seq": 5, "msg_id": "77", "body": {"text": "new", "edited_at": 1234}}
    assert (e.kind, e.uncounted, e.mentions, e.client_msg_id) == ("edit", True, (OTHER,), "edit:900")


def test_with_recall_rules_an_edit_entry_is_no_message() -> None:
    with pytest.raises(YimError) as err:
        timeline.check_recall(9, 5, ME, ("owner", 0), target(kind="edit"), "group", 0, 1000)
    assert err.value.code == "bad_request"


def test_edited_body_keeps_server_fields() -> None:
    old = b'{"text":"old","quote":{"seq":1,"excerpt":"x"},"edited_at":5}'
    new = quotes.edited_body(old, b'{"text":"new"}', 9)
    assert msgspec.json.decode(new) == {"text": "new", "quote": {"seq": 1, "excerpt": "x"}, "edited_at": 9}
    assert quotes.version_time(old, 1) == 5 and quotes.version_time(b'{"text":"a"}', 1) == 1


QUOTE_EDITED = [
    (
        {"text": "ok", "quote": {"seq": 1, "excerpt": "old"}},
        {"text": "ok", "quote": {"seq": 1, "excerpt": "n", "edited": True}},
    ),
    ({"text": "ok", "quote": {"seq": 1, "withheld": True}}, {"text": "ok", "quote": {"seq": 1, "withheld": True}}),
    ({"text": "ok", "quote": {"seq": 1, "recalled": True}}, {"text": "ok", "quote": {"seq": 1, "recalled": True}}),
    ({"text": "no quote"}, {"text": "no quote"}),
]


@pytest.mark.parametrize(("reply", "after"), QUOTE_EDITED)
def test_quote_edited(reply: dict[str, object], after: dict[str, object]) -> None:
    out = quotes.quote_edited(msgspec.json.encode(reply), "text", b'{"text":"n","edited_at":3}')
    assert msgspec.json.decode(out) == after


def test_forwarded_copy_is_not_edited() -> None:
    m = MessageRec(1, 2, 3, ME, "d", "text", b'{"text":"t","edited_at":4}', "c", 0)
    body, fields = quotes.forwarded_body(m, "direct")
    assert msgspec.json.decode(body) == {"text": "t"} and fields == {"forwarded": {"sender_id": str(ME)}}


# window (joined_seq, last visible seq) or None, seqs, existing seqs -> error code
HIDE = [
    ((0, 10), [1, 10], {1, 10}, None),
    ((0, 10), [11], {11}, "not_found"),  # past a past member's window
    ((3, 10), [3], {3}, "not_found"),  # before joining
    ((0, 10), [4], set(), "not_found"),
    (None, [1], {1}, "not_member"),
]


@pytest.mark.parametrize(("window", "seqs", "found", "code"), HIDE)
def test_check_hide(window: tuple[int, int] | None, seqs: list[int], found: set[int], code: str | None) -> None:
    try:
        timeline.check_hide(9, window, seqs, found)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None
