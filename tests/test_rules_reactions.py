"""Reaction and pin rules both stores apply (yim.storage.rules.reactions), table by table, without a node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.rules import reactions
from yim.storage.rules.reactions import TargetRow


def code(fn: Callable[..., Any], *args: Any) -> Any:
    """The rule's answer, or the code of its refusal."""
    try:
        return fn(*args)
    except YimError as exc:
        return exc.code


def row(kind: str = "text", recalled: bool = False) -> TargetRow:
    return TargetRow(msg_id=77, kind=kind, recalled=recalled)


# member (role, joined_seq), target, seq -> the target, or an error code
TARGET = [
    (("member", 0), row(), 5, row()),
    (("member", 5), row(), 5, "not_found"),  # before I joined: not mine to see
    (("member", 4), row(), 5, row()),
    (None, row(), 5, "not_member"),
    (("owner", 0), None, 5, "not_found"),
    (("owner", 0), row("system"), 5, "bad_request"),
    (("owner", 0), row("recall"), 5, "bad_request"),
    (("member", 0), row(recalled=True), 5, "already_recalled"),
    (("member", 0), row("image"), 5, row("image")),
]


@pytest.mark.parametrize(("member", "target", "seq", "expected"), TARGET)
def test_check_target(member: tuple[str, int] | None, target: TargetRow | None, seq: int, expected: Any) -> None:
    assert code(reactions.check_target, 9, seq, member, target) == expected


# mine, emoji, add, limit -> changes?, or an error code
REACT = [
    (frozenset(), "👍", True, 3, True),
    (frozenset({"👍"}), "👍", True, 3, False),  # already there: no-op, not counted twice
    (frozenset({"👍"}), "👍", False, 3, True),
    (frozenset(), "👍", False, 3, False),  # nothing to remove: no-op
    (frozenset({"a", "b"}), "c", True, 3, True),
    (frozenset({"a", "b", "c"}), "d", True, 3, "too_many_reactions"),
    (frozenset({"a", "b", "c"}), "c", True, 3, False),  # at the limit, re-adding one is still a no-op
    (frozenset({"a", "b", "c"}), "c", False, 3, True),  # and removing is always allowed
]


@pytest.mark.parametrize(("mine", "emoji", "add", "limit", "expected"), REACT)
def test_check_react(mine: frozenset[str], emoji: str, add: bool, limit: int, expected: Any) -> None:
    assert code(reactions.check_react, mine, emoji, add, limit) == expected


# conv type, pin_policy, role, pinned now, pin?, pinned count, max -> changes?, or an error code
PIN = [
    ("group", "admins", "owner", False, True, 0, 2, True),
    ("group", "admins", "admin", False, True, 0, 2, True),
    ("group", "admins", "member", False, True, 0, 2, "forbidden"),
    ("group", "admins", "member", True, False, 1, 2, "forbidden"),  # unpinning is pinning too
    ("group", "members", "member", False, True, 0, 2, True),
    ("group", "members", "member", True, True, 1, 2, False),  # already pinned: no-op
    ("group", "members", "member", False, False, 1, 2, False),  # not pinned: nothing to unpin
    ("group", "admins", "owner", False, True, 2, 2, "too_many_pins"),
    ("group", "admins", "owner", True, False, 2, 2, True),  # at the limit one may still unpin
    ("direct", "admins", "member", False, True, 0, 2, True),  # one-to-one: both users, whatever the default
    ("service", "members", "member", False, True, 0, 2, "forbidden"),
]


@pytest.mark.parametrize(("conv_type", "policy", "role", "pinned", "pin", "count", "limit", "expected"), PIN)
def test_check_pin(
    conv_type: str, policy: str, role: str, pinned: bool, pin: bool, count: int, limit: int, expected: Any
) -> None:
    assert code(reactions.check_pin, conv_type, policy, role, pinned, pin, count, limit) == expected


def test_pin_entry_is_an_uncounted_system_entry() -> None:
    entry = reactions.pin_entry(3, 100, 5000, True, 7, 88)
    assert (entry.kind, entry.uncounted, entry.client_msg_id, entry.sender_id) == ("system", True, "system:100", 3)
    assert msgspec.json.decode(entry.body) == {"event": "pinned", "actor": "3", "seq": 7, "msg_id": "88"}
    assert msgspec.json.decode(reactions.pin_entry(3, 101, 5000, False, 7, 88).body)["event"] == "unpinned"
