"""PostgreSQL jobs of the webhook outbox (see :mod:`yim.storage.outbox`).

Outbox rows are no anchor and guard nothing: the jobs lock only their own rows, a claim
with ``FOR UPDATE SKIP LOCKED`` (a row another node is claiming is skipped, not waited
for), so they run batched with ``NO_ANCHORS`` and cannot take part in a lock cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from yim.storage.outbox import OutboxEvent, OutboxRow, OutboxStore, after_send_rows
from yim.storage.postgres.locks import NO_ANCHORS
from yim.storage.postgres.runner import PgJobs
from yim.storage.records import SendCmd, SendResult


async def add_after_send(conn: asyncpg.Connection, sent: Iterable[tuple[SendCmd, SendResult]]) -> None:
    """The after_send events of the messages just stored (not of duplicates), in the
    transaction that stored them: one statement for a whole run of sends."""
    rows = [
        row
        for cmd, result in sent
        if cmd.after_send and not result.duplicate
        for row in after_send_rows(cmd.after_send, result.message)
    ]
    if rows:
        await conn.execute(
            "INSERT INTO webhook_outbox (url, event, event_id, payload, next_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[])",
            *(list(column) for column in zip(*rows, strict=True)),
        )


async def _add(conn: asyncpg.Connection, events: list[OutboxEvent], now: int) -> None:
    await conn.executemany(
        "INSERT INTO webhook_outbox (url, event, event_id, payload, next_at) VALUES ($1, $2, $3, $4, $5)",
        [(e.url, e.event, e.event_id, e.payload, now) for e in events],
    )


async def _claim(conn: asyncpg.Connection, now: int, lease_ms: int, limit: int) -> list[OutboxRow]:
    rows = await conn.fetch(
        "UPDATE webhook_outbox SET next_at = $1 WHERE id IN (SELECT id FROM webhook_outbox"
        " WHERE dead_at IS NULL AND next_at <= $2 ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, url, event, event_id, payload, attempts",
        now + lease_ms,
        now,
        limit,
    )
    return sorted((OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows), key=lambda r: r.id)


async def _delivered(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("DELETE FROM webhook_outbox WHERE id = ANY($1::bigint[])", ids)


async def _failed(
    conn: asyncpg.Connection, row_id: int, attempts: int, next_at: int | None, error: str, now: int
) -> None:
    await conn.execute(
        "UPDATE webhook_outbox SET attempts = $1, next_at = COALESCE($2, next_at), dead_at = $3, last_error = $4"
        " WHERE id = $5",
        attempts,
        next_at,
        now if next_at is None else None,
        error,
        row_id,
    )


async def _counts(conn: asyncpg.Connection) -> Any:
    return await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE dead_at IS NULL), count(*) FILTER (WHERE dead_at IS NOT NULL)"
        " FROM webhook_outbox"
    )


class PgOutboxStore(OutboxStore):
    def __init__(self, store: PgJobs) -> None:
        self._s = store

    async def add(self, events: list[OutboxEvent], now: int) -> None:
        await self._s.write(_add, events, now, anchors=NO_ANCHORS)

    async def claim(self, now: int, lease_ms: int, limit: int) -> list[OutboxRow]:
        rows: list[OutboxRow] = await self._s.write(_claim, now, lease_ms, limit, anchors=NO_ANCHORS)
        return rows

    async def delivered(self, ids: list[int]) -> None:
        if ids:
            await self._s.write(_delivered, ids, anchors=NO_ANCHORS)

    async def failed(self, row_id: int, attempts: int, next_at: int | None, error: str, now: int) -> None:
        await self._s.write(_failed, row_id, attempts, next_at, error, now, anchors=NO_ANCHORS)

    async def counts(self) -> tuple[int, int]:
        row = await self._s.read1(_counts)
        return int(row[0]), int(row[1])
