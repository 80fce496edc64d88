"""The report store: users report a message or a user, server admins work the queue
(``schema_sqlite_0009_reports.sql``, ``schema_postgres_0013_reports.sql``).

A report of a message keeps a snapshot of what was reported (its kind, body and send time)
taken in the transaction that files it: the sender may edit or recall the message later,
and the admin must see what the reporter saw. A report is never deleted by yim.

Filing checks, in its transaction, that the reporter may see what they report, that they
have no open report of the same target (a repeat returns that one), and that they are under
their hourly limit (yim/storage/rules/reports.py). A resolution is one admin action, one
transaction: the actor is checked, the action taken (the message recalled as a server admin,
or the reported user disabled and signed out), every open report of the same target closed,
and the audit row appended (yim/storage/admin.py).

Which rows each write may lock (PostgreSQL, yim/storage/postgres/locks.py): filing anchors
the reporter (their open reports and their count in the last hour); a resolution anchors
the reported user, whose row guards the reports of them and of their messages, and, to
recall, the message's conversation, its write fan-out members and the admin.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec

from yim.storage.admin import AuditEntry
from yim.storage.media import MediaRec
from yim.storage.records import SendResult

ReportTarget = Literal["message", "user"]
Resolution = Literal["dismiss", "recall", "disable"]


class NewReport(msgspec.Struct, frozen=True):
    """A report as the reporter files it: a message (``conv_id``, ``seq``) or a user."""

    id: int
    reporter_id: int
    category: str
    text: str
    created_at: int
    conv_id: int | None = None
    seq: int | None = None
    user_id: int | None = None

    @property
    def target(self) -> str:
        return target_key(self.conv_id, self.seq, self.user_id)


class ReportRec(msgspec.Struct, frozen=True):
    id: int
    reporter_id: int
    target: str  # "message:<conv_id>:<seq>" or "user:<user_id>": one open report per reporter and target
    user_id: int  # the reported user: the user, or the message's sender
    conv_id: int | None
    seq: int | None
    msg_id: int | None
    category: str
    text: str
    snap_kind: str | None  # the reported message as it was when reported
    snap_body: bytes | None
    snap_at: int | None
    created_at: int
    status: str  # "open" | "resolved"
    resolved_at: int | None
    resolved_by: int | None  # the admin; None while open, or the operator on the host
    resolution: str | None  # "dismiss" | "recall" | "disable"
    note: str

    @property
    def kind(self) -> ReportTarget:
        return "message" if self.conv_id is not None else "user"


class ContextEntry(msgspec.Struct, frozen=True):
    """An entry around a reported message, as stored now (a recalled one has an empty body)."""

    seq: int
    sender_id: int
    kind: str
    body: bytes
    created_at: int
    recalled: bool


class Resolved(msgspec.Struct, frozen=True):
    """What a resolution did: the report after it, how many open reports of the same target
    it closed (this one included), the recall entry to deliver, the sessions it ended, and
    the reports it closed as they are now (each reporter is told of theirs)."""

    report: ReportRec
    closed: int
    recall: SendResult | None
    revoked: list[str]
    resolved: list[ReportRec] = []


def target_key(conv_id: int | None, seq: int | None, user_id: int | None) -> str:
    return f"message:{conv_id}:{seq}" if conv_id is not None else f"user:{user_id}"


#: the columns of a ReportRec, in its order, in both dialects
REPORT_COLUMNS = (
    "id, reporter_id, target, user_id, conv_id, seq, msg_id, category, text, snap_kind, snap_body, snap_at,"
    " created_at, status, resolved_at, resolved_by, resolution, note"
)


def report_from_row(r: Any) -> ReportRec:
    body = r[10]
    return ReportRec(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
        body.encode() if isinstance(body, str) else body,
        r[11], r[12], r[13], r[14], r[15], r[16], r[17],
    )  # fmt: skip


class ReportStore(abc.ABC):
    @abc.abstractmethod
    async def file(self, new: NewReport, limit_per_hour: int) -> tuple[ReportRec, bool]:
        """File a report, or return the reporter's open report of the same target (True:
        a repeat). Refused: a message the reporter cannot see (``not_member``,
        ``not_found``), their own message or account, a system entry (``bad_request``), a
        recalled message (``already_recalled``), over ``limit_per_hour`` new reports in the
        last hour (``rate_limited``, 0: no limit)."""

    @abc.abstractmethod
    async def reports(
        self, actor_id: int | None, status: str | None, before: int | None, limit: int
    ) -> list[ReportRec]:
        """Reports newest first, ids below ``before``, of one status (None: every one)."""

    @abc.abstractmethod
    async def report(self, actor_id: int | None, report_id: int) -> tuple[ReportRec, list[ContextEntry]]:
        """One report and the entries around its message (three each side), or ``not_found``."""

    @abc.abstractmethod
    async def my_reports(self, reporter_id: int, before: int | None, limit: int) -> list[ReportRec]:
        """The reporter's own reports, newest first, ids below ``before``."""

    @abc.abstractmethod
    async def report_media(self, actor_id: int | None, report_id: int, media_id: int) -> MediaRec:
        """The media file the report's message carries, for a server admin (``forbidden``
        otherwise), whether or not they can see the conversation: ``not_found`` for no such
        report, ``media_not_found`` for a media id the reported message does not carry (its
        snapshot) or whose file is gone."""

    @abc.abstractmethod
    async def resolve(
        self,
        actor_id: int | None,
        report: ReportRec,
        action: Resolution,
        note: str,
        msg_id: int,
        audit: AuditEntry,
        disable_audit: AuditEntry,
    ) -> Resolved:
        """Resolve ``report`` (read before, for what it locks) and every open report of its
        target: ``dismiss``; ``recall`` the message for everyone (``msg_id``: the recall
        entry's; nothing to do if it was recalled meanwhile); ``disable`` the reported user
        (with ``disable_audit``, as admin_disable). ``note``, the admin's words, is kept on
        every report it resolves. ``already_resolved`` if it is not open."""


