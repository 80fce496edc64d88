"""History search jobs of the SQLite store (index: ``search_sqlite.sql``, its own file).

A query is split into terms (on whitespace); every term must occur in the message's text
(a text's text, a file's name), case-insensitively, as a substring — so Chinese needs no
word segmentation. Terms of 3 or more characters go to the FTS5 trigram index (its own
database file, attached to every reader as ``search``: yim/storage/sqlite/indexer.py), which
yields candidates newest first; terms of 1 or 2 characters cannot be answered by trigrams
(and SQLite 3.40's LIKE on a trigram table misses 2-character CJK terms), so they are
checked with LIKE on the text read through the content view. A query made only of short
terms scans the messages of the user's own conversations — bounded by what one user can
see, never the whole table.

Every hit is joined to the user's membership row and must lie inside its visible window
(``joined_seq < seq <= left_seq``, or the head while a member): search never returns a
message the user could not page to with ``history``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from yim.protocol.errors import YimError
from yim.storage.records import MessageRec
from yim.storage.search import MIN_INDEXED_CHARS, SearchRow, SearchStore
from yim.storage.sqlite.runner import SqliteJobs
from yim.storage.sqlite.timeline import HIDDEN_SQL, MSG_COLS, msg_from_row

_N = MSG_COLS.count(",") + 1  # columns of MSG_COLS, then ours
_TEXT = "CASE m.kind WHEN 'file' THEN json_extract(m.body, '$.name') ELSE json_extract(m.body, '$.text') END"
_NO_CEILING = 2**62


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def search(
    conn: sqlite3.Connection,
    user_id: int,
    conv_id: int | None,
    terms: list[str],
    before: int | None,
    limit: int,
) -> tuple[list[SearchRow], bool]:
    """Hits newest first (by msg_id, below ``before``), at most ``limit``, and whether
    there are more."""
    if conv_id is not None:
        member = conn.execute(
            "SELECT 1 FROM user_conversations WHERE user_id=? AND conv_id=?", (user_id, conv_id)
        ).fetchone()
        if member is None:
            raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    indexed = [t for t in terms if len(t) >= MIN_INDEXED_CHARS]
    short = [t for t in terms if len(t) < MIN_INDEXED_CHARS]
    args: list[Any]
    if indexed:
        sql = (
            f"SELECT {MSG_COLS}, uc.joined_seq, uc.left_seq, {_TEXT} FROM search.message_fts f"
            " JOIN messages m ON m.msg_id = f.rowid"
            " JOIN user_conversations uc ON uc.user_id = ? AND uc.conv_id = m.conv_id"
            " WHERE f.message_fts MATCH ? AND f.rowid < ?"
            " AND m.seq > uc.joined_seq AND (uc.left_seq IS NULL OR m.seq <= uc.left_seq) AND m.recalled = 0"
            f" AND NOT {HIDDEN_SQL.replace('?', 'uc.user_id')}"
        )
        args = [user_id, " ".join(_phrase(t) for t in indexed), before if before is not None else 2**63 - 1]
        if conv_id is not None:
            sql += " AND m.conv_id = ?"
            args.append(conv_id)
        order = " ORDER BY f.rowid DESC LIMIT ?"
    else:
        sql = (
            f"SELECT {MSG_COLS}, uc.joined_seq, uc.left_seq, {_TEXT} FROM user_conversations uc"
            " JOIN messages m ON m.conv_id = uc.conv_id AND m.seq > uc.joined_seq"
            f" AND m.seq <= COALESCE(uc.left_seq, {_NO_CEILING})"
            " WHERE uc.user_id = ? AND m.kind IN ('text', 'file', 'custom') AND m.recalled = 0 AND m.msg_id < ?"
            f" AND NOT {HIDDEN_SQL.replace('?', 'uc.user_id')}"
        )
        args = [user_id, before if before is not None else 2**63 - 1]
        if conv_id is not None:
            sql += " AND uc.conv_id = ?"
            args.append(conv_id)
        order = " ORDER BY m.msg_id DESC LIMIT ?"
    for term in short:
        sql += f" AND {_TEXT} LIKE ? ESCAPE '\\'"
        args.append(_like(term))
    rows = conn.execute(sql + order, [*args, limit + 1]).fetchall()
    more = len(rows) > limit
    hits = []
    for r in rows[:limit]:
        message = msg_from_row(r)
        joined, left = r[_N], r[_N + 1]
        hits.append(
            SearchRow(
                message=message,
                text=r[_N + 2] or "",
                previous=_neighbour(conn, message.conv_id, message.seq, joined, left, older=True),
                next=_neighbour(conn, message.conv_id, message.seq, joined, left, older=False),
            )
        )
    return hits, more


def _neighbour(
    conn: sqlite3.Connection, conv_id: int, seq: int, joined: int, left: int | None, *, older: bool
) -> MessageRec | None:
    """The nearest entry before / after ``seq`` inside the member's window, skipping recall
    markers and recalled messages (they carry nothing to read)."""
    if older:
        where, bound, order = "m.seq < ? AND m.seq > ?", (seq, joined), "DESC"
    else:
        where, bound, order = "m.seq > ? AND m.seq <= ?", (seq, left if left is not None else _NO_CEILING), "ASC"
    row = conn.execute(
        f"SELECT {MSG_COLS} FROM messages m WHERE m.conv_id = ? AND {where}"
        f" AND m.kind NOT IN ('recall', 'edit') AND m.recalled = 0 ORDER BY m.seq {order} LIMIT 1",
        (conv_id, *bound),
    ).fetchone()
    return msg_from_row(row) if row else None


class SqliteSearchStore(SearchStore):
    def __init__(self, store: SqliteJobs) -> None:
        self._store = store

    async def search(
        self, user_id: int, conv_id: int | None, terms: list[str], before: int | None, limit: int
    ) -> tuple[list[SearchRow], bool]:
        # Every message committed before this call is in the index once the barrier passes.
        await self._store.index_barrier()
        return await self._store.read(search, user_id, conv_id, terms, before, limit)
