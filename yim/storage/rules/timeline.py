"""Timeline rules: who may read a conversation, who may recall or edit which message, and the
entries a recall or an edit appends."""

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
    server_admin: bool = False,
) -> RecallTarget:
    """May the actor (``(role, joined_seq)`` while a member) recall message ``seq``? Its
    sender may within ``limit_ms``; a group's owner and admins may recall any message,
    at any time. Entries before the actor joined do not exist for them. A server admin
    resolving a report (``server_admin``, checked by the caller) may recall any message of
    any conversation, member or not."""
    if server_admin:
        actor = ("owner", 0)
    if actor is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    role, joined_seq = actor
    if target is None or seq <= joined_seq:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    if target.kind in ("system", "recall", "edit"):
        raise YimError("bad_request", "system entries cannot be recalled")
    if target.recalled:
        raise YimError("already_recalled", "this message was already recalled")
    moderator = server_admin or (conv_type == "group" and role in MANAGERS)
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


#: the kinds of message that may be edited (a text's text; other kinds have no text to replace)
EDITABLE_KINDS = frozenset({"text"})


def check_edit(
    conv_id: int,
    seq: int,
    actor_id: int,
    joined_seq: int | None,
    target: RecallTarget | None,
    now: int,
    window_ms: int,
) -> RecallTarget:
    """May the actor (``joined_seq`` while a member, else None) edit message ``seq``? Only
    its sender, only a text message not recalled, within ``window_ms`` of its send (0: editing
    is off). No moderator exception: an edit puts words in the sender's mouth."""
    if joined_seq is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    if target is None or seq <= joined_seq:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    if target.sender_id != actor_id:
        raise YimError("forbidden", "only the sender of a message can edit it")
    if target.kind not in EDITABLE_KINDS:
        raise YimError("bad_request", f"a {target.kind} entry cannot be edited; only text messages can")
    if target.recalled:
        raise YimError("already_recalled", "this message was recalled")
    if window_ms <= 0:
        raise YimError("edit_window_passed", "editing messages is turned off on this server")
    if now - target.created_at > window_ms:
        raise YimError("edit_window_passed", f"messages can be edited within {window_ms // 1000} s of sending")
    return target


def edit_entry(
    actor_id: int, msg_id: int, now: int, seq: int, target_msg_id: int, body: bytes, added: tuple[int, ...]
) -> Entry:
    """The "edit" entry naming the edited message and carrying its new body, never counted
    as unread; ``added``: the users the edit mentions who were not mentioned before (their
    mention flag rises with this entry)."""
    entry_body = b'{"seq":%d,"msg_id":"%d","body":%s}' % (seq, target_msg_id, body)
    return Entry(msg_id, actor_id, "", "edit", entry_body, f"edit:{msg_id}", now, uncounted=True, mentions=added)


def check_hide(conv_id: int, window: tuple[int, int] | None, seqs: list[int], found: set[int]) -> None:
    """May a user hide the entries at ``seqs`` from their own devices? ``window``: their
    ``(joined_seq, last visible seq)`` in the conversation (None: never a member); ``found``:
    the seqs that exist. Only what they can see: a past member still may, inside their window."""
    if window is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    joined, head = window
    for seq in seqs:
        if seq not in found or not joined < seq <= head:
            raise YimError("not_found", f"no message {seq} in conversation {conv_id}")


def hidden_payload(conv_id: int, seqs: list[int]) -> bytes:
    """The ``data`` of a ``hidden`` inbox event: which entries the user hid."""
    return msgspec.json.encode({"conv_id": str(conv_id), "seqs": seqs})
