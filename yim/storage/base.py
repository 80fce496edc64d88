"""The storage interface and the records it speaks.

Each method is one unit of work that the backend runs in one transaction, so the
invariants below hold whatever the backend:

- a timeline's ``seq`` (per conversation, per user inbox) is allocated inside the same
  transaction that writes the row carrying it: a rolled-back or crashed write leaves no
  gap and no seq is ever seen twice;
- a (sender, client_msg_id) pair maps to at most one message;
- unread counts are never stored: they are ``conversation.last_seq - member.read_seq``,
  and sending moves the sender's ``read_seq`` to the message, so the per-conversation and
  total counts cannot disagree with the messages or with each other.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from yim.storage.relations import RelationStore
from yim.storage.service import ServiceStore

if TYPE_CHECKING:
    from yim.storage.media import MediaStore
    from yim.storage.search import SearchStore


class UserRec(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str
    password_hash: str
    created_at: int


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
    " switch_seq, last_seq, created_at, dissolved"
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


class Store(abc.ABC):
    """A durable store. All methods are coroutines; each is atomic.

    Concepts with their own interface hang off it: ``store.relations``
    (:class:`yim.storage.relations.RelationStore`), ``store.service``
    (:class:`yim.storage.service.ServiceStore`), ``store.media``
    (:class:`yim.storage.media.MediaStore`), ``store.search``
    (:class:`yim.storage.search.SearchStore`)."""

    relations: RelationStore
    service: ServiceStore
    media: MediaStore
    search: SearchStore

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def shared_signing_key(self, candidate: bytes) -> bytes | None:
        """The token-signing key of a store that several nodes share: the stored key, or
        ``candidate`` stored first if there is none yet (concurrent first starts agree on
        one). None for a store of one node (SQLite), whose key stays in the data folder."""
        return None

    # accounts ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_user(self, user: UserRec) -> UserRec:
        """Raise YimError('username_taken') if the name (case-insensitive) exists."""

    @abc.abstractmethod
    async def user_by_name(self, username: str) -> UserRec | None: ...

    @abc.abstractmethod
    async def users_by_ids(self, ids: list[int]) -> dict[int, UserRec]: ...

    # sessions and devices -------------------------------------------------------------------
    @abc.abstractmethod
    async def create_session(self, session: SessionRec, device_name: str) -> list[str]:
        """Record a login; upsert the device. Returns ids of the device's earlier sessions,
        which this login supersedes (they are revoked in the same transaction)."""

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> SessionRec | None: ...

    @abc.abstractmethod
    async def revoke_sessions(
        self, user_id: int, *, device_id: str | None = None, session_id: str | None = None, now: int
    ) -> list[str]:
        """Revoke one session, or every live session of a device. Returns the revoked ids."""

    @abc.abstractmethod
    async def list_devices(self, user_id: int) -> list[DeviceRec]: ...

    @abc.abstractmethod
    async def touch_devices(self, seen: list[tuple[int, str, int, int]]) -> None:
        """(user_id, device_id, last_seen_at, acked_seq) — batched; both only move forward."""

    # messages -------------------------------------------------------------------------------
    @abc.abstractmethod
    def send_message(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        """Append a message. Returns a future (not a coroutine) so that a connection can
        pipeline sends without a task per message; futures of one caller resolve in the
        order they were submitted, which is also the order of their seqs."""

    @abc.abstractmethod
    async def mark_read(self, user_id: int, conv_id: int, seq: int, now: int) -> ReadRes: ...

    @abc.abstractmethod
    async def sync(self, user_id: int, since: int, limit: int) -> tuple[list[InboxEvent], int]:
        """Inbox events with seq > since, in order, and the inbox head seq."""

    @abc.abstractmethod
    async def inbox_head(self, user_id: int) -> int: ...

    @abc.abstractmethod
    async def history(
        self, user_id: int, conv_id: int, before: int | None, after: int | None, limit: int
    ) -> tuple[list[MessageRec], bool]:
        """A page of a conversation the user belongs to (raises YimError('not_member')).
        ``after``: ascending from after+1; otherwise descending from before-1 (or the end)."""

    @abc.abstractmethod
    async def conversations(
        self, user_id: int, before: int | None, limit: int, conv_id: int | None = None
    ) -> tuple[list[ConvRow], int]:
        """The user's conversations, most recent first (paged by last_msg_id), and total
        unread; with ``conv_id``, just that one (if the user belongs to it)."""

    # groups -----------------------------------------------------------------------------------
    # Every membership or settings change appends a "system" entry to the group timeline in
    # the same transaction, so members see changes in order with the chat. Permissions are
    # checked inside that transaction (raise YimError('forbidden' / 'not_member' / ...)).
    @abc.abstractmethod
    async def create_group(self, cmd: CreateGroupCmd) -> GroupChange: ...

    @abc.abstractmethod
    async def add_members(
        self, conv_id: int, actor_id: int, user_ids: list[int], via: str, msg_id: int, now: int, threshold: int
    ) -> GroupChange:
        """``via`` is "invite" (actor adds others) or "join" (actor adds themself, open groups)."""

    @abc.abstractmethod
    async def remove_member(self, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int) -> GroupChange:
        """Leave (actor == user) or remove someone (owner/admin)."""

    @abc.abstractmethod
    async def set_role(
        self, conv_id: int, actor_id: int, user_id: int, role: str, msg_id: int, now: int
    ) -> GroupChange: ...

    @abc.abstractmethod
    async def mute_member(
        self, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
    ) -> GroupChange: ...

    @abc.abstractmethod
    async def update_group(
        self, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
    ) -> GroupChange:
        """changes: name, avatar, announcement, join_policy, mute_all, max_members."""

    @abc.abstractmethod
    async def dissolve_group(self, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange: ...

    @abc.abstractmethod
    async def group_info(self, conv_id: int, viewer_id: int) -> GroupRec: ...

    @abc.abstractmethod
    async def group_members(self, conv_id: int, viewer_id: int, after: int, limit: int) -> list[MemberRec]: ...

    @abc.abstractmethod
    async def member_ids(self, conv_id: int) -> list[int]:
        """Current members of a conversation (for pushes of read-fan-out groups and typing)."""

    @abc.abstractmethod
    async def read_groups(self, user_id: int) -> list[GroupHead]:
        """The read-fan-out groups of the user, and those left with entries still to pull
        (left after ``from_seq`` + 1: entries between came by no inbox)."""

    # recall and receipts ----------------------------------------------------------------------
    @abc.abstractmethod
    async def recall(self, conv_id: int, actor_id: int, seq: int, msg_id: int, now: int, limit_ms: int) -> SendResult:
        """Replace a message by a recalled marker and append a "recall" entry naming it."""

    @abc.abstractmethod
    async def receipts(self, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
        """(members who have read up to seq, members who could read it)."""

    @abc.abstractmethod
    async def max_msg_id(self) -> int:
        """Largest message id stored (seeds the Snowflake generator after a restart)."""
