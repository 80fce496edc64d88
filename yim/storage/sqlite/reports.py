"""SQLite jobs of the report store (yim/storage/reports.py): SQL only, the rules are shared."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from yim.storage.admin import AuditEntry
from yim.storage.media import BlobRec, MediaRec, carried_media_id, not_found
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
from yim.storage.sqlite import admin, timeline
from yim.storage.sqlite.media import _BLOB_COLS
from yim.storage.sqlite.runner import SqliteJobs

#: entries each side of a reported message that the admin sees with it
CONTEXT = 3


def _load(conn: sqlite3.Connection, report_id: int) -> ReportRec | None:
    r = conn.execute(f"SELECT {REPORT_COLUMNS} FROM reports WHERE id=?", (report_id,)).fetchone()
    return report_from_row(r) if r else None


def file(conn: sqlite3.Connection, new: NewReport, limit_per_hour: int) -> tuple[ReportRec, bool]:
    r = conn.execute(
        f"SELECT {REPORT_COLUMNS} FROM reports WHERE reporter_id=? AND target=? AND status='open'",
        (new.reporter_id, new.target),
    ).fetchone()
    if r is not None:
        return report_from_row(r), True
    snap: tuple[Any, ...] = (None, None, None, None)
    if new.conv_id is not None and new.seq is not None:
        member = conn.execute(
            f"SELECT uc.joined_seq, {timeline.VISIBLE_HEAD} FROM user_conversations uc"
            " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=? AND uc.conv_id=?",
            (new.reporter_id, new.conv_id),
        ).fetchone()
        m = conn.execute(
            "SELECT sender_id, kind, recalled, msg_id, body, created_at FROM messages WHERE conv_id=? AND seq=?",
            (new.conv_id, new.seq),
        ).fetchone()
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
        found = conn.execute("SELECT 1 FROM users WHERE id=?", (user_id,)).fetchone()
        rules.check_user(user_id, new.reporter_id, found is not None)
    recent = [
        t
        for (t,) in conn.execute(
            "SELECT created_at FROM reports WHERE reporter_id=? AND created_at>?",
            (new.reporter_id, new.created_at - rules.REPORT_WINDOW_MS),
        )
    ]
    rules.check_limit(recent, new.created_at, limit_per_hour)
    conn.execute(
        "INSERT INTO reports (id, reporter_id, target, user_id, conv_id, seq, msg_id, snap_kind, snap_body, snap_at,"
        " category, text, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
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
        ),
    )
    filed = _load(conn, new.id)
    assert filed is not None
    return filed, False


def reports(
    conn: sqlite3.Connection, actor_id: int | None, status: str | None, before: int | None, limit: int
) -> list[ReportRec]:
    admin._admin(conn, actor_id)
    sql = f"SELECT {REPORT_COLUMNS} FROM reports WHERE id<?"
    args: list[object] = [before if before is not None else 2**63 - 1]
    if status is not None:
        sql += " AND status=?"
        args.append(status)
    return [report_from_row(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])]


def report(conn: sqlite3.Connection, actor_id: int | None, report_id: int) -> tuple[ReportRec, list[ContextEntry]]:
    admin._admin(conn, actor_id)
    rec = _load(conn, report_id)
    rules.must_exist(report_id, rec is not None)
    assert rec is not None
    context: list[ContextEntry] = []
    if rec.conv_id is not None and rec.seq is not None:
        rows = conn.execute(
            "SELECT seq, sender_id, kind, body, created_at, recalled FROM messages"
            " WHERE conv_id=? AND seq BETWEEN ? AND ? ORDER BY seq",
            (rec.conv_id, rec.seq - CONTEXT, rec.seq + CONTEXT),
        )
        context = [ContextEntry(r[0], r[1], r[2], r[3].encode(), r[4], bool(r[5])) for r in rows]
    return rec, context


def my_reports(conn: sqlite3.Connection, reporter_id: int, before: int | None, limit: int) -> list[ReportRec]:
    rows = conn.execute(
        f"SELECT {REPORT_COLUMNS} FROM reports WHERE reporter_id=? AND id<? ORDER BY id DESC LIMIT ?",
        (reporter_id, before if before is not None else 2**63 - 1, limit),
    )
    return [report_from_row(r) for r in rows]


def report_media(conn: sqlite3.Connection, actor_id: int | None, report_id: int, media_id: int) -> MediaRec:
    admin._admin(conn, actor_id)
    rec = _load(conn, report_id)
    rules.must_exist(report_id, rec is not None)
    assert rec is not None
    carried = None if rec.snap_body is None else carried_media_id(rec.snap_body)
    rules.require_reported_media(rec.snap_kind, carried, media_id)
    row = conn.execute(
        f"SELECT m.id, m.uploader_id, m.kind, m.name, m.created_at, {_BLOB_COLS}"
        " FROM media m JOIN media_blobs b ON b.sha256 = m.sha256 WHERE m.id=?",
        (media_id,),
    ).fetchone()
    if row is None:  # deleted since (its uploader erased, nothing else referring to it)
        raise not_found(media_id)
    return MediaRec(id=row[0], uploader_id=row[1], kind=row[2], name=row[3], created_at=row[4], blob=BlobRec(*row[5:]))


def resolve(
    conn: sqlite3.Connection,
    actor_id: int | None,
    report_id: int,
    action: str,
    note: str,
    msg_id: int,
    a: AuditEntry,
    disable_audit: AuditEntry,
) -> Resolved:
    admin._admin(conn, actor_id)
    rec = _load(conn, report_id)
    rules.check_resolve(report_id, rec.status if rec else None, action, rec is not None and rec.conv_id is not None)
    assert rec is not None
    recall = None
    revoked: list[str] = []
    if action == "recall" and rec.conv_id is not None and rec.seq is not None:
        recalled = conn.execute("SELECT recalled FROM messages WHERE conv_id=? AND seq=?", (rec.conv_id, rec.seq))
        if not recalled.fetchone()[0]:  # recalled meanwhile (by its sender): nothing left to do
            recall = timeline.recall(conn, rec.conv_id, actor_id or 0, rec.seq, msg_id, a.at, 0, server_admin=True)
    elif action == "disable":
        _, revoked = admin.set_disabled(conn, actor_id, rec.user_id, True, disable_audit)
    resolved = sorted(
        (
            report_from_row(r)
            for r in conn.execute(
                "UPDATE reports SET status='resolved', resolved_at=?, resolved_by=?, resolution=?, note=?"
                f" WHERE target=? AND status='open' RETURNING {REPORT_COLUMNS}",
                (a.at, actor_id, action, note, rec.target),
            ).fetchall()
        ),
        key=lambda r: r.id,
    )
    admin._append(conn, actor_id, a)
    done = _load(conn, report_id)
    assert done is not None
    return Resolved(report=done, closed=len(resolved), recall=recall, revoked=revoked, resolved=resolved)


class _ReportRunner:
    """One writer thread runs every write in turn: nothing to declare before it runs."""

    def __init__(self, store: SqliteJobs) -> None:
        self._s = store

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...], conv_id: int | None
    ) -> Awaitable[Any]:
        return self._s.write(fn, *args)

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)


class SqliteReportStore(ReportJobs):
    def __init__(self, store: SqliteJobs) -> None:
        super().__init__(sys.modules[__name__], _ReportRunner(store))
