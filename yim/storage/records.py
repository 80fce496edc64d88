"""The records the storage layer speaks: plain frozen structs that cross between the
services, the shared rules (:mod:`yim.storage.rules`) and both backends, and the row
mappers both backends use for the columns they select alike.

Kept apart from :mod:`yim.storage.base` (the Store contract) so that code needing only a
record, the rules above all, does not depend on the contract or on any backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class UserRec(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str
    password_hash: str
    created_at: int
    avatar_media_id: int | None = None  # the user's avatar: an image they uploaded (None: none)


#: the columns of a UserRec, in its order, in both dialects
USER_COLUMNS = "id, username, display_name, password_hash, created_at, avatar_media_id"


class SessionRec(msgspec.Struct, frozen=True):
    id: str
    user_id: int
    device_id: str
    platform: str
    created_at: int
    expires_at: int
    revoked_at: int | None = None


class DeviceRec(msgspec.Struct, frozen=True):
    user_id: int
    device_id: str
    platform: str
    name: str
    created_at: int
    last_seen_at: int
    acked_seq: int = 0


class MessageRec(msgspec.Struct, frozen=True):
    msg_id: int
    conv_id: int
    seq: int
    sender_id: int
    sender_device: str
    kind: str
    body: bytes  # canonical JSON of the kind's body
    client_msg_id: str
    created_at: int
    recalled: bool = False
    mentions: tuple[int, ...] = ()
    mention_all: bool = False


class SendCmd(msgspec.Struct, frozen=True):
    """What the messages service asks the store to append. Exactly one of to / conv_id / shop_id."""

    msg_id: int
    new_conv_id: int  # used only if this message opens a new direct conversation
    sender_id: int
    sender_device: str
    kind: str
    body: bytes
    client_msg_id: str
    created_at: int
    to: int | None = None
    conv_id: int | None = None
    mentions: tuple[int, ...] = ()
    mention_all: bool = False
    shop_id: int | None = None  # a customer's message to a shop (customer service)
    category: str | None = None  # the customer's choice of service category, if any
    new_session_id: int = 0  # used only if this message opens a service session
    #: a reply: the seq (in ``conv_id``) of the message it quotes; the store checks it and
    #: writes the quote into ``body`` inside the send's own transaction (rules/quotes.py)
    reply_to: int | None = None
    #: the URLs of the hooks that take ``after_send``: the store writes the message's events
    #: to the outbox in the send's own transaction (yim/storage/outbox.py)
    after_send: tuple[str, ...] = ()


class Entry(msgspec.Struct, frozen=True):
    """One entry to append to a conversation timeline: a message, or a "system" / "recall"
    entry (``uncounted``: never counted as unread)."""

    msg_id: int
    sender_id: int
    sender_device: str
    kind: str
    body: bytes
    client_msg_id: str
    created_at: int
    uncounted: bool = False
    mentions: tuple[int, ...] = ()
    mention_all: bool = False

    @classmethod
    def of(cls, c: SendCmd) -> Entry:
        """The entry of a message a client sends."""
        return cls(
            msg_id=c.msg_id,
            sender_id=c.sender_id,
            sender_device=c.sender_device,
            kind=c.kind,
            body=c.body,
            client_msg_id=c.client_msg_id,
            created_at=c.created_at,
            mentions=c.mentions,
            mention_all=c.mention_all,
        )

    def appended(
        self,
        conv_id: int,
        seq: int,
        sender_inbox_seq: int,
        deliveries: list[tuple[int, int]],
        fanout: str,
        members_changed: bool,
    ) -> SendResult:
        """The outcome of appending this entry at ``seq``."""
        message = MessageRec(
            msg_id=self.msg_id,
            conv_id=conv_id,
            seq=seq,
            sender_id=self.sender_id,
            sender_device=self.sender_device,
            kind=self.kind,
            body=self.body,
            client_msg_id=self.client_msg_id,
            created_at=self.created_at,
            mentions=self.mentions,
            mention_all=self.mention_all,
        )
        return SendResult(
            message=message,
            sender_inbox_seq=sender_inbox_seq,
            duplicate=False,
            deliveries=deliveries,
            fanout=fanout,
            members_changed=members_changed,
        )


class CreateGroupCmd(msgspec.Struct, frozen=True):
    conv_id: int
    msg_id: int
    owner_id: int
    member_ids: list[int]
    name: str
    announcement: str
    avatar: str
    join_policy: str
    max_members: int
    threshold: int  # groups above this many members use read fan-out
    created_at: int


class SendResult(msgspec.Struct, frozen=True):
    """A timeline append (a message, or a system / recall entry)."""

    message: MessageRec
    sender_inbox_seq: int
    duplicate: bool
    #: (user_id, inbox_seq) for every member whose inbox got the entry (write fan-out).
    deliveries: list[tuple[int, int]]
    #: "write": delivered through inboxes; "read": stored once, members pull the timeline.
    fanout: str = "write"
    #: the group's membership changed with this entry (caches of member sets are stale).
    members_changed: bool = False
    #: other inbox events written with it, (user_id, inbox_seq, payload) of type "service"
    events: list[tuple[int, int, bytes]] = []


class GroupRec(msgspec.Struct, frozen=True):
    conv_id: int
    name: str
    avatar: str
    announcement: str
    owner_id: int
    join_policy: str
    mute_all: bool
    max_members: int
    member_count: int
    fanout: str
    switch_seq: int
    last_seq: int
    created_at: int
    dissolved: bool
    pin_policy: str = "admins"  # who may pin: "admins" (owner and admins) or "members"


class MemberRec(msgspec.Struct, frozen=True):
    user_id: int
    role: str
    joined_seq: int
    read_seq: int
    muted_until: int


class GroupHead(msgspec.Struct, frozen=True):
    """A read-fan-out group a user belongs to: pull its timeline after ``from_seq``. With
    ``left``, one the user left (or was removed from, or saw dissolved): ``last_seq`` is
    then the seq of that entry, the end of what they may pull."""

    conv_id: int
    last_seq: int
    from_seq: int
    left: bool = False


class GroupChange(msgspec.Struct, frozen=True):
    """Outcome of a group operation: the group after it and the system entry it appended."""

    group: GroupRec
    entry: SendResult | None


class InboxEvent(msgspec.Struct, frozen=True):
    seq: int
    type: str  # "message" | "read" | "receipt"
    conv_id: int
    conv_seq: int
    message: MessageRec | None = None
    actor_id: int | None = None
    #: JSON payload of events that carry their own (e.g. "relation"); a store may also hand
    #: over the whole wire payload of any event here, ready to send.
    data: bytes | None = None


class ReadRes(msgspec.Struct, frozen=True):
    read_seq: int
    unread: int
    total_unread: int
    #: inbox seq of the "read" event written for the user's devices; None if nothing moved.
    inbox_seq: int | None
    #: one-to-one receipts: (peer user id, inbox seq of the "receipt" event written for them)
    receipt: tuple[int, int] | None = None


class ConvRow(msgspec.Struct, frozen=True):
    conv_id: int
    type: str
    peer_id: int | None
    last_seq: int
    read_seq: int
    last_msg_id: int
    updated_at: int
    last_message: MessageRec | None
    unread: int
    mentioned: bool
    name: str = ""
    member_count: int = 0
    active: bool = True
    peer_read_seq: int = 0  # direct conversations: how far the other user has read
    shop_id: int | None = None  # service conversations
    customer_id: int | None = None


#: The group columns both stores select, in the order group_rec() reads them.
GROUP_COLS = (
    "id, name, avatar, announcement, owner_id, join_policy, mute_all, max_members, member_count, fanout,"
    " switch_seq, last_seq, created_at, dissolved, pin_policy"
)


def group_rec(r: Sequence[Any]) -> GroupRec:
    return GroupRec(
        conv_id=r[0],
        name=r[1],
        avatar=r[2],
        announcement=r[3],
        owner_id=r[4],
        join_policy=r[5],
        mute_all=bool(r[6]),
        max_members=r[7],
        member_count=r[8],
        fanout=r[9],
        switch_seq=r[10],
        last_seq=r[11],
        created_at=r[12],
        dissolved=bool(r[13]),
        pin_policy=r[14],
    )


def conv_row(r: Sequence[Any], last_message: MessageRec | None) -> ConvRow:
    """A conversation-list row from the columns both stores select in this order:
    id, type, peer, visible head, read_seq, last_msg_id, updated_at, unread, mentioned,
    name, member_count, active, peer_read_seq, shop_id, customer_id."""
    return ConvRow(
        conv_id=r[0],
        type=r[1],
        peer_id=r[2],
        last_seq=r[3],
        read_seq=r[4],
        last_msg_id=r[5],
        updated_at=r[6],
        unread=r[7],
        mentioned=bool(r[8]),
        name=r[9],
        member_count=r[10],
        active=bool(r[11]),
        peer_read_seq=r[12] or 0,
        shop_id=r[13],
        customer_id=r[14],
        last_message=last_message,
    )


class AgentLoad(msgspec.Struct, frozen=True):
    """One agent's standing as the routing policy sees it, read by the store inside the
    transaction that assigns the session (see :mod:`yim.services.routing`)."""

    user_id: int
    skills: frozenset[str]
    capacity: int
    open_sessions: int
    last_assigned_at: int
    online: bool
