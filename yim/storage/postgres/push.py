"""Pusher jobs of the PostgreSQL store (yim/storage/push.py; schema_postgres_0006_pushers.sql).

Lock order (yim/storage/postgres/locks.py): a pusher row is written only while holding its
user's anchor, except by :func:`claim`, which takes rows with ``SKIP LOCKED`` and so never
waits: several nodes claiming at once each get other pushers, and a claim never blocks a
send. The lease, not a transaction, then holds the work while the provider is called.
A pusher's group cursors (``push_group_cursors``) are written under its user's anchor too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from yim.storage.postgres.locks import NO_ANCHORS, Anchors
from yim.storage.push import GroupWork, PusherRec, PushPrefsRec, PushStore, PushWork

if TYPE_CHECKING:
    from yim.storage.postgres.runner import PgJobs

_COLS = "user_id, device_id, kind, target, created_at, pushed_seq, lease_until, failures"


# A pusher's read-fan-out groups (yim/storage/push.py): the group's cursor (at least the
# member's read marker, where the group switched to read fan-out and where they joined), and
# what is due under the user's mute (``mute``: the parameter holding the default mute).
def _groups_from(user: str, device: str, lead: str = "") -> str:
    return (
        f" FROM {lead}user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " LEFT JOIN push_mutes m ON m.user_id = uc.user_id AND m.conv_id = uc.conv_id"
        " LEFT JOIN push_group_cursors g"
        f"   ON g.user_id = uc.user_id AND g.device_id = {device} AND g.conv_id = uc.conv_id"
        f" WHERE uc.user_id = {user} AND uc.left_seq IS NULL AND c.fanout = 'read' AND NOT c.dissolved"
    )


_DONE = "GREATEST(COALESCE(g.pushed_seq, 0), uc.read_seq, uc.joined_seq, c.switch_seq)"


def _due(mute: str) -> str:
    return (
        f"CASE COALESCE(m.mute, {mute}) WHEN 'off' THEN c.last_seq"
        " WHEN 'mentions' THEN GREATEST(uc.mention_seq, c.mention_all_seq) ELSE 0 END"
    )


_GROUP_DUE = f"EXISTS (SELECT 1{_groups_from('p.user_id', 'p.device_id')} AND {_due('$4::text')} > {_DONE})"
#: the groups due for the claimed pushers ($1 user ids, $2 device ids, $3 the default mute)
_CLAIMED = "unnest($1::bigint[], $2::text[]) AS x (user_id, device_id) CROSS JOIN "
_GROUP_WORK = (
    f"SELECT x.user_id, x.device_id, uc.conv_id, {_DONE}, c.last_seq, COALESCE(m.mute, $3::text)"
    f"{_groups_from('x.user_id', 'x.device_id', _CLAIMED)}"
    f" AND {_due('$3::text')} > {_DONE} ORDER BY uc.conv_id"
)


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
    # and after the head of each read-fan-out group of the user
    await conn.execute("DELETE FROM push_group_cursors WHERE user_id = $1 AND device_id = $2", user_id, device_id)
    await conn.execute(
        "INSERT INTO push_group_cursors (user_id, device_id, conv_id, pushed_seq)"
        " SELECT uc.user_id, $2, uc.conv_id, c.last_seq"
        " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id = $1 AND uc.left_seq IS NULL AND c.fanout = 'read'",
        user_id,
        device_id,
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
    if status == "DELETE 0":
        return False
    await conn.execute("DELETE FROM push_group_cursors WHERE user_id = $1 AND device_id = $2", user_id, device_id)
    return True


async def claim(conn: asyncpg.Connection, now: int, lease_ms: int, limit: int, read_fanout_mute: str) -> list[PushWork]:
    rows = await conn.fetch(
        "WITH w AS ("
        "  SELECT p.user_id, p.device_id, u.inbox_seq FROM pushers p JOIN users u ON u.id = p.user_id"
        f"  WHERE p.lease_until <= $1 AND (u.inbox_seq > p.pushed_seq OR {_GROUP_DUE})"
        "  ORDER BY p.lease_until LIMIT $3 FOR UPDATE OF p SKIP LOCKED)"
        " UPDATE pushers p SET lease_until = $1::bigint + $2::bigint FROM w"
        " WHERE p.user_id = w.user_id AND p.device_id = w.device_id"
        " RETURNING p.user_id, p.device_id, p.kind, p.target, p.created_at, p.pushed_seq, p.lease_until, p.failures,"
        " w.inbox_seq",
        now,
        lease_ms,
        limit,
        read_fanout_mute,
    )
    if not rows:
        return []
    groups: dict[tuple[int, str], list[GroupWork]] = {}
    for g in await conn.fetch(_GROUP_WORK, [r[0] for r in rows], [r[1] for r in rows], read_fanout_mute):
        groups.setdefault((g[0], g[1]), []).append(GroupWork(g[2], g[3], g[4], g[5]))
    return [PushWork(PusherRec(*tuple(r)[:8]), r[8], tuple(groups.get((r[0], r[1]), ()))) for r in rows]


async def advance(
    conn: asyncpg.Connection,
    user_id: int,
    device_id: str,
    created_at: int,
    seq: int,
    hold_until: int,
    groups: Sequence[tuple[int, int]],
) -> None:
    status = await conn.execute(
        "UPDATE pushers SET pushed_seq = GREATEST(pushed_seq, $4), lease_until = $5, failures = 0"
        " WHERE user_id = $1 AND device_id = $2 AND created_at = $3",
        user_id,
        device_id,
        created_at,
        seq,
        hold_until,
    )
    if status != "UPDATE 0" and groups:  # the same pusher still: its group cursors move with it
        await conn.execute(
            "INSERT INTO push_group_cursors (user_id, device_id, conv_id, pushed_seq)"
            " SELECT $1, $2, g.conv_id, g.upto FROM unnest($3::bigint[], $4::bigint[]) AS g (conv_id, upto)"
            " ON CONFLICT (user_id, device_id, conv_id)"
            " DO UPDATE SET pushed_seq = GREATEST(push_group_cursors.pushed_seq, excluded.pushed_seq)",
            user_id,
            device_id,
            [c for c, _ in groups],
            [u for _, u in groups],
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

    async def claim(self, now: int, lease_ms: int, limit: int, read_fanout_mute: str) -> list[PushWork]:
        # skips what others hold, so it waits for no lock and needs no anchor
        work: list[PushWork] = await self._store.write(
            claim, now, lease_ms, limit, read_fanout_mute, anchors=NO_ANCHORS
        )
        return work

    async def advance(
        self,
        user_id: int,
        device_id: str,
        created_at: int,
        seq: int,
        hold_until: int,
        groups: Sequence[tuple[int, int]] = (),
    ) -> None:
        await self._store.write(
            advance, user_id, device_id, created_at, seq, hold_until, groups, anchors=Anchors(users=(user_id,))
        )

    async def back_off(self, user_id: int, device_id: str, created_at: int, until: int) -> None:
        await self._store.write(back_off, user_id, device_id, created_at, until, anchors=Anchors(users=(user_id,)))
