"""Timeline and send rules both stores apply (yim.storage.rules.timeline, .send), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.records import Entry
from yim.storage.rules import send, timeline
from yim.storage.rules.send import SpeakerRow
from yim.storage.rules.timeline import RecallTarget

ME, OTHER = 1, 2
LIMIT = 120_000


def target(sender: int = ME, *, at: int = 0, recalled: bool = False, kind: str = "text") -> RecallTarget:
    return RecallTarget(sender_id=sender, created_at=at, recalled=recalled, kind=kind, msg_id=77)


def recall_code(
    actor: tuple[str, int] | None, tgt: RecallTarget | None, conv_type: str = "group", now: int = 1000, seq: int = 5
) -> str | None:
    try:
        timeline.check_recall(9, seq, ME, actor, tgt, conv_type, now, LIMIT)
    except YimError as exc:
        return exc.code
    return None


# actor (role, joined_seq), target, conversation type, now -> error code
RECALL = [
    (("member", 0), target(), "group", 1000, None),
    (("member", 0), target(at=0), "group", LIMIT + 1, "recall_expired"),
    (("member", 0), target(at=0), "group", LIMIT, None),  # the limit itself is still in time
    (("admin", 0), target(at=0), "group", LIMIT * 10, None),  # a moderator's own message: any time
    (("owner", 0), target(OTHER), "group", 1000, None),
    (("admin", 0), target(OTHER), "group", 1000, None),
    (("member", 0), target(OTHER), "group", 1000, "forbidden"),
    (("member", 0), target(OTHER), "direct", 1000, "forbidden"),
    (("owner", 0), target(OTHER), "direct", 1000, "forbidden"),  # roles mean nothing outside groups
    (("member", 0), target(at=0), "direct", LIMIT + 1, "recall_expired"),
    (None, target(), "group", 1000, "not_member"),
    (("member", 0), None, "group", 1000, "not_found"),
    (("member", 5), target(), "group", 1000, "not_found"),  # sent before I joined
    (("member", 0), target(kind="system"), "group", 1000, "bad_request"),
    (("owner", 0), target(kind="recall"), "group", 1000, "bad_request"),
    (("member", 0), target(recalled=True), "group", 1000, "already_recalled"),
]


@pytest.mark.parametrize(("actor", "tgt", "conv_type", "now", "code"), RECALL)
def test_recall(
    actor: tuple[str, int] | None, tgt: RecallTarget | None, conv_type: str, now: int, code: str | None
) -> None:
    assert recall_code(actor, tgt, conv_type, now) == code


def test_recall_expired_names_the_limit() -> None:
    with pytest.raises(YimError, match="messages can be recalled within 120 s"):
        timeline.check_recall(9, 5, ME, ("member", 0), target(at=0), "group", LIMIT + 1, LIMIT)


def test_recall_entry() -> None:
    entry = timeline.recall_entry(ME, 99, 500, 5, 77)
    assert msgspec.json.decode(entry.body) == {"seq": 5, "msg_id": "77"}
    assert msgspec.structs.replace(entry, body=b"") == Entry(
        msg_id=99,
        sender_id=ME,
        sender_device="",
        kind="recall",
        body=b"",
        client_msg_id="recall:99",
        created_at=500,
        uncounted=True,
    )


def speaker(**over: object) -> SpeakerRow:
    base = SpeakerRow(
        conv_type="group", mute_all=False, dissolved=False, role="member", left=False, muted_until=0, peer_id=None
    )
    return msgspec.structs.replace(base, **over)


# speaker row, mentions, mention all, mentioned members -> error code (now = 100)
SPEAK = [
    (speaker(), (), False, 0, None),
    (None, (), False, 0, "not_member"),
    (speaker(role=None), (), False, 0, "not_member"),
    (speaker(left=True), (), False, 0, "not_member"),
    (speaker(left=True, dissolved=True), (), False, 0, "group_dissolved"),
    (speaker(muted_until=101), (), False, 0, "muted"),
    (speaker(muted_until=100), (), False, 0, None),
    (speaker(role="admin", muted_until=101), (), False, 0, "muted"),  # a muted admin is muted too
    (speaker(mute_all=True), (), False, 0, "muted"),
    (speaker(mute_all=True, role="admin"), (), False, 0, None),
    (speaker(mute_all=True, role="owner"), (), True, 0, None),
    (speaker(), (), True, 0, "forbidden"),
    (speaker(), (3, 4), False, 2, None),
    (speaker(), (3, 3, 4), False, 2, None),  # a user mentioned twice counts once
    (speaker(), (3, 4), False, 1, "bad_request"),
    (speaker(conv_type="direct", peer_id=OTHER), (), False, 0, None),
    (speaker(conv_type="direct", peer_id=OTHER), (3,), False, 0, "bad_request"),
    (speaker(conv_type="direct", peer_id=OTHER), (), True, 0, "bad_request"),
]


@pytest.mark.parametrize(("row", "mentions", "mention_all", "found", "code"), SPEAK)
def test_may_speak(
    row: SpeakerRow | None, mentions: tuple[int, ...], mention_all: bool, found: int, code: str | None
) -> None:
    try:
        peer = send.check_may_speak(9, row, 100, mentions, mention_all, found)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None
        assert peer == (row.peer_id if row is not None and row.conv_type == "direct" else None)


# blocked by recipient, blocked recipient, friends only -> error code
DIRECT = [
    (False, False, False, None),
    (True, False, False, "blocked"),
    (False, True, False, "blocked"),
    (False, False, True, "friends_only"),
    (True, True, True, "blocked"),
]


@pytest.mark.parametrize(("blocked_by", "blocking", "friends_only", "code"), DIRECT)
def test_direct_allowed(blocked_by: bool, blocking: bool, friends_only: bool, code: str | None) -> None:
    try:
        send.check_direct_allowed(blocked_by, blocking, friends_only)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None


def test_direct_block_messages_say_who_blocked() -> None:
    with pytest.raises(YimError, match="does not accept messages from you"):
        send.check_direct_allowed(True, True, False)
    with pytest.raises(YimError, match="you blocked this user"):
        send.check_direct_allowed(False, True, True)


@pytest.mark.parametrize(
    ("to", "mentions", "mention_all", "code"),
    [
        (OTHER, (), False, None),
        (ME, (), False, "bad_request"),
        (OTHER, (3,), False, "bad_request"),
        (OTHER, (), True, "bad_request"),
    ],
)
def test_direct(to: int, mentions: tuple[int, ...], mention_all: bool, code: str | None) -> None:
    try:
        send.check_direct(ME, to, mentions, mention_all)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None


def test_lookups() -> None:
    timeline.require_member(True, 9)
    send.require_recipient(True, 5)
    with pytest.raises(YimError, match="you are not a member of conversation 9"):
        timeline.require_member(False, 9)
    with pytest.raises(YimError, match="no user 5"):
        send.require_recipient(False, 5)
