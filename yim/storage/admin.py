"""The admin store interface: server roles, disabled accounts, password and profile changes,
and the audit log (``schema_sqlite_0002_admin.sql``, ``schema_postgres_0006_admin.sql``).

Every admin action is one method, one transaction: it checks that its actor is a server
admin (:func:`yim.storage.rules.admin.require_admin`, against the actor's row read inside
that transaction, so a revoked admin cannot act in a race), makes its change, and appends
its audit row. The audit log is append-only: no method updates or deletes a row, and the
schema's triggers refuse it to anyone who tries with SQL.

``actor_id`` ``None`` is the operator on the host (``yim admin`` opened the store itself):
trusted by who they are, and recorded as such.
"""

from __future__ import annotations

import abc
from typing import Any

import msgspec

from yim.storage.records import GroupChange, GroupRec
from yim.storage.relations import InboxWrite
from yim.storage.service import AgentRec, ShopRec


class AccountRec(msgspec.Struct, frozen=True):
    """A user as an admin sees one."""

    id: int
    username: str
    display_name: str
    created_at: int
    is_admin: bool
    disabled_at: int | None


class AuditEntry(msgspec.Struct, frozen=True):
    """One admin action to record (what the caller knows: when, where from, what detail)."""

    at: int
    source: str
    action: str = ""
    target: str = ""
    detail: bytes = b"{}"  # a JSON object


class AuditRec(msgspec.Struct, frozen=True):
    id: int
    at: int
    actor_id: int | None
    action: str
    target: str
    detail: bytes
    source: str


class UserFacts(msgspec.Struct, frozen=True):
    """What ``admin_user`` shows beside the account: its groups (conv_id, name, role) and
    how many messages it has sent."""

    groups: list[tuple[int, str, str]]
    message_count: int


#: the columns of an AccountRec, in its order, in both dialects
ACCOUNT_COLUMNS = "id, username, display_name, created_at, is_admin, disabled_at"
#: the columns of an AuditRec
AUDIT_COLUMNS = "id, at, actor_id, action, target, detail, source"


def like_pattern(query: str) -> str:
    """``query`` as a LIKE / ILIKE pattern matching it anywhere, its wildcards escaped (\\)."""
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def id_of(query: str) -> int:
    """The id a query names, or -1 (no id) when it is not one."""
    return int(query) if query.isascii() and query.isdigit() and int(query) < 2**63 else -1


def account_from_row(r: Any) -> AccountRec:
    return AccountRec(r[0], r[1], r[2], r[3], bool(r[4]), r[5])


def audit_from_row(r: Any) -> AuditRec:
    detail = r[5]
    return AuditRec(r[0], r[1], r[2], r[3], r[4], detail.encode() if isinstance(detail, str) else bytes(detail), r[6])


class AdminStore(abc.ABC):
    # reads (each checks its actor) ---------------------------------------------------------
    @abc.abstractmethod
    async def account(self, user_id: int) -> AccountRec | None:
        """The account, whoever asks (the services use it for a user's own flags)."""

    @abc.abstractmethod
    async def find_users(self, actor_id: int | None, query: str, after: int, limit: int) -> list[AccountRec]:
        """Accounts by id order after ``after``; ``query`` (if not empty) matches the id
        exactly, or the username or display name as a case-insensitive substring."""

    @abc.abstractmethod
    async def user_facts(self, actor_id: int | None, user_id: int) -> tuple[AccountRec, UserFacts]:
        """The account and its facts, or YimError('not_found')."""

    @abc.abstractmethod
    async def audit(self, actor_id: int | None, before: int | None, limit: int) -> list[AuditRec]:
        """The audit log, newest first, ids below ``before``."""

    # actions (each appends ``audit`` in its own transaction) -------------------------------
    @abc.abstractmethod
    async def set_disabled(
        self, actor_id: int | None, user_id: int, disabled: bool, audit: AuditEntry
    ) -> tuple[AccountRec, list[str]]:
        """Disable (and revoke every live session: the ids are returned) or enable."""

    @abc.abstractmethod
    async def set_admin(self, actor_id: int | None, user_id: int, is_admin: bool, audit: AuditEntry) -> AccountRec:
        """Grant or take back the server-admin role."""

    @abc.abstractmethod
    async def set_password(
        self,
        actor_id: int | None,
        user_id: int,
        password_hash: str,
        keep_session: str | None,
        now: int,
        audit: AuditEntry | None,
    ) -> list[str]:
        """Replace the password hash and revoke every live session but ``keep_session``.
        ``actor_id`` is the admin resetting it (with ``audit``), or the user themself
        (``actor_id == user_id``, no audit row: not an admin action)."""

    @abc.abstractmethod
    async def revoke_devices(
        self, actor_id: int | None, user_id: int, device_id: str | None, audit: AuditEntry
    ) -> list[str]:
        """Revoke the live sessions of one device of the user, or of all (``None``)."""

    # groups (each checks its actor; the actions append ``audit``) ----------------------------
    @abc.abstractmethod
    async def find_groups(self, actor_id: int | None, query: str, after: int, limit: int) -> list[GroupRec]:
        """Groups (dissolved ones too) by id after ``after``; ``query`` matches the id exactly
        or the name in part, ignoring case."""

    @abc.abstractmethod
    async def group(self, actor_id: int | None, conv_id: int) -> GroupRec:
        """One group, dissolved or not, or YimError('not_found')."""

    @abc.abstractmethod
    async def dissolve_group(
        self, actor_id: int | None, conv_id: int, msg_id: int, now: int, audit: AuditEntry
    ) -> GroupChange:
        """Dissolve a group as its owner would, the admin named as the actor of the
        "dissolved" system entry."""

    @abc.abstractmethod
    async def transfer_group(
        self, actor_id: int | None, conv_id: int, user_id: int, msg_id: int, now: int, audit: AuditEntry
    ) -> GroupChange:
        """Make a current member the owner (the old owner becomes a group admin); the
        "owner" system entry names the admin as its actor."""

    # shops (the actions append ``audit``) -----------------------------------------------------
    @abc.abstractmethod
    async def create_shop(
        self, actor_id: int | None, shop_id: int, name: str, owner_id: int, now: int, audit: AuditEntry
    ) -> ShopRec:
        """A shop for ``owner_id`` (its first admin agent), as if they had created it."""

    @abc.abstractmethod
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
        """Add or change an agent of any shop, as its owner could (routing runs as then)."""

    @abc.abstractmethod
    async def set_display_name(self, user_id: int, display_name: str) -> AccountRec:
        """The user's own change (not an admin action: no audit row)."""

    @abc.abstractmethod
    async def record_export(self, actor_id: int | None, user_id: int, audit: AuditEntry) -> AccountRec:
        """An admin (or the operator on the host) is about to export ``user_id``'s data: the
        actor is checked and the audit row appended, before any of the data is read."""

    @abc.abstractmethod
    async def set_avatar(self, user_id: int, media_id: int | None) -> AccountRec:
        """The user's own avatar (None: none); the caller checked the media is an image the
        user uploaded (not an admin action: no audit row)."""
