"""History search on the PostgreSQL store; mirrors :mod:`yim.storage.sqlite.search`.

Index: ``messages_search``, a partial pg_trgm GIN index over ``yim_search_text(kind, body)``
(``schema_postgres_0004_media_search.sql``). Terms of 3 or more characters are ILIKE
conditions the index answers; shorter terms have no trigram (pg_trgm would scan the whole
index), so they are written as ``strpos(lower(...))`` filters the index cannot take and are
checked on the candidates. A query made only of short terms scans the messages of the
user's own conversations, one conversation range at a time — bounded by what one user can
see, never the whole table.

One statement per page (one snapshot): the hits, each joined to the user's membership row
and kept inside its visible window, and each hit's previous / next readable entry in that
window (LATERAL lookups on the timeline's primary key).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from yim.protocol.errors import YimError
from yim.storage.postgres.runner import PgJobs
from yim.storage.postgres.timeline import HIDDEN_SQL, MSG_COLS, msg_from_row
from yim.storage.search import MIN_INDEXED_CHARS, SearchRow, SearchStore

_TEXT = "yim_search_text(m.kind, m.body)"
_NO_CEILING = 2**62
_N = MSG_COLS.count(",") + 1
_H_COLS = MSG_COLS.replace("m.", "h.")
#: the nearest readable entries around a hit, inside the member's window
_NEIGHBOURS = (
    f" LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages m WHERE m.conv_id = h.conv_id"
    " AND m.seq < h.seq AND m.seq > h.joined_seq AND m.kind NOT IN ('recall', 'edit') AND NOT m.recalled"
    " ORDER BY m.seq DESC LIMIT 1) p ON true"
    f" LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages m WHERE m.conv_id = h.conv_id"
    f" AND m.seq > h.seq AND m.seq <= COALESCE(h.left_seq, {_NO_CEILING})"
    " AND m.kind NOT IN ('recall', 'edit') AND NOT m.recalled"
    " ORDER BY m.seq LIMIT 1) n ON true"
)


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search(
    conn: asyncpg.Connection, user_id: int, conv_id: int | None, terms: list[str], before: int | None, limit: int
) -> tuple[list[SearchRow], bool]:
    if conv_id is not None:
        member = await conn.fetchval(
            "SELECT 1 FROM user_conversations WHERE user_id=$1 AND conv_id=$2", user_id, conv_id
        )
        if member is None:
            raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    indexed = [t for t in terms if len(t) >= MIN_INDEXED_CHARS]
    short = [t for t in terms if len(t) < MIN_INDEXED_CHARS]
    args: list[Any] = [user_id, before if before is not None else 2**63 - 1, limit + 1, conv_id]
    conds = []
    for term in indexed:
        args.append(_like(term))
        conds.append(f"{_TEXT} ILIKE ${len(args)}")
    for term in short:
        args.append(term.lower())
        conds.append(f"strpos(lower({_TEXT}), ${len(args)}) > 0")
    matches = " AND ".join(conds)
    cols = f"{MSG_COLS}, uc.joined_seq, uc.left_seq, {_TEXT} AS text"
    if indexed:
        hits = (
            f"SELECT {cols} FROM messages m"
            " JOIN user_conversations uc ON uc.user_id = $1 AND uc.conv_id = m.conv_id"
            f" WHERE m.kind IN ('text', 'file', 'custom') AND NOT m.recalled AND {matches} AND m.msg_id < $2"
            " AND m.seq > uc.joined_seq AND (uc.left_seq IS NULL OR m.seq <= uc.left_seq)"
            " AND ($4::bigint IS NULL OR m.conv_id = $4)"
            f" AND NOT {HIDDEN_SQL.format(user='$1')}"
        )
    else:
        # OFFSET 0 keeps the subquery a per-conversation range scan (not flattened into a
        # join the planner could answer by walking every message newest first).
        hits = (
            f"SELECT m.* FROM user_conversations uc CROSS JOIN LATERAL (SELECT {cols} FROM messages m"
            f" WHERE m.conv_id = uc.conv_id AND m.seq > uc.joined_seq AND m.seq <= COALESCE(uc.left_seq, {_NO_CEILING})"
            f" AND m.kind IN ('text', 'file', 'custom') AND NOT m.recalled AND m.msg_id < $2 AND {matches}"
            f" AND NOT {HIDDEN_SQL.format(user='$1')} OFFSET 0) m"
            " WHERE uc.user_id = $1 AND ($4::bigint IS NULL OR uc.conv_id = $4)"
        )
    sql = (
        f"SELECT {_H_COLS}, h.text, p.*, n.* FROM ({hits} ORDER BY msg_id DESC LIMIT $3) h"
        f"{_NEIGHBOURS} ORDER BY h.msg_id DESC"
    )
    rows = await conn.fetch(sql, *args)
    more = len(rows) > limit
    out = [
        SearchRow(
            message=msg_from_row(r),
            text=r[_N] or "",
            previous=msg_from_row(r, _N + 1) if r[_N + 1] is not None else None,
            next=msg_from_row(r, 2 * _N + 1) if r[2 * _N + 1] is not None else None,
        )
        for r in rows[:limit]
    ]
    return out, more


class PgSearchStore(SearchStore):
    def __init__(self, store: PgJobs) -> None:
        self._store = store

    async def search(
        self, user_id: int, conv_id: int | None, terms: list[str], before: int | None, limit: int
    ) -> tuple[list[SearchRow], bool]:
        return await self._store.read(search, user_id, conv_id, terms, before, limit)
