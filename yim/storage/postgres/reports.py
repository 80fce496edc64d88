"""PostgreSQL jobs of the report store (yim/storage/reports.py): SQL only, the rules are shared.

Lock order (yim/storage/postgres/locks.py): filing anchors the reporter, whose row guards
their reports' inserts (one open report per target, the hourly count); a resolution anchors
the reported user, whose row guards the reports of them and of their messages (two admins
resolving the same target queue there), and to recall also the message's conversation, its
write fan-out members and the admin, as a recall by a group owner does."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from yim.storage.admin import AuditEntry
from yim.storage.media import BlobRec, MediaRec, carried_media_id, not_found
from yim.storage.postgres import admin, timeline
from yim.storage.postgres.locks import Anchors
from yim.storage.postgres.media import _BLOB_COLS
from yim.storage.postgres.runner import PgJobs
from yim.storage.reports import (
    REPORT_COLUMNS,
    ContextEntry,
    NewReport,
    ReportJobs,
    ReportRec,
    Resolved,
    report_from_row,
)
from yim.storage.rules import reports as rules

#: entries each side of a reported message that the admin sees with it
CONTEXT = 3


async def _load(conn: asyncpg.Connection, report_id: int) -> ReportRec | None:
    r = await conn.fetchrow(f"SELECT {REPORT_COLUMNS} FROM reports WHERE id=$1", report_id)
    return report_from_row(r) if r else None


async def file(conn: asyncpg.Connection, new: NewReport, limit_per_hour: int) -> tuple[ReportRec, bool]:
    r = await conn.fetchrow(
        f"SELECT {REPORT_COLUMNS} FROM reports WHERE reporter_id=$1 AND target=$2 AND status='open'",
        new.reporter_id,
        new.target,
    )
    if r is not None:
        return report_from_row(r), True
    snap: tuple[Any, ...] = (None, None, None, None)
    if new.conv_id is not None and new.seq is not None:
        member = await conn.fetchrow(
            f"SELECT uc.joined_seq, {timeline.VISIBLE_HEAD} FROM user_conversations uc"
            " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=$1 AND uc.conv_id=$2",
            new.reporter_id,
            new.conv_id,
        )
        m = await conn.fetchrow(
            "SELECT sender_id, kind, recalled, msg_id, body, created_at FROM messages WHERE conv_id=$1 AND seq=$2",
            new.conv_id,
            new.seq,
        )
        target = rules.check_message(
            new.conv_id,
            new.seq,
            new.reporter_id,
            (member[0], member[1]) if member else None,
            rules.ReportedMessage(m[0], m[1], bool(m[2])) if m else None,
        )
        user_id = target.sender_id
        snap = (m[3], target.kind, m[4], m[5])
    else:
        assert new.user_id is not None
        user_id = new.user_id
        found = await conn.fetchval("SELECT 1 FROM users WHERE id=$1", user_id)
        rules.check_user(user_id, new.reporter_id, found is not None)
    rows = await conn.fetch(
        "SELECT created_at FROM reports WHERE reporter_id=$1 AND created_at>$2",
        new.reporter_id,
        new.created_at - rules.REPORT_WINDOW_MS,
    )
    recent = [r[0] for r in rows]
    rules.check_limit(recent, new.created_at, limit_per_hour)
    await conn.execute(
        "INSERT INTO reports (id, reporter_id, target, user_id, conv_id, seq, msg_id, snap_kind, snap_body, snap_at,"
        " category, text, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        new.id,
        new.reporter_id,
        new.target,
        user_id,
        new.conv_id,
        new.seq,
        *snap,
        new.category,
        new.text,
        new.created_at,
    )
    filed = await _load(conn, new.id)
    assert filed is not None
    return filed, False


async def reports(
    conn: asyncpg.Connection, actor_id: int | None, status: str | None, before: int | None, limit: int
) -> list[ReportRec]:
    await admin._admin(conn, actor_id)
    rows = await conn.fetch(
        f"SELECT {REPORT_COLUMNS} FROM reports WHERE id<$1 AND ($2::text IS NULL OR status=$2)"
        " ORDER BY id DESC LIMIT $3",
        before if before is not None else 2**63 - 1,
        status,
        limit,
    )
    return [report_from_row(r) for r in rows]


async def report(
    conn: asyncpg.Connection, actor_id: int | None, report_id: int
) -> tuple[ReportRec, list[ContextEntry]]:
    await admin._admin(conn, actor_id)
    rec = await _load(conn, report_id)
    rules.must_exist(report_id, rec is not None)
    assert rec is not None
    context: list[ContextEntry] = []
    if rec.conv_id is not None and rec.seq is not None:
        rows = await conn.fetch(
            "SELECT seq, sender_id, kind, body, created_at, recalled FROM messages"
            " WHERE conv_id=$1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            rec.conv_id,
            rec.seq - CONTEXT,
            rec.seq + CONTEXT,
        )
        context = [ContextEntry(r[0], r[1], r[2], r[3].encode(), r[4], bool(r[5])) for r in rows]
    return rec, context


async def my_reports(conn: asyncpg.Connection, reporter_id: int, before: int | None, limit: int) -> list[ReportRec]:
    rows = await conn.fetch(
        f"SELECT {REPORT_COLUMNS} FROM reports WHERE reporter_id=$1 AND id<$2 ORDER BY id DESC LIMIT $3",
        reporter_id,
        before if before is not None else 2**63 - 1,
        limit,
    )
    return [report_from_row(r) for r in rows]


async def report_media(conn: asyncpg.Connection, actor_id: int | None, report_id: int, media_id: int) -> MediaRec:
    await admin._admin(conn, actor_id)
    rec = await _load(conn, report_id)
    rules.must_exist(report_id, rec is not None)
    assert rec is not None
    carried = None if rec.snap_body is None else carried_media_id(rec.snap_body)
    rules.require_reported_media(rec.snap_kind, carried, media_id)
    row = await conn.fetchrow(
        f"SELECT m.id, m.uploader_id, m.kind, m.name, m.created_at, {_BLOB_COLS}"
        " FROM media m JOIN media_blobs b ON b.sha256 = m.sha256 WHERE m.id=$1",
        media_id,
    )
    if row is None:  # deleted since (its uploader erased, nothing else referring to it)
        raise not_found(media_id)
    return MediaRec(id=row[0], uploader_id=row[1], kind=row[2], name=row[3], created_at=row[4], blob=BlobRec(*row[5:]))


async def resolve(
    conn: asyncpg.Connection,
    actor_id: int | None,
    report_id: int,
    action: str,
    note: str,
    msg_id: int,
    a: AuditEntry,
    disable_audit: AuditEntry,
) -> Resolved:
    await admin._admin(conn, actor_id)
    rec = await _load(conn, report_id)
    rules.check_resolve(report_id, rec.status if rec else None, action, rec is not None and rec.conv_id is not None)
    assert rec is not None
    recall = None
    revoked: list[str] = []
    if action == "recall" and rec.conv_id is not None and rec.seq is not None:
        recalled = await conn.fetchval(
            "SELECT recalled FROM messages WHERE conv_id=$1 AND seq=$2", rec.conv_id, rec.seq
        )
        if not recalled:  # recalled meanwhile (by its sender): nothing left to do
            recall = await timeline.recall(
                conn, rec.conv_id, actor_id or 0, rec.seq, msg_id, a.at, 0, server_admin=True
            )
    elif action == "disable":
        _, revoked = await admin.set_disabled(conn, actor_id, rec.user_id, True, disable_audit)
    rows = await conn.fetch(
        "UPDATE reports SET status='resolved', resolved_at=$1, resolved_by=$2, resolution=$3, note=$4"
        f" WHERE target=$5 AND status='open' RETURNING {REPORT_COLUMNS}",
        a.at,
        actor_id,
        action,
        note,
        rec.target,
    )
    resolved = sorted((report_from_row(r) for r in rows), key=lambda r: r.id)
    await admin._append(conn, actor_id, a)
    done = await _load(conn, report_id)
    assert done is not None
    return Resolved(report=done, closed=len(resolved), recall=recall, revoked=revoked, resolved=resolved)


class _ReportRunner:
    """A write declares its anchors (the module docstring); reads run in one transaction."""

    def __init__(self, store: PgJobs) -> None:
        self._s = store

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...], conv_id: int | None
    ) -> Awaitable[Any]:
        if conv_id is None:
            return self._s.write(fn, *args, anchors=Anchors(users=users))
        return self._s.write(fn, *args, anchors=Anchors(convs=(conv_id,), members_of=(conv_id,), users=users))

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)


class PgReportStore(ReportJobs):
    def __init__(self, store: PgJobs) -> None:
        super().__init__(sys.modules[__name__], _ReportRunner(store))
