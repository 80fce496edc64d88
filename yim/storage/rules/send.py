"""Send checks the SQLite store makes in Python before it appends a message.

The PostgreSQL store makes the same checks inside ``yim_send`` (postgres_functions.sql),
in the transaction of the send itself; its refusals map to the same codes and messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from yim.protocol.errors import YimError


class SpeakerRow(msgspec.Struct, frozen=True):
    """The conversation and the sender's place in it, as a send reads them."""

    conv_type: str
    mute_all: bool
    dissolved: bool
    role: str | None  # None: never a member
    left: bool
    muted_until: int
    peer_id: int | None


def check_no_mentions(mentions: Sequence[int], mention_all: bool) -> None:
    if mentions or mention_all:
        raise YimError("bad_request", "mentions are for group messages")


def check_direct(sender_id: int, to: int, mentions: Sequence[int], mention_all: bool) -> None:
    if to == sender_id:
        raise YimError("bad_request", "cannot send a direct message to yourself")
    check_no_mentions(mentions, mention_all)


def require_recipient(exists: bool, to: int) -> None:
    if not exists:
        raise YimError("not_found", f"no user {to}")


def check_direct_allowed(blocked_by_recipient: bool, blocked_recipient: bool, friends_only: bool) -> None:
    """May the sender message the recipient directly? Blocks first, then the recipient's
    dm_policy (``friends_only``: it is "friends" and they are not friends)."""
    if blocked_by_recipient:
        raise YimError("blocked", "this user does not accept messages from you")
    if blocked_recipient:
        raise YimError("blocked", "you blocked this user; unblock them first")
    if friends_only:
        raise YimError("friends_only", "this user accepts direct messages from friends only")


def check_may_speak(
    conv_id: int,
    row: SpeakerRow | None,
    now: int,
    mentions: Sequence[int],
    mention_all: bool,
    mentioned_members: int,
) -> int | None:
    """May the sender write into conversation ``conv_id`` now? ``mentioned_members``: how
    many of ``mentions`` are current members. Returns the peer of a direct conversation,
    whose blocks and dm_policy the caller checks next; None for a group."""
    if row is None or row.role is None or row.left:
        if row is not None and row.dissolved:
            raise YimError("group_dissolved", f"group {conv_id} was dissolved")
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    if row.conv_type != "group":
        check_no_mentions(mentions, mention_all)
        return row.peer_id
    if row.muted_until > now:
        raise YimError("muted", f"you are muted in this group until {row.muted_until}")
    if row.mute_all and row.role == "member":
        raise YimError("muted", "the whole group is muted; only the owner and admins may speak")
    if mention_all and row.role == "member":
        raise YimError("forbidden", "only the owner and admins may mention everyone")
    if mentions and mentioned_members != len(set(mentions)):
        raise YimError("bad_request", "every mentioned user must be a member of the group")
    return None
