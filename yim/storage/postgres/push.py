"""Pusher jobs of the PostgreSQL store (yim/storage/push.py; schema_postgres_0006_pushers.sql).

Lock order (yim/storage/postgres/locks.py): a pusher row is written only while holding its
user's anchor, except by :func:`claim`, which takes rows with ``SKIP LOCKED`` and so never
waits: several nodes claiming at once each get other pushers, and a claim never blocks a
send. The lease, not a transaction, then holds the work while the provider is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from yim.storage.postgres.locks import NO_ANCHORS, Anchors
from yim.storage.push import PusherRec, PushPrefsRec, PushStore, PushWork

if TYPE_CHECKING:
    from yim.storage.postgres.runner import PgJobs

_COLS = "user_id, device_id, kind, target, created_at, pushed_seq, lease_until, failures"


async def set_pusher(
    conn: asyncpg.Connection, user_id: int, device_id: str, kind: str, target: str, now: int
) -> PusherRec:
    row = await conn.fetchrow(
        f"INSERT INTO pushers ({_COLS})"
        " VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT inbox_seq FROM users WHERE id = $1), 0), 0, 0)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET kind = excluded.kind, target = excluded.target,"
        " created_at = excluded.created_at, pushed_seq = excluded.pushed_seq, lease_until = 0, failures = 0"
        f" RETURNING {_COLS}",
        user_id,
        device_id,
        kind,
        target,
        now,
    )
    return PusherRec(*row)


async def pushers(conn: asyncpg.Connection, user_id: int) -> list[PusherRec]:
    rows = await conn.fetch(f"SELECT {_COLS} FROM pushers WHERE user_id = $1 ORDER BY device_id", user_id)
    return [PusherRec(*r) for r in rows]


async def remove_pusher(conn: asyncpg.Connection, user_id: int, device_id: str, target: str | None) -> bool:
    status = await conn.execute(
        "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2 AND ($3::text IS NULL OR target = $3)",
        user_id,
        device_id,
        target,
    )
    return bool(status != "DELETE 0")


async def claim(conn: asyncpg.Connection, now: int, lease_ms: int, limit: int) -> list[PushWork]:
    rows = await conn.fetch(
        "WITH c AS ("
        "  SELECT p.user_id, p.device_id, u.inbox_seq FROM pushers p JOIN users u ON u.id = p.user_id"
        "  WHERE u.inbox_seq > p.pushed_seq AND p.lease_until <= $1 ORDER BY p.lease_until LIMIT $3"
        "  FOR UPDATE OF p SKIP LOCKED)"
        " UPDATE pushers p SET lease_until = $1::bigint + $2::bigint FROM c"
        " WHERE p.user_id = c.user_id AND p.device_id = c.device_id"
        " RETURNING p.user_id, p.device_id, p.kind, p.target, p.created_at, p.pushed_seq, p.lease_until, p.failures,"
        " c.inbox_seq",
        now,
        lease_ms,
        limit,
    )
    return [PushWork(PusherRec(*tuple(r)[:8]), r[8]) for r in rows]


async def advance(
    conn: asyncpg.Connection, user_id: int, device_id: str, created_at: int, seq: int, hold_until: int
) -> None:
    await conn.execute(
        "UPDATE pushers SET pushed_seq = GREATEST(pushed_seq, $4), lease_until = $5, failures = 0"
        " WHERE user_id = $1 AND device_id = $2 AND created_at = $3",
        user_id,
        device_id,
        created_at,
        seq,
        hold_until,
    )


async def back_off(conn: asyncpg.Connection, user_id: int, device_id: str, created_at: int, until: int) -> None:
    await conn.execute(
        "UPDATE pushers SET lease_until = $4, failures = failures + 1"
        " WHERE user_id = $1 AND device_id = $2 AND created_at = $3",
        user_id,
        device_id,
        created_at,
        until,
    )


async def prefs(conn: asyncpg.Connection, user_id: int) -> PushPrefsRec:
    found = await conn.fetchrow(
        "SELECT preview, time_zone, dnd_start, dnd_end FROM push_prefs WHERE user_id = $1", user_id
    )
    mutes = {r[0]: r[1] for r in await conn.fetch("SELECT conv_id, mute FROM push_mutes WHERE user_id = $1", user_id)}
    if found is None:
        return PushPrefsRec(mutes=mutes)
    dnd = (found[2], found[3]) if found[2] is not None else None
    return PushPrefsRec(preview=found[0], time_zone=found[1], dnd=dnd, mutes=mutes)


async def set_prefs(
    conn: asyncpg.Connection, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None
) -> None:
    start, end = dnd if dnd is not None else (None, None)
    await conn.execute(
        "INSERT INTO push_prefs (user_id, preview, time_zone, dnd_start, dnd_end) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (user_id) DO UPDATE SET preview = excluded.preview, time_zone = excluded.time_zone,"
        " dnd_start = excluded.dnd_start, dnd_end = excluded.dnd_end",
        user_id,
        preview,
        time_zone,
        start,
        end,
    )


async def set_mute(conn: asyncpg.Connection, user_id: int, conv_id: int, mute: str) -> None:
    if mute == "off":
        await conn.execute("DELETE FROM push_mutes WHERE user_id = $1 AND conv_id = $2", user_id, conv_id)
    else:
        await conn.execute(
            "INSERT INTO push_mutes (user_id, conv_id, mute) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, conv_id) DO UPDATE SET mute = excluded.mute",
            user_id,
            conv_id,
            mute,
        )


class PgPushStore(PushStore):
    def __init__(self, store: PgJobs) -> None:
        self._store = store

    async def prefs(self, user_id: int) -> PushPrefsRec:
        rec: PushPrefsRec = await self._store.read(prefs, user_id)
        return rec

    # a user's settings rows are written under the user's anchor, like the pushers
    async def set_prefs(self, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None) -> None:
        await self._store.write(set_prefs, user_id, preview, time_zone, dnd, anchors=Anchors(users=(user_id,)))

    async def set_mute(self, user_id: int, conv_id: int, mute: str) -> None:
        await self._store.write(set_mute, user_id, conv_id, mute, anchors=Anchors(users=(user_id,)))

    async def set_pusher(self, user_id: int, device_id: str, kind: str, target: str, now: int) -> PusherRec:
        rec: PusherRec = await self._store.write(
            set_pusher, user_id, device_id, kind, target, now, anchors=Anchors(users=(user_id,))
        )
        return rec

    async def pushers(self, user_id: int) -> list[PusherRec]:
        found: list[PusherRec] = await self._store.read(pushers, user_id)
        return found

    async def remove_pusher(self, user_id: int, device_id: str, target: str | None = None) -> bool:
        removed: bool = await self._store.write(
            remove_pusher, user_id, device_id, target, anchors=Anchors(users=(user_id,))
        )
        return removed

    async def claim(self, now: int, lease_ms: int, limit: int) -> list[PushWork]:
        # skips what others hold, so it waits for no lock and needs no anchor
        work: list[PushWork] = await self._store.write(claim, now, lease_ms, limit, anchors=NO_ANCHORS)
        return work

    async def advance(self, user_id: int, device_id: str, created_at: int, seq: int, hold_until: int) -> None:
        await self._store.write(
            advance, user_id, device_id, created_at, seq, hold_until, anchors=Anchors(users=(user_id,))
        )

    async def back_off(self, user_id: int, device_id: str, created_at: int, until: int) -> None:
        await self._store.write(back_off, user_id, device_id, created_at, until, anchors=Anchors(users=(user_id,)))
