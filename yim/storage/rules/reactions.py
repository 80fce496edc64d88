"""Reaction and pin rules: who may react to or pin which entry, the per-user reaction
limit, who may pin under a group's ``pin_policy``, and the entries a pin appends."""

from __future__ import annotations

from typing import Final

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import Entry
from yim.storage.rules.groups import MANAGERS

#: kinds a reaction or a pin may name: what members send, not the server's own entries
NOT_REACTABLE: Final = frozenset({"system", "recall"})
PIN_POLICIES: Final = ("admins", "members")


class TargetRow(msgspec.Struct, frozen=True):
    """The entry a reaction or pin names, as stored."""

    msg_id: int
    kind: str
    recalled: bool


def check_target(conv_id: int, seq: int, member: tuple[str, int] | None, target: TargetRow | None) -> TargetRow:
    """The actor (``(role, joined_seq)`` while a member) names an entry they can see, one
    that a member sent and that stands (not recalled)."""
    if member is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    if target is None or seq <= member[1]:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    if target.kind in NOT_REACTABLE:
        raise YimError("bad_request", "system and recall entries take no reactions or pins")
    if target.recalled:
        raise YimError("already_recalled", "this message was recalled")
    return target


def check_react(mine: frozenset[str], emoji: str, add: bool, max_per_user: int) -> bool:
    """May the user add (or remove) ``emoji`` on a message where they already reacted
    with ``mine``? Returns whether anything changes: adding what one has, or removing what
    one has not, is a no-op (a retried request does not count twice)."""
    if add:
        if emoji in mine:
            return False
        if len(mine) >= max_per_user:
            raise YimError("too_many_reactions", f"at most {max_per_user} different reactions per user on one message")
        return True
    return emoji in mine


def check_pin(
    conv_type: str, pin_policy: str, role: str, pinned: bool, pin: bool, pinned_count: int, max_pins: int
) -> bool:
    """May a member of this ``role`` pin (``pin``) or unpin the entry (``pinned``: it is
    pinned now)? Groups follow their ``pin_policy``; both users of a one-to-one conversation
    may. Returns whether anything changes (pinning what is pinned is a no-op)."""
    if conv_type == "group" and pin_policy != "members" and role not in MANAGERS:
        raise YimError("forbidden", "only the group owner and admins may pin messages in this group")
    if conv_type == "service":
        raise YimError("forbidden", "messages of a customer-service conversation cannot be pinned")
    if pin == pinned:
        return False
    if pin and pinned_count >= max_pins:
        raise YimError("too_many_pins", f"a conversation has at most {max_pins} pinned messages; unpin one first")
    return True


def pin_entry(actor_id: int, msg_id: int, now: int, pin: bool, seq: int, target_msg_id: int) -> Entry:
    """The "system" entry announcing a pin or unpin, never counted as unread."""
    body = msgspec.json.encode(
        {"event": "pinned" if pin else "unpinned", "actor": str(actor_id), "seq": seq, "msg_id": str(target_msg_id)}
    )
    return Entry(msg_id, actor_id, "", "system", body, f"system:{msg_id}", now, uncounted=True)
