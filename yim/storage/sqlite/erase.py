"""SQLite jobs of the erasure store (yim/storage/erase.py): SQL only, the rules are shared."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from yim.storage.admin import AuditEntry
from yim.storage.erase import EraseJobs, ErasureWork, blank_profile_sql
from yim.storage.relations import InboxWrite
from yim.storage.rules import admin as admin_rules
from yim.storage.rules import erase as rules
from yim.storage.rules import service as service_rules
from yim.storage.service import ServiceSessionRec
from yim.storage.sqlite.admin import _append, _revoke_all, account
from yim.storage.sqlite.memory import writer_memory
from yim.storage.sqlite.runner import SqliteJobs
from yim.storage.sqlite.service import _SESSION_COLS, Pending, _flush, _leave_conv
from yim.storage.sqlite.timeline import _recall_quotes, _unmention

_ids = msgspec.json.Decoder(list[str])


def _erased_at(conn: sqlite3.Connection, user_id: int) -> int | None:
    r = conn.execute("SELECT erased_at FROM users WHERE id=?", (user_id,)).fetchone()
    return r[0] if r else None


def _erase_rows(conn: sqlite3.Connection, user_id: int, mode: str, now: int) -> ErasureWork:
    """The account's own rows, in the transaction that makes the erasure ``running``."""
    blank, values = blank_profile_sql(lambda _: "?", 0)
    conn.execute(
        f"UPDATE users SET {blank}, is_admin=0, disabled_at=coalesce(disabled_at, ?), erased_at=coalesce(erased_at, ?)"
        " WHERE id=?",
        (*values, now, now, user_id),
    )
    revoked = _revoke_all(conn, user_id, now, None, None)
    for sql in (
        "DELETE FROM devices WHERE user_id=?",
        "DELETE FROM pushers WHERE user_id=?",
        "DELETE FROM push_prefs WHERE user_id=?",
        "DELETE FROM push_mutes WHERE user_id=?",
        "DELETE FROM push_group_cursors WHERE user_id=?",
        "DELETE FROM hidden_messages WHERE user_id=?",
        "DELETE FROM inbox WHERE user_id=?",
        "DELETE FROM privacy WHERE user_id=?",
    ):
        conn.execute(sql, (user_id,))
    for sql in (
        "DELETE FROM friends WHERE user_id=? OR friend_id=?",
        "DELETE FROM following WHERE user_id=? OR target_id=?",
        "DELETE FROM followers WHERE user_id=? OR follower_id=?",
        "DELETE FROM blocks WHERE user_id=? OR blocked_id=?",
        "DELETE FROM friend_requests WHERE from_id=? OR to_id=?",
    ):
        conn.execute(sql, (user_id, user_id))
    groups = [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.id, uc.role FROM user_conversations uc JOIN conversations c ON c.id=uc.conv_id"
            " WHERE uc.user_id=? AND uc.left_seq IS NULL AND c.type='group' AND c.dissolved=0 ORDER BY c.id",
            (user_id,),
        )
    ]
    convs = sorted(
        {r[0] for r in conn.execute("SELECT conv_id FROM user_conversations WHERE user_id=?", (user_id,))}
        | {r[0] for r in conn.execute("SELECT DISTINCT conv_id FROM messages WHERE sender_id=?", (user_id,))}
    )
    conn.execute(
        "INSERT INTO account_erasures (user_id, state, mode, requested_at, due_at, claimed_at)"
        " VALUES (?, 'running', ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET state='running',"
        " mode=excluded.mode, claimed_at=excluded.claimed_at, done_at=NULL",
        (user_id, mode, now, now, now),
    )
    return ErasureWork(user_id=user_id, mode=mode, revoked=revoked, groups=groups, convs=convs)


def erase_account(
    conn: sqlite3.Connection, actor_id: int | None, user_id: int, mode: str, now: int, a: AuditEntry
) -> ErasureWork:
    admin_rules.require_admin(actor_id, None if actor_id is None else account(conn, actor_id))
    rules.may_erase(actor_id, user_id, account(conn, user_id), _erased_at(conn, user_id))
    work = _erase_rows(conn, user_id, mode, now)
    _append(conn, actor_id, a)
    return work


def request_deletion(conn: sqlite3.Connection, user_id: int, mode: str, now: int, due_at: int) -> int:
    conn.execute(
        "INSERT INTO account_erasures (user_id, state, mode, requested_at, due_at) VALUES (?, 'pending', ?, ?, ?)"
        " ON CONFLICT (user_id) DO NOTHING",
        (user_id, mode, now, due_at),
    )
    return int(conn.execute("SELECT due_at FROM account_erasures WHERE user_id=?", (user_id,)).fetchone()[0])


def cancel_deletion(conn: sqlite3.Connection, user_id: int) -> bool:
    return conn.execute("DELETE FROM account_erasures WHERE user_id=? AND state='pending'", (user_id,)).rowcount > 0


def pending_deletion(conn: sqlite3.Connection, user_id: int) -> int | None:
    r = conn.execute("SELECT due_at FROM account_erasures WHERE user_id=? AND state='pending'", (user_id,)).fetchone()
    return r[0] if r else None


