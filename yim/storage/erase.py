"""The erasure store: erasing an account (an admin's action, or a user's own deletion once
its grace period is over) and the steps that clear what it left (docs/protocol.md §19.8).

An erasure is a row of ``account_erasures`` (``schema_sqlite_0008_erasure.sql``,
``schema_postgres_0012_erasure.sql``) that goes ``pending`` (a self-service deletion in its
grace period; a login deletes it) → ``running`` → ``done``. The step that makes it
``running`` — :meth:`EraseStore.erase_account` for an admin, :meth:`EraseStore.claim_due`
for a due deletion — is one transaction that also erases the account itself: its sessions
end, its devices, pushers, relations, inbox and hidden marks go, its profile is blanked
(:data:`BLANKED_PROFILE`), it is marked erased (no login, no lookup) and the audit row is
appended. What follows — leaving groups, clearing messages per conversation, dropping
media no one else uses — is a step per unit, each safe to run again: a node that dies
half-way leaves a ``running`` row whose claim goes stale, and another node takes it again.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from yim.storage.admin import AuditEntry
from yim.storage.relations import InboxWrite

#: What an erasure writes over the account's profile: every field a person put there. The one
#: place that says it (both stores build their UPDATE from it); the username is not here —
#: it stays, reserved, so no one can take the name and pass for the erased person in old
#: conversations; lookups leave erased accounts out instead.
BLANKED_PROFILE: dict[str, str | None] = {"display_name": "", "password_hash": "", "avatar_media_id": None}


def blank_profile_sql(placeholder: Callable[[int], str], first: int) -> tuple[str, list[str | None]]:
    """The ``SET`` list blanking the profile, its placeholders numbered from ``first``."""
    cols = list(BLANKED_PROFILE)
    return ", ".join(f"{c}={placeholder(first + i)}" for i, c in enumerate(cols)), [BLANKED_PROFILE[c] for c in cols]


class ErasureWork(msgspec.Struct, frozen=True):
    """An account just erased, and what is left to clear."""

    user_id: int
    mode: str  # 'tombstone' | 'remove'
    revoked: list[str]  # the sessions that ended (to close on every node)
    groups: list[tuple[int, str]]  # (conv_id, role) of the groups it was in
    convs: list[int]  # conversations it may have written to


class EraseJobRunner(Protocol):
    """How the adapter runs a backend's job: a write names the users and conversations it
    locks (PostgreSQL's anchors; ``None``: the job finds them itself and runs alone)."""

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None, convs: tuple[int, ...]
    ) -> Awaitable[Any]: ...

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]: ...


class EraseStore(abc.ABC):
    @abc.abstractmethod
    async def erase_account(
        self, actor_id: int | None, user_id: int, mode: str, now: int, audit: AuditEntry
    ) -> ErasureWork:
        """An admin's erasure (checks the actor as every admin action, appends ``audit``)."""

    @abc.abstractmethod
    async def request_deletion(self, user_id: int, mode: str, now: int, due_at: int) -> int:
        """The user's own deletion, to run at ``due_at`` (an earlier request keeps its time);
        returns when it runs."""

    @abc.abstractmethod
    async def cancel_deletion(self, user_id: int) -> bool:
        """Cancel a pending deletion (a login does); True if there was one."""

    @abc.abstractmethod
    async def pending_deletion(self, user_id: int) -> int | None:
        """When the user's pending deletion runs, or None."""

    @abc.abstractmethod
    async def claim_due(self, now: int, stale_before: int, limit: int, audit: AuditEntry) -> list[ErasureWork]:
        """Take due deletions (and erasures whose claim is older than ``stale_before``) and
        erase their accounts, each exactly once across nodes; ``audit`` is the row to append
        (action and target are filled in per account, the actor is the user)."""

    @abc.abstractmethod
    async def reactions_by(self, user_id: int, conv_id: int) -> list[tuple[int, str]]:
        """The user's reactions in one conversation: (seq, emoji)."""

    @abc.abstractmethod
    async def shops_owned(self, user_id: int) -> list[int]:
        """The open shops the user owns."""

    @abc.abstractmethod
    async def release_shop(self, user_id: int, shop_id: int, now: int) -> tuple[int | None, list[InboxWrite]]:
        """Hand a shop the erased user owns to its heir (``rules.erase.shop_heir``), else close
        it: every open session closed (``service`` ``closed`` events, returned), every agent
        removed, ``closed_at`` set. Returns the shop's owner now (None: closed). A shop the
        user no longer owns is left as it is (a step run again)."""

    @abc.abstractmethod
    async def erase_messages(self, user_id: int, conv_id: int, mode: str) -> int:
        """Clear the user's entries in one conversation; how many were cleared."""

    @abc.abstractmethod
    async def erase_media(self, user_id: int) -> list[str]:
        """Drop the user's uploads no entry refers to any more; the blob keys left unused."""

    @abc.abstractmethod
    async def finish(self, user_id: int, now: int) -> None:
        """The erasure is done."""


class EraseJobs(EraseStore):
    """The erasure store of either backend: each method runs the backend's job of the same
    name from ``jobs`` through ``runner``."""

    def __init__(self, jobs: Any, runner: EraseJobRunner) -> None:
        self._jobs = jobs
        self._run = runner

    async def erase_account(
        self, actor_id: int | None, user_id: int, mode: str, now: int, audit: AuditEntry
    ) -> ErasureWork:
        # Finds the relations' other users only as it runs (PostgreSQL: alone, its own prelude).
        return await self._run.write(self._jobs.erase_account, (actor_id, user_id, mode, now, audit), None, ())

    async def request_deletion(self, user_id: int, mode: str, now: int, due_at: int) -> int:
        return await self._run.write(self._jobs.request_deletion, (user_id, mode, now, due_at), (), ())

    async def cancel_deletion(self, user_id: int) -> bool:
        return await self._run.write(self._jobs.cancel_deletion, (user_id,), (), ())

    async def pending_deletion(self, user_id: int) -> int | None:
        return await self._run.read(self._jobs.pending_deletion, (user_id,))

    async def claim_due(self, now: int, stale_before: int, limit: int, audit: AuditEntry) -> list[ErasureWork]:
        return await self._run.write(self._jobs.claim_due, (now, stale_before, limit, audit), None, ())

    async def reactions_by(self, user_id: int, conv_id: int) -> list[tuple[int, str]]:
        return await self._run.read(self._jobs.reactions_by, (user_id, conv_id))

    async def shops_owned(self, user_id: int) -> list[int]:
        return await self._run.read(self._jobs.shops_owned, (user_id,))

    async def release_shop(self, user_id: int, shop_id: int, now: int) -> tuple[int | None, list[InboxWrite]]:
        # Finds the sessions' conversations and agents only as it runs (PostgreSQL: alone,
        # after the shop's row lock, as every customer-service job).
        return await self._run.write(self._jobs.release_shop, (user_id, shop_id, now), None, ())

    async def erase_messages(self, user_id: int, conv_id: int, mode: str) -> int:
        return await self._run.write(self._jobs.erase_messages, (user_id, conv_id, mode), (), (conv_id,))

    async def erase_media(self, user_id: int) -> list[str]:
        return await self._run.write(self._jobs.erase_media, (user_id,), (), ())

    async def finish(self, user_id: int, now: int) -> None:
        await self._run.write(self._jobs.finish, (user_id, now), (), ())
