"""Pusher jobs of the SQLite store (yim/storage/push.py; schema_sqlite_0002_pushers.sql).

One node writes an SQLite store, on one writer thread, so a claim needs no skip-locked
read: the UPDATE that sets the lease is the whole of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from yim.storage.push import GroupWork, PusherRec, PushPrefsRec, PushStore, PushWork

if TYPE_CHECKING:
    from yim.storage.sqlite.runner import SqliteJobs

_COLS = "user_id, device_id, kind, target, created_at, pushed_seq, lease_until, failures"


# A pusher's read-fan-out groups (yim/storage/push.py): the group's cursor (at least the
# member's read marker, where the group switched to read fan-out and where they joined), and
# what is due under the user's mute (the one parameter of _MUTE: the default mute).
def _groups_from(user: str, device: str) -> str:
    return (
        " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " LEFT JOIN push_mutes m ON m.user_id = uc.user_id AND m.conv_id = uc.conv_id"
        " LEFT JOIN push_group_cursors g"
        f"   ON g.user_id = uc.user_id AND g.device_id = {device} AND g.conv_id = uc.conv_id"
        f" WHERE uc.user_id = {user} AND uc.left_seq IS NULL AND c.fanout = 'read' AND NOT c.dissolved"
    )


_DONE = "MAX(COALESCE(g.pushed_seq, 0), uc.read_seq, uc.joined_seq, c.switch_seq)"
_MUTE = "COALESCE(m.mute, ?)"
_DUE = f"CASE {_MUTE} WHEN 'off' THEN c.last_seq WHEN 'mentions' THEN MAX(uc.mention_seq, c.mention_all_seq) ELSE 0 END"
#: is any group due for pusher p? (parameter: the default mute)
_GROUP_DUE = f"EXISTS (SELECT 1{_groups_from('p.user_id', 'p.device_id')} AND {_DUE} > {_DONE})"
#: the groups due for one pusher (parameters: the default mute, the device, the user, the default mute)
_GROUP_WORK = f"SELECT uc.conv_id, {_DONE}, c.last_seq, {_MUTE}{_groups_from('?', '?')} AND {_DUE} > {_DONE}"


def set_pusher(conn: sqlite3.Connection, user_id: int, device_id: str, kind: str, target: str, now: int) -> PusherRec:
    row = conn.execute(
        f"INSERT INTO pushers ({_COLS})"
        " VALUES (?, ?, ?, ?, ?, COALESCE((SELECT inbox_seq FROM users WHERE id = ?), 0), 0, 0)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET kind = excluded.kind, target = excluded.target,"
        " created_at = excluded.created_at, pushed_seq = excluded.pushed_seq, lease_until = 0, failures = 0"
        f" RETURNING {_COLS}",
        (user_id, device_id, kind, target, now, user_id),
    ).fetchone()
    # and after the head of each read-fan-out group of the user
    conn.execute("DELETE FROM push_group_cursors WHERE user_id = ? AND device_id = ?", (user_id, device_id))
    conn.execute(
        "INSERT INTO push_group_cursors (user_id, device_id, conv_id, pushed_seq)"
        " SELECT uc.user_id, ?, uc.conv_id, c.last_seq"
        " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id = ? AND uc.left_seq IS NULL AND c.fanout = 'read'",
        (device_id, user_id),
    )
    return PusherRec(*row)


def pushers(conn: sqlite3.Connection, user_id: int) -> list[PusherRec]:
    rows = conn.execute(f"SELECT {_COLS} FROM pushers WHERE user_id = ? ORDER BY device_id", (user_id,))
    return [PusherRec(*r) for r in rows]


def remove_pusher(conn: sqlite3.Connection, user_id: int, device_id: str, target: str | None) -> bool:
    cur = conn.execute(
        "DELETE FROM pushers WHERE user_id = ? AND device_id = ? AND (? IS NULL OR target = ?)",
        (user_id, device_id, target, target),
    )
    if cur.rowcount == 0:
        return False
    conn.execute("DELETE FROM push_group_cursors WHERE user_id = ? AND device_id = ?", (user_id, device_id))
    return True


def claim(conn: sqlite3.Connection, now: int, lease_ms: int, limit: int, read_fanout_mute: str) -> list[PushWork]:
    rows = conn.execute(
        "UPDATE pushers SET lease_until = ? WHERE (user_id, device_id) IN ("
        "  SELECT p.user_id, p.device_id FROM pushers p JOIN users u ON u.id = p.user_id"
        f"  WHERE p.lease_until <= ? AND (u.inbox_seq > p.pushed_seq OR {_GROUP_DUE})"
        "  ORDER BY p.lease_until LIMIT ?)"
        f" RETURNING {_COLS}, (SELECT inbox_seq FROM users WHERE id = pushers.user_id)",
        (now + lease_ms, now, read_fanout_mute, limit),
    ).fetchall()
    work = []
    for r in rows:
        groups = conn.execute(_GROUP_WORK, (read_fanout_mute, r[1], r[0], read_fanout_mute))
        work.append(PushWork(PusherRec(*r[:8]), r[8], tuple(GroupWork(*g) for g in groups)))
    return work


def advance(
    conn: sqlite3.Connection,
    user_id: int,
    device_id: str,
    created_at: int,
    seq: int,
    hold_until: int,
    groups: Sequence[tuple[int, int]],
) -> None:
    cur = conn.execute(
        "UPDATE pushers SET pushed_seq = MAX(pushed_seq, ?), lease_until = ?, failures = 0"
        " WHERE user_id = ? AND device_id = ? AND created_at = ?",
        (seq, hold_until, user_id, device_id, created_at),
    )
    if cur.rowcount and groups:  # the same pusher still: its group cursors move with it
        conn.executemany(
            "INSERT INTO push_group_cursors (user_id, device_id, conv_id, pushed_seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, device_id, conv_id)"
            " DO UPDATE SET pushed_seq = MAX(pushed_seq, excluded.pushed_seq)",
            [(user_id, device_id, conv_id, upto) for conv_id, upto in groups],
        )


def back_off(conn: sqlite3.Connection, user_id: int, device_id: str, created_at: int, until: int) -> None:
    conn.execute(
        "UPDATE pushers SET lease_until = ?, failures = failures + 1"
        " WHERE user_id = ? AND device_id = ? AND created_at = ?",
        (until, user_id, device_id, created_at),
    )


def prefs(conn: sqlite3.Connection, user_id: int) -> PushPrefsRec:
    row = conn.execute("SELECT preview, time_zone, dnd_start, dnd_end FROM push_prefs WHERE user_id = ?", (user_id,))
    found = row.fetchone()
    mutes = dict(conn.execute("SELECT conv_id, mute FROM push_mutes WHERE user_id = ?", (user_id,)).fetchall())
    if found is None:
        return PushPrefsRec(mutes=mutes)
    dnd = (found[2], found[3]) if found[2] is not None else None
    return PushPrefsRec(preview=bool(found[0]), time_zone=found[1], dnd=dnd, mutes=mutes)


def set_prefs(
    conn: sqlite3.Connection, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None
) -> None:
    start, end = dnd if dnd is not None else (None, None)
    conn.execute(
        "INSERT INTO push_prefs (user_id, preview, time_zone, dnd_start, dnd_end) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET preview = excluded.preview, time_zone = excluded.time_zone,"
        " dnd_start = excluded.dnd_start, dnd_end = excluded.dnd_end",
        (user_id, int(preview), time_zone, start, end),
    )


def set_mute(conn: sqlite3.Connection, user_id: int, conv_id: int, mute: str) -> None:
    conn.execute(
        "INSERT INTO push_mutes (user_id, conv_id, mute) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, conv_id) DO UPDATE SET mute = excluded.mute",
        (user_id, conv_id, mute),
    )


class SqlitePushStore(PushStore):
    def __init__(self, store: SqliteJobs) -> None:
        self._store = store

    async def prefs(self, user_id: int) -> PushPrefsRec:
        rec: PushPrefsRec = await self._store.read(prefs, user_id)
        return rec

    async def set_prefs(self, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None) -> None:
        await self._store.write(set_prefs, user_id, preview, time_zone, dnd)

    async def set_mute(self, user_id: int, conv_id: int, mute: str) -> None:
        await self._store.write(set_mute, user_id, conv_id, mute)

    async def set_pusher(self, user_id: int, device_id: str, kind: str, target: str, now: int) -> PusherRec:
        rec: PusherRec = await self._store.write(set_pusher, user_id, device_id, kind, target, now)
        return rec

    async def pushers(self, user_id: int) -> list[PusherRec]:
        found: list[PusherRec] = await self._store.read(pushers, user_id)
        return found

    async def remove_pusher(self, user_id: int, device_id: str, target: str | None = None) -> bool:
        removed: bool = await self._store.write(remove_pusher, user_id, device_id, target)
        return removed

    async def claim(self, now: int, lease_ms: int, limit: int, read_fanout_mute: str) -> list[PushWork]:
        work: list[PushWork] = await self._store.write(claim, now, lease_ms, limit, read_fanout_mute)
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
        await self._store.write(advance, user_id, device_id, created_at, seq, hold_until, groups)

    async def back_off(self, user_id: int, device_id: str, created_at: int, until: int) -> None:
        await self._store.write(back_off, user_id, device_id, created_at, until)
