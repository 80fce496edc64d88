"""The storage interface (the records it speaks are in :mod:`yim.storage.records`).

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
from typing import TYPE_CHECKING

from yim.storage.records import (
    ConvRow,
    CreateGroupCmd,
    DeviceRec,
    GroupChange,
    GroupHead,
    GroupRec,
    InboxEvent,
    MemberRec,
    MessageRec,
    ReadRes,
    SendCmd,
    SendResult,
    SessionRec,
    UserRec,
)
from yim.storage.relations import RelationStore
from yim.storage.rules.quotes import Quotable
from yim.storage.service import ServiceStore

if TYPE_CHECKING:
    from yim.storage.admin import AdminStore
    from yim.storage.erase import EraseStore
    from yim.storage.media import MediaStore
    from yim.storage.outbox import OutboxStore
    from yim.storage.push import PushStore
    from yim.storage.reactions import ReactionStore
    from yim.storage.reports import ReportStore
    from yim.storage.search import SearchStore


class Store(abc.ABC):
    """A durable store. All methods are coroutines; each is atomic.

    Concepts with their own interface hang off it: ``store.relations``
    (:class:`yim.storage.relations.RelationStore`), ``store.service``
    (:class:`yim.storage.service.ServiceStore`), ``store.media``
    (:class:`yim.storage.media.MediaStore`), ``store.search``
    (:class:`yim.storage.search.SearchStore`), ``store.reactions``
    (:class:`yim.storage.reactions.ReactionStore`: reactions and pins), ``store.admin``
    (:class:`yim.storage.admin.AdminStore`), ``store.push``
    (:class:`yim.storage.push.PushStore`), ``store.outbox``
    (:class:`yim.storage.outbox.OutboxStore`: webhook events to deliver), ``store.reports``
    (:class:`yim.storage.reports.ReportStore`: reports and the admins' queue)."""

    relations: RelationStore
    service: ServiceStore
    media: MediaStore
    search: SearchStore
    reactions: ReactionStore
    admin: AdminStore
    push: PushStore
    outbox: OutboxStore
    erase: EraseStore  # erasing accounts (yim/storage/erase.py)
    reports: ReportStore

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """The writer's counters (jobs, batches, commits, conflicts, ...), read at every
        scrape of /metrics (``yim_store_<name>_total``): cheap, no I/O."""

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
    async def edit(
        self,
        conv_id: int,
        actor_id: int,
        seq: int,
        body: bytes,
        mentions: tuple[int, ...] | None,
        msg_id: int,
        now: int,
        window_ms: int,
    ) -> SendResult:
        """Replace the text of the actor's own text message (``body``: canonical; ``mentions``:
        its new mention list, None to keep it) within ``window_ms`` of its send, keep the text
        it had as a version, and append an "edit" entry naming it (rules/timeline.py)."""

    @abc.abstractmethod
    async def message_versions(self, user_id: int, conv_id: int, seq: int) -> list[tuple[bytes, int]]:
        """The earlier versions ``(body, written_at)`` of a message, oldest first, for a
        member whose window holds it."""

    @abc.abstractmethod
    async def hide(self, user_id: int, conv_id: int, seqs: list[int], now: int) -> tuple[list[int], ReadRes]:
        """Delete for me: hide entries of a conversation (inside the user's window) from the
        user's own devices — their history, sync and search leave them out, their unread
        does not count them — with a ``hidden`` event in the user's inbox. Returns the seqs
        newly hidden and the user's counts after."""

    @abc.abstractmethod
    async def quotable(self, conv_id: int, user_id: int, seqs: list[int]) -> Quotable:
        """The messages at ``seqs`` that a current member may quote in a reply or forward
        (rules/quotes.py: inside their visible window, not recalled, not system entries),
        with what a quote's snapshot needs; else the refusal. From one snapshot."""

    @abc.abstractmethod
    async def receipts(self, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
        """(members who have read up to seq, members who could read it)."""

    @abc.abstractmethod
    async def max_msg_id(self) -> int:
        """Largest message id stored (seeds the Snowflake generator after a restart)."""