class ReportJobRunner(Protocol):
    """How a backend runs a report job ``fn(conn, *args)``. A write locks the users it names
    and, to append to a conversation (a recall), that conversation and its members."""

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...], conv_id: int | None
    ) -> Awaitable[Any]: ...

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]: ...


class ReportJobs(ReportStore):
    """The report store of either backend: each method runs the backend's job of the same
    name (from ``jobs``) through its runner."""

    def __init__(self, jobs: Any, runner: ReportJobRunner) -> None:
        self._jobs = jobs
        self._run = runner

    async def file(self, new: NewReport, limit_per_hour: int) -> tuple[ReportRec, bool]:
        return await self._run.write(self._jobs.file, (new, limit_per_hour), (new.reporter_id,), None)

    async def reports(
        self, actor_id: int | None, status: str | None, before: int | None, limit: int
    ) -> list[ReportRec]:
        return await self._run.read(self._jobs.reports, (actor_id, status, before, limit))

    async def report(self, actor_id: int | None, report_id: int) -> tuple[ReportRec, list[ContextEntry]]:
        return await self._run.read(self._jobs.report, (actor_id, report_id))

    async def my_reports(self, reporter_id: int, before: int | None, limit: int) -> list[ReportRec]:
        return await self._run.read(self._jobs.my_reports, (reporter_id, before, limit))

    async def report_media(self, actor_id: int | None, report_id: int, media_id: int) -> MediaRec:
        return await self._run.read(self._jobs.report_media, (actor_id, report_id, media_id))

    async def resolve(
        self,
        actor_id: int | None,
        report: ReportRec,
        action: Resolution,
        note: str,
        msg_id: int,
        audit: AuditEntry,
        disable_audit: AuditEntry,
    ) -> Resolved:
        args = (actor_id, report.id, action, note, msg_id, audit, disable_audit)
        if action == "recall" and report.conv_id is not None:
            # the recall entry's sender is the admin (none for the operator on the host)
            users = (report.user_id,) if actor_id is None else (report.user_id, actor_id)
            return await self._run.write(self._jobs.resolve, args, users, report.conv_id)
        return await self._run.write(self._jobs.resolve, args, (report.user_id,), None)
