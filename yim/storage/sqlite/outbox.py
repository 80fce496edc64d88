"""SQLite jobs of the webhook outbox (see :mod:`yim.storage.outbox`). One node owns the
file, so a claim needs no row locks: the writer thread runs one job at a time; and a
deliverer that starts is the only one, so it takes back every claim (release_claims)."""

from __future__ import annotations

import sqlite3

from yim.storage.outbox import OutboxEvent, OutboxRow, OutboxStore
from yim.storage.sqlite.runner import SqliteJobs

#: (url, event, event_id, payload, next_at); also written by the send job (sqlite/send.py)
INSERT_OUTBOX = "INSERT INTO webhook_outbox (url, event, event_id, payload, next_at) VALUES (?, ?, ?, ?, ?)"


def _add(conn: sqlite3.Connection, events: list[OutboxEvent], now: int) -> None:
    conn.executemany(INSERT_OUTBOX, [(e.url, e.event, e.event_id, e.payload, now) for e in events])


def _claim(conn: sqlite3.Connection, now: int, lease_ms: int, limit: int) -> list[OutboxRow]:
    rows = conn.execute(
        "UPDATE webhook_outbox SET next_at = ? WHERE id IN (SELECT id FROM webhook_outbox"
        " WHERE dead_at IS NULL AND next_at <= ? ORDER BY next_at, id LIMIT ?)"
        " RETURNING id, url, event, event_id, payload, attempts",
        (now + lease_ms, now, limit),
    ).fetchall()
    return sorted((OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows), key=lambda r: r.id)


def _delivered(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM webhook_outbox WHERE id = ?", [(i,) for i in ids])


def _failed(conn: sqlite3.Connection, row_id: int, attempts: int, next_at: int | None, error: str, now: int) -> None:
    conn.execute(
        "UPDATE webhook_outbox SET attempts = ?, next_at = COALESCE(?, next_at), dead_at = ?, last_error = ?"
        " WHERE id = ?",
        (attempts, next_at, now if next_at is None else None, error, row_id),
    )


def _release_claims(conn: sqlite3.Connection, now: int) -> int:
    # A claim and a retry's back-off are both a next_at ahead: they cannot be told apart,
    # so a start also tries at once the rows that were waiting out a back-off (one early
    # attempt each; their attempts still count towards the dead letter).
    return conn.execute(
        "UPDATE webhook_outbox SET next_at = ? WHERE dead_at IS NULL AND next_at > ?", (now, now)
    ).rowcount


def _counts(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE dead_at IS NULL), count(*) FILTER (WHERE dead_at IS NOT NULL)"
        " FROM webhook_outbox"
    ).fetchone()
    return int(row[0]), int(row[1])


class SqliteOutboxStore(OutboxStore):
    def __init__(self, store: SqliteJobs) -> None:
        self._s = store

    async def add(self, events: list[OutboxEvent], now: int) -> None:
        await self._s.write(_add, events, now)

    async def claim(self, now: int, lease_ms: int, limit: int) -> list[OutboxRow]:
        rows: list[OutboxRow] = await self._s.write(_claim, now, lease_ms, limit)
        return rows

    async def delivered(self, ids: list[int]) -> None:
        if ids:
            await self._s.write(_delivered, ids)

    async def failed(self, row_id: int, attempts: int, next_at: int | None, error: str, now: int) -> None:
        await self._s.write(_failed, row_id, attempts, next_at, error, now)

    async def counts(self) -> tuple[int, int]:
        counts: tuple[int, int] = await self._s.read(_counts)
        return counts

    async def release_claims(self, now: int) -> int:
        """One node owns the file (the data-folder lock) and one process of it delivers (the
        one process, or worker 0): a claim found at its start is a dead deliverer's."""
        released: int = await self._s.write(_release_claims, now)
        return released
