"""Erasure rules: which accounts may be erased, who inherits an erased owner's group or shop, and
what each of the erased user's entries becomes (docs/protocol.md §19.8)."""

from __future__ import annotations

from typing import Final

from yim.protocol.errors import YimError
from yim.storage.admin import AccountRec

#: The settings of ``erase_messages``: what an erased user's messages become.
MODES: Final = ("tombstone", "remove")
#: Kinds a client shows as a message: under "tombstone" they stay, read like a recalled one.
SHOWN_KINDS: Final = frozenset({"text", "emoji", "image", "video", "file", "custom"})
#: The kind of an entry with nothing left in it (clients skip it; its seq stays taken).
REMOVED_KIND: Final = "removed"


def may_erase(actor_id: int | None, user_id: int, target: AccountRec | None, erased_at: int | None) -> AccountRec:
    """An account that exists and is not erased already; an admin cannot erase their own
    account through the admin op (they delete it themselves, with their password)."""
    if target is None or erased_at is not None:
        raise YimError("not_found", f"no user {user_id}")
    if actor_id is not None and actor_id == user_id:
        raise YimError("bad_request", "an admin cannot erase their own account (delete it from its settings)")
    return target


def successor(owner_id: int, members: list[tuple[int, str, int]]) -> int | None:
    """Who owns a group after its owner is erased: the admin who joined first, else the
    member who joined first (``members``: (user_id, role, joined_seq)); None when the owner
    is alone (the group is then dissolved)."""
    others = [m for m in members if m[0] != owner_id]
    if not others:
        return None
    return min(others, key=lambda m: (m[1] != "admin", m[2], m[0]))[0]


def shop_heir(owner_id: int, agents: list[tuple[int, str, int]]) -> int | None:
    """Who owns a shop after its owner is erased: its admin agent who was added first
    (``agents``: (user_id, role, added_at)); None when it has no other admin (the shop is then
    closed: a plain agent serves customers but may not manage the shop, and making one its
    admin would give a person powers no one granted them)."""
    admins = [a for a in agents if a[0] != owner_id and a[1] == "admin"]
    if not admins:
        return None
    return min(admins, key=lambda a: (a[2], a[0]))[0]


def erased_kind(kind: str, mode: str) -> str:
    """The kind an erased user's entry keeps: a shown message keeps its own under
    "tombstone" (it reads as recalled); everything else (edits, recalls, and every entry
    under "remove") becomes an empty "removed" entry."""
    if mode not in MODES:
        raise ValueError(f"erase mode {mode!r}")
    return kind if mode == "tombstone" and kind in SHOWN_KINDS else REMOVED_KIND


def needs_erasing(kind: str, recalled: bool, mode: str) -> bool:
    """An entry still to clear: not a system entry (those name the user's id only), and not
    already what the erasure makes of it."""
    if kind == "system" or kind == REMOVED_KIND:
        return False
    return not (recalled and erased_kind(kind, mode) == kind)