def claim_due(conn: sqlite3.Connection, now: int, stale_before: int, limit: int, a: AuditEntry) -> list[ErasureWork]:
    rows = conn.execute(
        "SELECT user_id, mode, state FROM account_erasures WHERE (state='pending' AND due_at<=?)"
        " OR (state='running' AND claimed_at<?) ORDER BY due_at LIMIT ?",
        (now, stale_before, limit),
    ).fetchall()
    out = []
    for user_id, mode, state in rows:
        out.append(_erase_rows(conn, user_id, mode, now))
        if state == "pending":  # the deletion itself; a retaken claim was recorded the first time
            _append(conn, user_id, msgspec.structs.replace(a, target=f"user:{user_id}"))
    return out


def reactions_by(conn: sqlite3.Connection, user_id: int, conv_id: int) -> list[tuple[int, str]]:
    sql = "SELECT seq, emoji FROM reactions WHERE conv_id=? AND user_id=? ORDER BY seq, emoji"
    return [(r[0], r[1]) for r in conn.execute(sql, (conv_id, user_id))]


def shops_owned(conn: sqlite3.Connection, user_id: int) -> list[int]:
    return [
        r[0]
        for r in conn.execute("SELECT id FROM shops WHERE owner_id=? AND closed_at IS NULL ORDER BY id", (user_id,))
    ]


def release_shop(conn: sqlite3.Connection, user_id: int, shop_id: int, now: int) -> tuple[int | None, list[InboxWrite]]:
    row = conn.execute("SELECT owner_id, closed_at FROM shops WHERE id=?", (shop_id,)).fetchone()
    if row is None or row[1] is not None:
        return None, []
    if row[0] != user_id:
        return row[0], []  # handed over by an earlier run of this step
    agents = conn.execute("SELECT user_id, role, added_at FROM shop_agents WHERE shop_id=?", (shop_id,)).fetchall()
    heir = rules.shop_heir(user_id, [(a[0], a[1], a[2]) for a in agents])
    if heir is not None:
        conn.execute("UPDATE shops SET owner_id=? WHERE id=?", (heir, shop_id))
        return heir, []
    pending: Pending = []
    for r in conn.execute(
        f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=? AND status!='closed' ORDER BY queued_at, id",
        (shop_id,),
    ).fetchall():
        s = ServiceSessionRec(*r)
        conn.execute("UPDATE service_sessions SET status='closed', closed_at=?, agent_id=NULL WHERE id=?", (now, s.id))
        pending += service_rules.closed(s, user_id)
        if s.agent_id is not None:
            _leave_conv(conn, s.conv_id, s.agent_id)
    conn.execute("DELETE FROM shop_agents WHERE shop_id=?", (shop_id,))
    conn.execute("UPDATE shops SET closed_at=? WHERE id=?", (now, shop_id))
    return None, _flush(conn, pending, now)


def erase_messages(conn: sqlite3.Connection, user_id: int, conv_id: int, mode: str) -> int:
    rows = conn.execute(
        "SELECT seq, kind, recalled, msg_id, mentions, mention_all FROM messages WHERE conv_id=? AND sender_id=?"
        " AND kind NOT IN ('system', ?)",
        (conv_id, user_id, rules.REMOVED_KIND),
    ).fetchall()
    memory = writer_memory(conn)
    n = 0
    for seq, kind, recalled, msg_id, mentions, mention_all in rows:
        if not rules.needs_erasing(kind, bool(recalled), mode):
            continue
        # As a recall (timeline.recall): body, mentions, quotes of it, earlier versions, the
        # media reference (the trigger) and the search index all let go of it; no entry is
        # appended and no seq moves, so everyone else's history and unread stay consistent.
        conn.execute(
            "UPDATE messages SET kind=?, recalled=1, uncounted=1, body='{}', sender_device='', mentions=NULL,"
            " mention_all=0 WHERE conv_id=? AND seq=?",
            (rules.erased_kind(kind, mode), conv_id, seq),
        )
        if mentions or mention_all:
            _unmention(conn, conv_id, seq, [int(u) for u in _ids.decode(mentions)] if mentions else [], mention_all)
        _recall_quotes(conn, conv_id, seq)
        conn.execute("DELETE FROM message_versions WHERE conv_id=? AND seq=?", (conv_id, seq))
        if memory is not None:
            memory.index_ops.append((msg_id, None, None))
        n += 1
    return n


def erase_media(conn: sqlite3.Connection, user_id: int) -> list[str]:
    gone = conn.execute(
        "DELETE FROM media WHERE uploader_id=? AND NOT EXISTS (SELECT 1 FROM media_refs r WHERE r.media_id=media.id)"
        " RETURNING sha256",
        (user_id,),
    ).fetchall()
    keys: list[str] = []
    for sha in sorted({r[0] for r in gone}):
        if conn.execute("SELECT 1 FROM media WHERE sha256=? LIMIT 1", (sha,)).fetchone():
            continue  # the same bytes are someone else's upload too
        blob = conn.execute("DELETE FROM media_blobs WHERE sha256=? RETURNING thumb_sha256", (sha,)).fetchone()
        if blob is not None:
            keys += [sha, *([blob[0]] if blob[0] else [])]
    return keys


def finish(conn: sqlite3.Connection, user_id: int, now: int) -> None:
    conn.execute("UPDATE account_erasures SET state='done', done_at=? WHERE user_id=?", (now, user_id))


class _EraseRunner:
    """One writer thread runs every write in turn: nothing to declare."""

    def __init__(self, store: SqliteJobs) -> None:
        self._s = store

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None, convs: tuple[int, ...]
    ) -> Awaitable[Any]:
        return self._s.write(fn, *args)

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)


class SqliteEraseStore(EraseJobs):
    def __init__(self, store: SqliteJobs) -> None:
        super().__init__(sys.modules[__name__], _EraseRunner(store))
