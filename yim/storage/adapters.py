"""The concept stores of both backends, written once: each method runs the backend's job
of the same name through a runner, the one place where the dialects differ (how a job
is submitted, what it declares before it runs, which reads need a transaction)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Protocol

from yim.storage.admin import AccountRec, AdminStore, AuditEntry, AuditRec, UserFacts
from yim.storage.reactions import MessageReactions, PinChange, PinRec, ReactionChange, ReactionStore
from yim.storage.records import GroupChange, GroupRec
from yim.storage.relations import (
    EdgeRec,
    FriendRec,
    FriendRequestRec,
    InboxWrite,
    PrivacyRec,
    RelationCounts,
    RelationState,
    RelationStore,
)
from yim.storage.rules import service as service_rules
from yim.storage.service import AgentRec, ServiceCtx, ServiceSessionRec, ServiceStore, ShopRec, ShopStats


class JobRunner(Protocol):
    """How a backend runs a job ``fn(conn, *args)``: the one place the two dialects differ
    for the relation store. ``users``: the users a write is about, as far as they are
    known before it runs (None: only the job finds them)."""

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None) -> Awaitable[Any]: ...

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]: ...


class RelationJobs(RelationStore):
    """The relation store of either backend: each method runs the backend's job of the same
    name (from ``jobs``, its module of relation jobs) through its runner."""

    def __init__(self, jobs: ModuleType, runner: JobRunner) -> None:
        self._jobs = jobs
        self._run = runner

    async def friend_request(
        self, request_id: int, from_id: int, to_id: int, message: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        return await self._run.write(
            self._jobs.friend_request, (request_id, from_id, to_id, message, now), (from_id, to_id)
        )

    async def friend_respond(
        self, request_id: int, actor_id: int, action: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        # The request's users are known only inside the job.
        return await self._run.write(self._jobs.friend_respond, (request_id, actor_id, action, now), None)

    async def friend_delete(self, actor_id: int, other_id: int, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.friend_delete, (actor_id, other_id, now), (actor_id, other_id))

    async def friend_update(
        self, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
    ) -> FriendRec:
        return await self._run.write(self._jobs.friend_update, (actor_id, other_id, remark, tags), (actor_id,))

    async def follow(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.follow, (actor_id, target_id, on, now), (actor_id, target_id))

    async def block(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.block, (actor_id, target_id, on, now), (actor_id, target_id))

    async def set_privacy(self, user_id: int, dm_policy: str | None, presence: str | None) -> PrivacyRec:
        return await self._run.write(self._jobs.set_privacy, (user_id, dm_policy, presence), (user_id,))

    async def privacy(self, user_id: int) -> PrivacyRec:
        return await self._run.read(self._jobs.privacy, (user_id,))

    async def friend_requests(
        self, user_id: int, incoming: bool, before: int | None, limit: int
    ) -> list[FriendRequestRec]:
        return await self._run.read(self._jobs.friend_requests, (user_id, incoming, before, limit))

    async def friends(self, user_id: int, after: int, limit: int) -> list[FriendRec]:
        return await self._run.read(self._jobs.friends, (user_id, after, limit))

    async def edges(self, user_id: int, kind: str, after: int, limit: int) -> list[EdgeRec]:
        return await self._run.read(self._jobs.edges, (user_id, kind, after, limit))

    async def counts(self, user_id: int) -> RelationCounts:
        return await self._run.read(self._jobs.counts, (user_id,))

    async def relation(self, user_id: int, other_id: int) -> RelationState:
        return await self._run.read(self._jobs.relation, (user_id, other_id))

    async def blocked_either_way(self, user_id: int, others: list[int]) -> set[int]:
        return await self._run.read(self._jobs.blocked_either_way, (user_id, others))

    async def presence_audience(self, user_id: int) -> list[int]:
        return await self._run.read(self._jobs.presence_audience, (user_id,))

    async def presence_audiences(self, user_ids: list[int]) -> dict[int, list[int]]:
        return await self._run.read(self._jobs.presence_audiences, (user_ids,))

    async def presence_visible(self, viewer_id: int, user_ids: list[int]) -> set[int]:
        return await self._run.read(self._jobs.presence_visible, (viewer_id, user_ids))

    async def profile_audience(self, user_id: int, max_group_members: int, limit: int) -> list[int]:
        return await self._run.read(self._jobs.profile_audience, (user_id, max_group_members, limit))


class ServiceJobs(ServiceStore):
    """The customer-service store of either backend (jobs: its module of service jobs).
    Routing jobs find what they lock as they go: none declares its users beforehand."""

    def __init__(self, jobs: ModuleType, runner: JobRunner) -> None:
        self._jobs = jobs
        self._run = runner
        self.ctx: ServiceCtx | None = None

    def _ctx(self) -> ServiceCtx:
        return service_rules.running(self.ctx)

    async def create_shop(self, shop_id: int, name: str, owner_id: int, now: int) -> ShopRec:
        return await self._run.write(self._jobs.create_shop, (shop_id, name, owner_id, now), None)

    async def set_agent(
        self, shop_id: int, actor_id: int, user_id: int, role: str, skills: list[str], capacity: int, now: int
    ) -> tuple[AgentRec, list[InboxWrite]]:
        args = (shop_id, actor_id, user_id, role, skills, capacity, now, self._ctx())
        return await self._run.write(self._jobs.set_agent, args, None)

    async def remove_agent(self, shop_id: int, actor_id: int, user_id: int, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.remove_agent, (shop_id, actor_id, user_id, now, self._ctx()), None)

    async def set_agent_status(self, user_id: int, shop_id: int | None, status: str, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.set_agent_status, (user_id, shop_id, status, now, self._ctx()), None)

    async def agent_presence(self, user_id: int, online: bool, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.agent_presence, (user_id, online, now, self._ctx()), None)

    async def transfer(
        self, session_id: int, actor_id: int, to_agent: int | None, to_category: str | None, now: int
    ) -> list[InboxWrite]:
        args = (session_id, actor_id, to_agent, to_category, now, self._ctx())
        return await self._run.write(self._jobs.transfer, args, None)

    async def close(self, session_id: int, actor_id: int, now: int) -> list[InboxWrite]:
        return await self._run.write(self._jobs.close, (session_id, actor_id, now, self._ctx()), None)

    async def rate(self, session_id: int, customer_id: int, rating: int, comment: str, now: int) -> ServiceSessionRec:
        return await self._run.write(self._jobs.rate, (session_id, customer_id, rating, comment, now), None)

    async def shop(self, shop_id: int) -> ShopRec | None:
        return await self._run.read(self._jobs.shop, (shop_id,))

    async def shops_of(self, user_id: int) -> list[ShopRec]:
        return await self._run.read(self._jobs.shops_of, (user_id,))

    async def search_shops(self, q: str, offset: int, limit: int) -> list[ShopRec]:
        return await self._run.read(self._jobs.search_shops, (q, offset, limit))

    async def agents(self, shop_id: int, viewer_id: int) -> list[AgentRec]:
        return await self._run.read(self._jobs.agents, (shop_id, viewer_id))

    async def sessions(
        self, viewer_id: int, shop_id: int | None, status: str | None, limit: int
    ) -> list[ServiceSessionRec]:
        return await self._run.read(self._jobs.sessions, (viewer_id, shop_id, status, limit))

    async def customer_session(self, shop_id: int, customer_id: int) -> ServiceSessionRec | None:
        return await self._run.read(self._jobs.customer_session, (shop_id, customer_id))

    async def stats(self, shop_id: int, viewer_id: int, now: int) -> ShopStats:
        return await self._run.read(self._jobs.stats, (shop_id, viewer_id, now))


class ConvJobRunner(Protocol):
    """How a backend runs a reaction or pin job ``fn(conn, *args)``. A write locks one
    conversation, its actor and, under write fan-out, its members (whose inboxes get the
    event): what PostgreSQL declares as the job's anchors (postgres/locks.py)."""

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, actor_id: int) -> Awaitable[Any]: ...

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]: ...


