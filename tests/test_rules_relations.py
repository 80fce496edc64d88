"""The relation rules both stores apply (yim.storage.rules.relations), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.relations import FriendRequestRec
from yim.storage.rules import relations as rules

SENDER, RECIPIENT, STRANGER = 1, 2, 3


def request(status: str = "pending") -> FriendRequestRec:
    return FriendRequestRec(
        id=50, from_id=SENDER, to_id=RECIPIENT, message="hi", status=status, created_at=10, updated_at=10
    )


def told(events: list[tuple[int, int, bytes]]) -> list[tuple[int, int, str]]:
    """(inbox owner, actor, event name) of each event, in order."""
    return [(user, actor, msgspec.json.decode(payload)["event"]) for user, actor, payload in events]


# blocked by them, blocked them, friends -> error code
REQUEST = [
    (False, False, False, None),
    (True, False, False, "blocked"),
    (False, True, False, "blocked"),
    (True, True, True, "blocked"),
    (False, False, True, "already_friends"),
]


@pytest.mark.parametrize(("blocked_by", "blocking", "friends", "code"), REQUEST)
def test_request(blocked_by: bool, blocking: bool, friends: bool, code: str | None) -> None:
    try:
        rules.check_request(blocked_by, blocking, friends)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None


def test_request_block_messages_say_who_blocked() -> None:
    with pytest.raises(YimError, match="does not accept friend requests from you"):
        rules.check_request(True, True, False)
    with pytest.raises(YimError, match="you blocked this user; unblock them first"):
        rules.check_request(False, True, False)


# status, actor, action, blocked -> (new status, events told) or error code
RESPOND = [
    ("pending", RECIPIENT, "accept", False, "accepted"),
    ("pending", RECIPIENT, "reject", False, "rejected"),
    ("pending", SENDER, "cancel", False, "canceled"),
    ("pending", RECIPIENT, "accept", True, "blocked"),
    ("pending", RECIPIENT, "reject", True, "rejected"),  # rejecting needs no check of blocks
    ("pending", SENDER, "cancel", True, "canceled"),
    ("pending", SENDER, "accept", False, "forbidden"),
    ("pending", SENDER, "reject", False, "forbidden"),
    ("pending", RECIPIENT, "cancel", False, "forbidden"),
    ("accepted", RECIPIENT, "accept", False, "bad_request"),
    ("rejected", SENDER, "cancel", False, "bad_request"),
    ("canceled", RECIPIENT, "reject", False, "bad_request"),
]


@pytest.mark.parametrize(("status", "actor", "action", "blocked", "outcome"), RESPOND)
def test_respond(status: str, actor: int, action: str, blocked: bool, outcome: str) -> None:
    try:
        req, _events = rules.respond(request(status), actor, action, 99, blocked)
    except YimError as exc:
        assert exc.code == outcome
    else:
        assert (req.status, req.updated_at, req.created_at) == (outcome, 99, 10)


# action, actor -> events told, in order
RESPOND_EVENTS = [
    ("accept", RECIPIENT, [(SENDER, RECIPIENT, "friend_added"), (RECIPIENT, SENDER, "friend_added")]),
    (
        "reject",
        RECIPIENT,
        [(SENDER, RECIPIENT, "friend_request_rejected"), (RECIPIENT, SENDER, "friend_request_rejected")],
    ),
    (
        "cancel",
        SENDER,
        [(RECIPIENT, SENDER, "friend_request_canceled"), (SENDER, RECIPIENT, "friend_request_canceled")],
    ),
]


@pytest.mark.parametrize(("action", "actor", "expected"), RESPOND_EVENTS)
def test_respond_events(action: str, actor: int, expected: list[tuple[int, int, str]]) -> None:
    _req, events = rules.respond(request(), actor, action, 99, False)
    assert told(events) == expected
    assert all(msgspec.json.decode(p)["request_id"] == "50" for _u, _a, p in events)


@pytest.mark.parametrize(("actor", "found"), [(SENDER, True), (RECIPIENT, True), (STRANGER, False)])
def test_visible_request(actor: int, found: bool) -> None:
    if found:
        assert rules.visible_request(request(), 50, actor) == request()
    else:
        with pytest.raises(YimError, match="no friend request 50"):
            rules.visible_request(request(), 50, actor)
    with pytest.raises(YimError) as info:
        rules.visible_request(None, 50, actor)
    assert info.value.code == "not_found"


def test_repeated_request_is_the_same_request() -> None:
    assert rules.crossing_request(request(), SENDER, 99) is None


def test_crossing_request_accepts() -> None:
    crossing = rules.crossing_request(request(), RECIPIENT, 99)
    assert crossing is not None
    req, events = crossing
    assert (req.id, req.status, req.updated_at) == (50, "accepted", 99)
    # told to the first asker (about the one asking back), then to the one asking back
    assert told(events) == [(SENDER, RECIPIENT, "friend_added"), (RECIPIENT, SENDER, "friend_added")]


def test_new_request() -> None:
    req, events = rules.new_request(7, SENDER, RECIPIENT, "hello", 5)
    assert req == FriendRequestRec(7, SENDER, RECIPIENT, "hello", "pending", 5, 5)
    assert told(events) == [(RECIPIENT, SENDER, "friend_request"), (SENDER, RECIPIENT, "friend_request_sent")]


@pytest.mark.parametrize(("verb"), ["befriend", "follow", "block"])
def test_not_self(verb: str) -> None:
    rules.check_not_self(1, 2, verb)
    with pytest.raises(YimError, match=f"you cannot {verb} yourself") as info:
        rules.check_not_self(4, 4, verb)
    assert info.value.code == "bad_request"


# on, blocked either way -> error code
@pytest.mark.parametrize(
    ("on", "blocked", "code"), [(True, False, None), (True, True, "blocked"), (False, True, None), (False, False, None)]
)
def test_follow(on: bool, blocked: bool, code: str | None) -> None:
    try:
        rules.check_follow(on, blocked)
    except YimError as exc:
        assert exc.code == code
    else:
        assert code is None


# on, changed -> events told
FOLLOW_EVENTS = [
    (True, True, [(2, 1, "follower_added"), (1, 2, "following_added")]),
    (False, True, [(2, 1, "follower_removed"), (1, 2, "following_removed")]),
    (True, False, []),  # already in that state: nobody is told
    (False, False, []),
]


@pytest.mark.parametrize(("on", "changed", "expected"), FOLLOW_EVENTS)
def test_follow_events(on: bool, changed: bool, expected: list[tuple[int, int, str]]) -> None:
    assert told(rules.follow_events(1, 2, on, changed)) == expected


# unfriended, unfollowed pairs -> events told
BLOCK_EVENTS = [
    (False, (), [(1, 2, "blocked")]),
    (True, (), [(1, 2, "blocked"), (2, 1, "friend_removed"), (1, 2, "friend_removed")]),
    (
        False,
        ((1, 2), (2, 1)),
        [
            (1, 2, "blocked"),
            (2, 1, "follower_removed"),
            (1, 2, "following_removed"),
            (1, 2, "follower_removed"),
            (2, 1, "following_removed"),
        ],
    ),
]


@pytest.mark.parametrize(("unfriended", "unfollowed", "expected"), BLOCK_EVENTS)
def test_block_events(
    unfriended: bool, unfollowed: tuple[tuple[int, int], ...], expected: list[tuple[int, int, str]]
) -> None:
    events = rules.block_events(1, 2, unfriended=unfriended, unfollowed=unfollowed)
    assert told(events) == expected
    # the blocked user (2) is never told of the block itself
    assert not [e for e in told(events) if e[0] == 2 and e[2] == "blocked"]


def test_unblock_and_unfriend_events() -> None:
    assert told(rules.unblock_events(1, 2)) == [(1, 2, "unblocked")]
    assert told(rules.both(1, 2, "friend_removed")) == [(2, 1, "friend_removed"), (1, 2, "friend_removed")]


def test_require() -> None:
    rules.require_friends(True)
    rules.require_user(True, 5)
    with pytest.raises(YimError, match="you are not friends"):
        rules.require_friends(False)
    with pytest.raises(YimError, match="no user 5"):
        rules.require_user(False, 5)


# remark, tags given -> the friend after the update (stored: "old", ["a"])
UPDATE = [
    (None, None, "old", ["a"]),
    ("new", None, "new", ["a"]),
    (None, ["b", "c"], "old", ["b", "c"]),
    ("", [], "", []),  # empty values clear; only None keeps
]


@pytest.mark.parametrize(("remark", "tags", "new_remark", "new_tags"), UPDATE)
def test_updated_friend(remark: str | None, tags: list[str] | None, new_remark: str, new_tags: list[str]) -> None:
    friend = rules.updated_friend(("old", '["a"]', 42), 9, remark, tags)
    assert (friend.friend_id, friend.remark, friend.tags, friend.created_at) == (9, new_remark, new_tags, 42)
    assert msgspec.json.decode(rules.tags_json(friend.tags)) == new_tags


def test_update_needs_friends() -> None:
    with pytest.raises(YimError, match="you are not friends"):
        rules.updated_friend(None, 9, "x", None)
