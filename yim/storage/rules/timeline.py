"""Timeline rules: who may read a conversation, who may recall which message, and the
entries a recall appends."""

from __future__ import annotations

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import Entry
from yim.storage.rules.groups import MANAGERS


class RecallTarget(msgspec.Struct, frozen=True):
    """The message a recall names, as stored."""

    sender_id: int
    created_at: int
    recalled: bool
    kind: str
    msg_id: int


def require_member(found: bool, conv_id: int) -> None:
    """Reads, read markers and recalls are for the conversation's members."""
    if not found:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")


def check_recall(
    conv_id: int,
    seq: int,
    actor_id: int,
    actor: tuple[str, int] | None,
    target: RecallTarget | None,
    conv_type: str,
    now: int,
    limit_ms: int,
) -> RecallTarget:
    """May the actor (``(role, joined_seq)`` while a member) recall message ``seq``? Its
    sender may within ``limit_ms``; a group's owner and admins may recall any message,
    at any time. Entries before the actor joined do not exist for them."""
    if actor is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    role, joined_seq = actor
    if target is None or seq <= joined_seq:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    if target.kind in ("system", "recall"):
        raise YimError("bad_request", "system entries cannot be recalled")
    if target.recalled:
        raise YimError("already_recalled", "this message was already recalled")
    moderator = conv_type == "group" and role in MANAGERS
    if target.sender_id == actor_id:
        if now - target.created_at > limit_ms and not moderator:
            raise YimError("recall_expired", f"messages can be recalled within {limit_ms // 1000} s")
    elif not moderator:
        raise YimError("forbidden", "only the sender or a group owner/admin can recall a message")
    return target


def recall_entry(actor_id: int, msg_id: int, now: int, seq: int, target_msg_id: int) -> Entry:
    """The "recall" entry naming the recalled message, never counted as unread."""
    body = msgspec.json.encode({"seq": seq, "msg_id": str(target_msg_id)})
    return Entry(msg_id, actor_id, "", "recall", body, f"recall:{msg_id}", now, uncounted=True)