class ReactionJobs(ReactionStore):
    """The reaction store of either backend: each method runs the backend's job of the
    same name (from ``jobs``) through its runner."""

    def __init__(self, jobs: Any, runner: ConvJobRunner) -> None:
        self._jobs = jobs
        self._run = runner

    async def react(
        self, conv_id: int, user_id: int, seq: int, emoji: str, add: bool, now: int, max_per_user: int
    ) -> ReactionChange:
        return await self._run.write(
            self._jobs.react, (conv_id, user_id, seq, emoji, add, now, max_per_user), conv_id, user_id
        )

    async def reactions_of(self, conv_id: int, viewer_id: int, seqs: list[int]) -> dict[int, MessageReactions]:
        if not seqs:
            return {}
        return await self._run.read(self._jobs.reactions_of, (conv_id, viewer_id, seqs))

    async def changed_since(
        self, conv_id: int, viewer_id: int, after_ver: int, limit: int
    ) -> tuple[list[MessageReactions], int, bool]:
        return await self._run.read(self._jobs.changed_since, (conv_id, viewer_id, after_ver, limit))

    async def reactors(self, conv_id: int, viewer_id: int, seq: int, emoji: str, after: int, limit: int) -> list[int]:
        return await self._run.read(self._jobs.reactors, (conv_id, viewer_id, seq, emoji, after, limit))

    async def versions(self, conv_ids: list[int]) -> dict[int, int]:
        if not conv_ids:
            return {}
        return await self._run.read(self._jobs.versions, (conv_ids,))

    async def pin(
        self, conv_id: int, actor_id: int, seq: int, pin: bool, msg_id: int, now: int, max_pins: int
    ) -> PinChange:
        return await self._run.write(
            self._jobs.pin, (conv_id, actor_id, seq, pin, msg_id, now, max_pins), conv_id, actor_id
        )

    async def pins(self, conv_ids: list[int]) -> dict[int, list[PinRec]]:
        if not conv_ids:
            return {}
        return await self._run.read(self._jobs.pins, (conv_ids,))


