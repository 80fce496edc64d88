"""SQLite jobs of reactions and pins (see :mod:`yim.storage.reactions`)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from yim.storage.adapters import ReactionJobs
from yim.storage.reactions import (
    MessageReactions,
    PinChange,
    PinRec,
    ReactionChange,
    ReactionCount,
    reaction_change,
    reaction_payload,
)
from yim.storage.rules import reactions as rules
from yim.storage.rules import timeline as timeline_rules
from yim.storage.sqlite.timeline import append_entry, member_ids, next_inbox_seqs


def _member(conn: sqlite3.Connection, conv_id: int, user_id: int) -> tuple[str, int] | None:
    row = conn.execute(
        "SELECT role, joined_seq FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL",
        (conv_id, user_id),
    ).fetchone()
    return (row[0], row[1]) if row else None


def _target(conn: sqlite3.Connection, conv_id: int, seq: int) -> rules.TargetRow | None:
    row = conn.execute(
        "SELECT msg_id, kind, recalled FROM messages WHERE conv_id=? AND seq=?", (conv_id, seq)
    ).fetchone()
    return rules.TargetRow(row[0], row[1], bool(row[2])) if row else None


def _visible(conn: sqlite3.Connection, conv_id: int, user_id: int) -> tuple[int, int]:
    """The seqs a member, present or past, may see: (joined_seq, last visible seq]."""
    row = conn.execute(
        "SELECT uc.joined_seq, COALESCE(uc.left_seq, 4611686018427387904) FROM user_conversations uc"
        " WHERE uc.conv_id=? AND uc.user_id=?",
        (conv_id, user_id),
    ).fetchone()
    timeline_rules.require_member(row is not None, conv_id)
    return row[0], row[1]


def _counts(conn: sqlite3.Connection, conv_id: int, seq: int) -> list[tuple[str, int]]:
    return conn.execute(
        "SELECT emoji, count FROM reaction_counts WHERE conv_id=? AND seq=? ORDER BY first_at, emoji", (conv_id, seq)
    ).fetchall()


def react(
    conn: sqlite3.Connection, conv_id: int, user_id: int, seq: int, emoji: str, add: bool, now: int, max_per_user: int
) -> ReactionChange:
    target = rules.check_target(conv_id, seq, _member(conn, conv_id, user_id), _target(conn, conv_id, seq))
    mine = frozenset(
        r[0]
        for r in conn.execute(
            "SELECT emoji FROM reactions WHERE conv_id=? AND seq=? AND user_id=?", (conv_id, seq, user_id)
        )
    )
    changed = rules.check_react(mine, emoji, add, max_per_user)
    if changed and add:
        conn.execute("INSERT INTO reactions VALUES (?,?,?,?,?)", (conv_id, seq, emoji, user_id, now))
        conn.execute(
            "INSERT INTO reaction_counts VALUES (?,?,?,1,?)"
            " ON CONFLICT (conv_id, seq, emoji) DO UPDATE SET count = count + 1",
            (conv_id, seq, emoji, now),
        )
        mine = mine | {emoji}
    elif changed:
        conn.execute(
            "DELETE FROM reactions WHERE conv_id=? AND seq=? AND emoji=? AND user_id=?", (conv_id, seq, emoji, user_id)
        )
        conn.execute(
            "UPDATE reaction_counts SET count = count - 1 WHERE conv_id=? AND seq=? AND emoji=?", (conv_id, seq, emoji)
        )
        conn.execute(
            "DELETE FROM reaction_counts WHERE conv_id=? AND seq=? AND emoji=? AND count <= 0", (conv_id, seq, emoji)
        )
        mine = mine - {emoji}
    if changed:
        ver, fanout = conn.execute(
            "UPDATE conversations SET reaction_ver = reaction_ver + 1 WHERE id=? RETURNING reaction_ver, fanout",
            (conv_id,),
        ).fetchone()
        conn.execute("INSERT OR REPLACE INTO reaction_changes VALUES (?,?,?)", (conv_id, seq, ver))
    else:
        ver, fanout = conn.execute("SELECT reaction_ver, fanout FROM conversations WHERE id=?", (conv_id,)).fetchone()
    counts = _counts(conn, conv_id, seq)
    payload = b""
    deliveries: list[tuple[int, int]] = []
    if changed:
        payload = reaction_payload(conv_id, seq, target.msg_id, user_id, emoji, add, counts, ver)
        if fanout == "write":  # under read fan-out nothing is written per member
            deliveries = next_inbox_seqs(conn, member_ids(conn, conv_id))
            data = payload.decode()
            conn.executemany(
                "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, data, created_at)"
                " VALUES (?,?,'reaction',?,?,?,?,?)",
                [(uid, iseq, conv_id, seq, user_id, data, now) for uid, iseq in deliveries],
            )
    return reaction_change(conv_id, seq, target.msg_id, changed, mine, counts, ver, fanout, deliveries, payload)


def reactions_of(
    conn: sqlite3.Connection, conv_id: int, viewer_id: int, seqs: list[int]
) -> dict[int, MessageReactions]:
    out: dict[int, MessageReactions] = {}
    for i in range(0, len(seqs), 500):
        chunk = seqs[i : i + 500]
        marks = ",".join("?" * len(chunk))
        mine = set(
            conn.execute(
                f"SELECT seq, emoji FROM reactions WHERE conv_id=? AND user_id=? AND seq IN ({marks})",
                (conv_id, viewer_id, *chunk),
            ).fetchall()
        )
        rows = conn.execute(
            f"SELECT rc.seq, m.msg_id, rc.emoji, rc.count FROM reaction_counts rc"
            " JOIN messages m ON m.conv_id = rc.conv_id AND m.seq = rc.seq"
            f" WHERE rc.conv_id=? AND rc.seq IN ({marks}) AND m.recalled = 0 ORDER BY rc.seq, rc.first_at, rc.emoji",
            (conv_id, *chunk),
        ).fetchall()
        by_seq: dict[int, tuple[int, list[ReactionCount]]] = {}
        for seq, msg_id, emoji, count in rows:
            by_seq.setdefault(seq, (msg_id, []))[1].append(ReactionCount(emoji, count, (seq, emoji) in mine))
        out.update({seq: MessageReactions(seq, msg_id, tuple(rs)) for seq, (msg_id, rs) in by_seq.items()})
    return out


def changed_since(
    conn: sqlite3.Connection, conv_id: int, viewer_id: int, after_ver: int, limit: int
) -> tuple[list[MessageReactions], int, bool]:
    floor, ceiling = _visible(conn, conv_id, viewer_id)
    rows = conn.execute(
        "SELECT rc.seq, rc.ver, m.msg_id FROM reaction_changes rc JOIN messages m ON m.conv_id = rc.conv_id"
        " AND m.seq = rc.seq WHERE rc.conv_id=? AND rc.ver > ? AND rc.seq > ? AND rc.seq <= ? ORDER BY rc.ver LIMIT ?",
        (conv_id, after_ver, floor, ceiling, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if more:
        ver = rows[-1][1]
    else:
        ver = conn.execute("SELECT reaction_ver FROM conversations WHERE id=?", (conv_id,)).fetchone()[0]
    found = reactions_of(conn, conv_id, viewer_id, [r[0] for r in rows])
    items = [found.get(seq) or MessageReactions(seq, msg_id, ()) for seq, _ver, msg_id in rows]
    return items, ver, more


def reactors(
    conn: sqlite3.Connection, conv_id: int, viewer_id: int, seq: int, emoji: str, after: int, limit: int
) -> list[int]:
    floor, ceiling = _visible(conn, conv_id, viewer_id)
    if not floor < seq <= ceiling:
        return []
    return [
        r[0]
        for r in conn.execute(
            "SELECT user_id FROM reactions WHERE conv_id=? AND seq=? AND emoji=? AND user_id > ?"
            " ORDER BY user_id LIMIT ?",
            (conv_id, seq, emoji, after, limit),
        )
    ]


def versions(conn: sqlite3.Connection, conv_ids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for i in range(0, len(conv_ids), 500):
        chunk = conv_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        out.update(conn.execute(f"SELECT id, reaction_ver FROM conversations WHERE id IN ({marks})", chunk).fetchall())
    return out


def pin(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, seq: int, on: bool, msg_id: int, now: int, max_pins: int
) -> PinChange:
    member = _member(conn, conv_id, actor_id)
    target = _target(conn, conv_id, seq)
    if on:
        target = rules.check_target(conv_id, seq, member, target)
    else:
        timeline_rules.require_member(member is not None, conv_id)
    conv_type, pin_policy = conn.execute("SELECT type, pin_policy FROM conversations WHERE id=?", (conv_id,)).fetchone()
    pinned = conn.execute("SELECT 1 FROM pins WHERE conv_id=? AND seq=?", (conv_id, seq)).fetchone() is not None
    count = conn.execute(
        "SELECT COUNT(*) FROM pins p JOIN messages m ON m.conv_id = p.conv_id AND m.seq = p.seq"
        " WHERE p.conv_id=? AND m.recalled = 0",
        (conv_id,),
    ).fetchone()[0]
    assert member is not None
    if not rules.check_pin(conv_type, pin_policy, member[0], pinned, on, count, max_pins):
        return PinChange(changed=False, entry=None)
    assert target is not None
    if on:
        conn.execute("INSERT INTO pins VALUES (?,?,?,?,?)", (conv_id, seq, target.msg_id, actor_id, now))
    else:
        conn.execute("DELETE FROM pins WHERE conv_id=? AND seq=?", (conv_id, seq))
    entry = append_entry(conn, conv_id, rules.pin_entry(actor_id, msg_id, now, on, seq, target.msg_id))
    return PinChange(changed=True, entry=entry)


def pins(conn: sqlite3.Connection, conv_ids: list[int]) -> dict[int, list[PinRec]]:
    out: dict[int, list[PinRec]] = {}
    for i in range(0, len(conv_ids), 500):
        chunk = conv_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT p.conv_id, p.seq, p.msg_id, p.pinned_by, p.pinned_at FROM pins p"
            " JOIN messages m ON m.conv_id = p.conv_id AND m.seq = p.seq"
            f" WHERE p.conv_id IN ({marks}) AND m.recalled = 0 ORDER BY p.pinned_at DESC, p.seq DESC",
            chunk,
        ).fetchall()
        for conv_id, seq, msg_id, by, at in rows:
            out.setdefault(conv_id, []).append(PinRec(seq, msg_id, by, at))
    return out


class SqliteRunner:
    """Writes go to the writer thread's next group commit; reads to a reader thread, in one
    read transaction."""

    def __init__(self, store: Any) -> None:
        self._s = store

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, actor_id: int) -> Awaitable[Any]:
        return self._s.write(fn, *args)

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)


class SqliteReactionStore(ReactionJobs):
    def __init__(self, store: Any) -> None:
        super().__init__(sys.modules[__name__], SqliteRunner(store))
