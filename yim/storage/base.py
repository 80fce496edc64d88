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

import msgspec


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


class SendCmd(msgspec.Struct, frozen=True):
    """What the messages service asks the store to append. Exactly one of to / conv_id."""

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


class SendResult(msgspec.Struct, frozen=True):
    message: MessageRec
    sender_inbox_seq: int
    duplicate: bool
    #: (user_id, inbox_seq) for every member whose inbox got the message, sender included.
    deliveries: list[tuple[int, int]]


class InboxEvent(msgspec.Struct, frozen=True):
    seq: int
    type: str  # "message" | "read"
    conv_id: int
    conv_seq: int
    message: MessageRec | None = None


class ReadRes(msgspec.Struct, frozen=True):
    read_seq: int
    unread: int
    total_unread: int
    #: inbox seq of the "read" event written for the user's devices; None if nothing moved.
    inbox_seq: int | None


class ConvRow(msgspec.Struct, frozen=True):
    conv_id: int
    type: str
    peer_id: int | None
    last_seq: int
    read_seq: int
    last_msg_id: int
    updated_at: int
    last_message: MessageRec | None


class Store(abc.ABC):
    """A durable store. All methods are coroutines; each is atomic."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

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
    async def conversations(self, user_id: int, before: int | None, limit: int) -> tuple[list[ConvRow], int]:
        """The user's conversations, most recent first (paged by last_msg_id), and total unread."""

    @abc.abstractmethod
    async def max_msg_id(self) -> int:
        """Largest message id stored (seeds the Snowflake generator after a restart)."""