class AdminJobRunner(Protocol):
    """How a backend runs an admin job ``fn(conn, *args)``. A write about users names them
    (None: only the job finds what it locks); a write on one group also locks the group and
    its members: every current one (``all_members``, as a dissolve, which writes each
    inbox) or those of its write fan-out."""

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None) -> Awaitable[Any]: ...

    def write_group(
        self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, users: tuple[int, ...], all_members: bool
    ) -> Awaitable[Any]: ...

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]: ...


def _sender(actor_id: int | None) -> tuple[int, ...]:
    """The sender of an admin's system entry (its client_msg_id row): none for the operator."""
    return () if actor_id is None else (actor_id,)


class AdminJobs(AdminStore):
    """The admin store of either backend: each method runs the backend's job of the same
    name (from ``jobs``; ``jobs.account`` reads one account) through its runner. Shop
    actions go as the owner's own would: through ``service`` for its routing context."""

    def __init__(self, jobs: ModuleType, runner: AdminJobRunner, service: ServiceStore) -> None:
        self._jobs = jobs
        self._run = runner
        self._service = service

    async def account(self, user_id: int) -> AccountRec | None:
        return await self._run.read(self._jobs.account, (user_id,))

    async def find_users(self, actor_id: int | None, query: str, after: int, limit: int) -> list[AccountRec]:
        return await self._run.read(self._jobs.find_users, (actor_id, query, after, limit))

    async def user_facts(self, actor_id: int | None, user_id: int) -> tuple[AccountRec, UserFacts]:
        return await self._run.read(self._jobs.user_facts, (actor_id, user_id))

    async def audit(self, actor_id: int | None, before: int | None, limit: int) -> list[AuditRec]:
        return await self._run.read(self._jobs.audit, (actor_id, before, limit))

    # A change to a user's flags, password or sessions locks that user (whose row guards
    # their sessions, as logins do); the audit row is a new row no one waits for.
    async def set_disabled(
        self, actor_id: int | None, user_id: int, disabled: bool, audit: AuditEntry
    ) -> tuple[AccountRec, list[str]]:
        return await self._run.write(self._jobs.set_disabled, (actor_id, user_id, disabled, audit), (user_id,))

    async def set_admin(self, actor_id: int | None, user_id: int, is_admin: bool, audit: AuditEntry) -> AccountRec:
        return await self._run.write(self._jobs.set_admin, (actor_id, user_id, is_admin, audit), (user_id,))

    async def set_password(
        self,
        actor_id: int | None,
        user_id: int,
        password_hash: str,
        keep_session: str | None,
        now: int,
        audit: AuditEntry | None,
    ) -> list[str]:
        args = (actor_id, user_id, password_hash, keep_session, now, audit)
        return await self._run.write(self._jobs.set_password, args, (user_id,))

    async def revoke_devices(
        self, actor_id: int | None, user_id: int, device_id: str | None, audit: AuditEntry
    ) -> list[str]:
        return await self._run.write(self._jobs.revoke_devices, (actor_id, user_id, device_id, audit), (user_id,))

    async def set_display_name(self, user_id: int, display_name: str) -> AccountRec:
        return await self._run.write(self._jobs.set_display_name, (user_id, display_name), (user_id,))

    async def record_export(self, actor_id: int | None, user_id: int, audit: AuditEntry) -> AccountRec:
        # as the other actions on a user: that user (the audit row is a new row no one waits for)
        return await self._run.write(self._jobs.record_export, (actor_id, user_id, audit), (user_id,))

    async def set_avatar(self, user_id: int, media_id: int | None) -> AccountRec:
        return await self._run.write(self._jobs.set_avatar, (user_id, media_id), (user_id,))

    async def find_groups(self, actor_id: int | None, query: str, after: int, limit: int) -> list[GroupRec]:
        return await self._run.read(self._jobs.find_groups, (actor_id, query, after, limit))

    async def group(self, actor_id: int | None, conv_id: int) -> GroupRec:
        return await self._run.read(self._jobs.group, (actor_id, conv_id))

    async def dissolve_group(
        self, actor_id: int | None, conv_id: int, msg_id: int, now: int, audit: AuditEntry
    ) -> GroupChange:
        # as the owner's dissolve: the group, every current member's inbox, and the entry's sender
        args = (actor_id, conv_id, msg_id, now, audit)
        return await self._run.write_group(self._jobs.dissolve_group, args, conv_id, _sender(actor_id), True)

    async def transfer_group(
        self, actor_id: int | None, conv_id: int, user_id: int, msg_id: int, now: int, audit: AuditEntry
    ) -> GroupChange:
        # as a group change: the group, its write fan-out members, the new owner, the sender
        args = (actor_id, conv_id, user_id, msg_id, now, audit)
        users = (user_id, *_sender(actor_id))
        return await self._run.write_group(self._jobs.transfer_group, args, conv_id, users, False)

    # Shop actions find what they lock as they go, as every customer-service write.
    async def create_shop(
        self, actor_id: int | None, shop_id: int, name: str, owner_id: int, now: int, audit: AuditEntry
    ) -> ShopRec:
        self._service.may_become_agent(owner_id)
        return await self._run.write(self._jobs.create_shop, (actor_id, shop_id, name, owner_id, now, audit), None)

    async def set_shop_agent(
        self,
        actor_id: int | None,
        shop_id: int,
        user_id: int,
        role: str,
        skills: list[str],
        capacity: int,
        now: int,
        audit: AuditEntry,
    ) -> tuple[AgentRec, list[InboxWrite]]:
        ctx = service_rules.running(self._service.ctx)
        self._service.may_become_agent(user_id)
        args = (actor_id, shop_id, user_id, role, skills, capacity, now, ctx, audit)
        return await self._run.write(self._jobs.set_shop_agent, args, None)
