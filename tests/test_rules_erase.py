"""The erasure rules both stores apply (yim.storage.rules.erase), table by table, without a node."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from yim.protocol.errors import YimError
from yim.storage.admin import AccountRec
from yim.storage.rules import erase as rules

TARGET = AccountRec(7, "alice", "Alice", 0, False, None)


def code_of(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except YimError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("actor_id", "target", "erased_at", "want"),
    [
        (1, TARGET, None, None),  # an admin on someone else
        (None, TARGET, None, None),  # the operator on the host, or the user's own due deletion
        (7, TARGET, None, "bad_request"),  # an admin on their own account
        (1, None, None, "not_found"),  # no such account
        (1, TARGET, 5, "not_found"),  # erased already: gone
    ],
)
def test_may_erase(actor_id: int | None, target: AccountRec | None, erased_at: int | None, want: str | None) -> None:
    assert code_of(lambda: rules.may_erase(actor_id, 7, target, erased_at)) == want


@pytest.mark.parametrize(
    ("members", "want"),
    [
        ([(7, "owner", 0)], None),  # alone: the group is dissolved
        ([(7, "owner", 0), (3, "member", 0), (2, "member", 4)], 3),  # the member who joined first
        ([(7, "owner", 0), (3, "member", 0), (9, "admin", 8)], 9),  # an admin before any member
        ([(7, "owner", 0), (9, "admin", 8), (5, "admin", 2)], 5),  # of admins, the earliest
        ([(7, "owner", 0), (9, "member", 1), (5, "member", 1)], 5),  # a tie: the lower id
    ],
)
def test_successor(members: list[tuple[int, str, int]], want: int | None) -> None:
    assert rules.successor(7, members) == want


@pytest.mark.parametrize(
    ("kind", "recalled", "mode", "erasing", "becomes"),
    [
        ("text", False, "tombstone", True, "text"),  # reads as recalled, keeps its kind
        ("image", False, "tombstone", True, "image"),
        ("text", True, "tombstone", False, "text"),  # recalled already: nothing left to clear
        ("edit", False, "tombstone", True, "removed"),  # an edit entry carries a body: emptied
        ("recall", False, "tombstone", True, "removed"),
        ("text", False, "remove", True, "removed"),
        ("text", True, "remove", True, "removed"),  # a recalled message still becomes "removed"
        ("custom", False, "remove", True, "removed"),
        ("system", False, "remove", False, "removed"),  # group entries stay (the user's id only)
        ("removed", True, "remove", False, "removed"),  # done already: a step run again
    ],
)
def test_what_an_entry_becomes(kind: str, recalled: bool, mode: str, erasing: bool, becomes: str) -> None:
    assert rules.needs_erasing(kind, recalled, mode) is erasing
    if kind != "system":
        assert rules.erased_kind(kind, mode) == becomes


def test_an_unknown_mode_is_a_bug() -> None:
    with pytest.raises(ValueError):
        rules.erased_kind("text", "shred")


@pytest.mark.parametrize(
    ("agents", "want"),
    [
        ([(7, "admin", 0)], None),  # the owner alone: the shop is closed
        ([(7, "admin", 0), (3, "agent", 1)], None),  # plain agents do not inherit a shop: closed
        ([(7, "admin", 0), (3, "agent", 1), (9, "admin", 8), (4, "admin", 5)], 4),  # the admin added first
        ([(7, "admin", 0), (9, "admin", 5), (4, "admin", 5)], 4),  # a tie: the lower id
    ],
)
def test_shop_heir(agents: list[tuple[int, str, int]], want: int | None) -> None:
    assert rules.shop_heir(7, agents) == want
