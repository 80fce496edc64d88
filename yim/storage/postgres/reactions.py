"""PostgreSQL jobs of reactions and pins (see :mod:`yim.storage.reactions`); mirrors
:mod:`yim.storage.sqlite.reactions`. Every row they write is guarded by the conversation,
which a write job declares as its anchor (postgres/locks.py), with its members under
write fan-out (their inbox seqs move) and its actor."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from yim.storage.adapters import ReactionJobs
from yim.storage.postgres.locks import Anchors
from yim.storage.postgres.timeline import append_entry
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

_NO_END = 4611686018427387904


async def _member(conn: asyncpg.Connection, conv_id: int, user_id: int) -> tuple[str, int] | None:
    row = await conn.fetchrow(
        "SELECT role, joined_seq FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL",
        conv_id,
        user_id,
    )
    return (row[0], row[1]) if row else None


async def _target(conn: asyncpg.Connection, conv_id: int, seq: int) -> rules.TargetRow | None:
    row = await conn.fetchrow("SELECT msg_id, kind, recalled FROM messages WHERE conv_id=$1 AND seq=$2", conv_id, seq)
    return rules.TargetRow(row[0], row[1], bool(row[2])) if row else None


async def _visible(conn: asyncpg.Connection, conv_id: int, user_id: int) -> tuple[int, int]:
    """The seqs a member, present or past, may see: (joined_seq, last visible seq]."""
    row = await conn.fetchrow(
        "SELECT joined_seq, COALESCE(left_seq, $3) FROM user_conversations WHERE conv_id=$1 AND user_id=$2",
        conv_id,
        user_id,
        _NO_END,
    )
    timeline_rules.require_member(row is not None, conv_id)
    return row[0], row[1]


async def react(
    conn: asyncpg.Connection, conv_id: int, user_id: int, seq: int, emoji: str, add: bool, now: int, max_per_user: int
) -> ReactionChange:
    # The conversation is locked (the writer's prelude): one reaction at a time per conversation.
    target = rules.check_target(conv_id, seq, await _member(conn, conv_id, user_id), await _target(conn, conv_id, seq))
    rows = await conn.fetch(
        "SELECT emoji FROM reactions WHERE conv_id=$1 AND seq=$2 AND user_id=$3", conv_id, seq, user_id
    )
    mine = frozenset(r[0] for r in rows)
    changed = rules.check_react(mine, emoji, add, max_per_user)
    if changed and add:
        await conn.execute("INSERT INTO reactions VALUES ($1,$2,$3,$4,$5)", conv_id, seq, emoji, user_id, now)
        await conn.execute(
            "INSERT INTO reaction_counts VALUES ($1,$2,$3,1,$4)"
            " ON CONFLICT (conv_id, seq, emoji) DO UPDATE SET count = reaction_counts.count + 1",
            conv_id,
            seq,
            emoji,
            now,
        )
        mine = mine | {emoji}
    elif changed:
        await conn.execute(
            "DELETE FROM reactions WHERE conv_id=$1 AND seq=$2 AND emoji=$3 AND user_id=$4",
            conv_id,
            seq,
            emoji,
            user_id,
        )
        await conn.execute(
            "UPDATE reaction_counts SET count = count - 1 WHERE conv_id=$1 AND seq=$2 AND emoji=$3", conv_id, seq, emoji
        )
        await conn.execute(
            "DELETE FROM reaction_counts WHERE conv_id=$1 AND seq=$2 AND emoji=$3 AND count <= 0", conv_id, seq, emoji
        )
        mine = mine - {emoji}
    if changed:
        ver, fanout = await conn.fetchrow(
            "UPDATE conversations SET reaction_ver = reaction_ver + 1 WHERE id=$1 RETURNING reaction_ver, fanout",
            conv_id,
        )
        await conn.execute(
            "INSERT INTO reaction_changes VALUES ($1,$2,$3) ON CONFLICT (conv_id, seq) DO UPDATE SET ver = $3",
            conv_id,
            seq,
            ver,
        )
    else:
        ver, fanout = await conn.fetchrow("SELECT reaction_ver, fanout FROM conversations WHERE id=$1", conv_id)
    counts = [
        (r[0], r[1])
        for r in await conn.fetch(
            "SELECT emoji, count FROM reaction_counts WHERE conv_id=$1 AND seq=$2 ORDER BY first_at, emoji",
            conv_id,
            seq,
        )
    ]
    payload = b""
    deliveries: list[tuple[int, int]] = []
    if changed:
        payload = reaction_payload(conv_id, seq, target.msg_id, user_id, emoji, add, counts, ver)
        if fanout == "write":  # under read fan-out nothing is written per member
            rows = await conn.fetch(
                "UPDATE users SET inbox_seq = inbox_seq + 1 WHERE id IN (SELECT user_id FROM user_conversations"
                " WHERE conv_id=$1 AND left_seq IS NULL) RETURNING id, inbox_seq",
                conv_id,
            )
            deliveries = sorted((r[0], r[1]) for r in rows)
            await conn.executemany(
                "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, data, created_at)"
                " VALUES ($1,$2,'reaction',$3,$4,$5,$6,$7)",
                [(uid, iseq, conv_id, seq, user_id, payload.decode(), now) for uid, iseq in deliveries],
            )
    return reaction_change(conv_id, seq, target.msg_id, changed, mine, counts, ver, fanout, deliveries, payload)


async def reactions_of(
    conn: asyncpg.Connection, conv_id: int, viewer_id: int, seqs: list[int]
) -> dict[int, MessageReactions]:
    mine = {
        (r[0], r[1])
        for r in await conn.fetch(
            "SELECT seq, emoji FROM reactions WHERE conv_id=$1 AND user_id=$2 AND seq = ANY ($3)",
            conv_id,
            viewer_id,
            seqs,
        )
    }
    rows = await conn.fetch(
        "SELECT rc.seq, m.msg_id, rc.emoji, rc.count FROM reaction_counts rc"
        " JOIN messages m ON m.conv_id = rc.conv_id AND m.seq = rc.seq"
        " WHERE rc.conv_id=$1 AND rc.seq = ANY ($2) AND NOT m.recalled ORDER BY rc.seq, rc.first_at, rc.emoji",
        conv_id,
        seqs,
    )
    by_seq: dict[int, tuple[int, list[ReactionCount]]] = {}
    for seq, msg_id, emoji, count in rows:
        by_seq.setdefault(seq, (msg_id, []))[1].append(ReactionCount(emoji, count, (seq, emoji) in mine))
    return {seq: MessageReactions(seq, msg_id, tuple(rs)) for seq, (msg_id, rs) in by_seq.items()}


async def changed_since(
    conn: asyncpg.Connection, conv_id: int, viewer_id: int, after_ver: int, limit: int
) -> tuple[list[MessageReactions], int, bool]:
    floor, ceiling = await _visible(conn, conv_id, viewer_id)
    rows = await conn.fetch(
        "SELECT rc.seq, rc.ver, m.msg_id FROM reaction_changes rc JOIN messages m ON m.conv_id = rc.conv_id"
        " AND m.seq = rc.seq WHERE rc.conv_id=$1 AND rc.ver > $2 AND rc.seq > $3 AND rc.seq <= $4"
        " ORDER BY rc.ver LIMIT $5",
        conv_id,
        after_ver,
        floor,
        ceiling,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    if more:
        ver = rows[-1][1]
    else:
        ver = await conn.fetchval("SELECT reaction_ver FROM conversations WHERE id=$1", conv_id)
    found = await reactions_of(conn, conv_id, viewer_id, [r[0] for r in rows]) if rows else {}
    items = [found.get(r[0]) or MessageReactions(r[0], r[2], ()) for r in rows]
    return items, ver, more


async def reactors(
    conn: asyncpg.Connection, conv_id: int, viewer_id: int, seq: int, emoji: str, after: int, limit: int
) -> list[int]:
    floor, ceiling = await _visible(conn, conv_id, viewer_id)
    if not floor < seq <= ceiling:
        return []
    rows = await conn.fetch(
        "SELECT user_id FROM reactions WHERE conv_id=$1 AND seq=$2 AND emoji=$3 AND user_id > $4"
        " ORDER BY user_id LIMIT $5",
        conv_id,
        seq,
        emoji,
        after,
        limit,
    )
    return [r[0] for r in rows]


async def versions(conn: asyncpg.Connection, conv_ids: list[int]) -> dict[int, int]:
    rows = await conn.fetch("SELECT id, reaction_ver FROM conversations WHERE id = ANY ($1)", conv_ids)
    return {r[0]: r[1] for r in rows}


async def pin(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, seq: int, on: bool, msg_id: int, now: int, max_pins: int
) -> PinChange:
    member = await _member(conn, conv_id, actor_id)
    target = await _target(conn, conv_id, seq)
    if on:
        target = rules.check_target(conv_id, seq, member, target)
    else:
        timeline_rules.require_member(member is not None, conv_id)
    conv_type, pin_policy = await conn.fetchrow("SELECT type, pin_policy FROM conversations WHERE id=$1", conv_id)
    pinned = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pins WHERE conv_id=$1 AND seq=$2)", conv_id, seq)
    count = await conn.fetchval(
        "SELECT COUNT(*) FROM pins p JOIN messages m ON m.conv_id = p.conv_id AND m.seq = p.seq"
        " WHERE p.conv_id=$1 AND NOT m.recalled",
        conv_id,
    )
    assert member is not None
    if not rules.check_pin(conv_type, pin_policy, member[0], pinned, on, count, max_pins):
        return PinChange(changed=False, entry=None)
    assert target is not None
    if on:
        await conn.execute("INSERT INTO pins VALUES ($1,$2,$3,$4,$5)", conv_id, seq, target.msg_id, actor_id, now)
    else:
        await conn.execute("DELETE FROM pins WHERE conv_id=$1 AND seq=$2", conv_id, seq)
    entry = await append_entry(conn, conv_id, rules.pin_entry(actor_id, msg_id, now, on, seq, target.msg_id))
    return PinChange(changed=True, entry=entry)


async def pins(conn: asyncpg.Connection, conv_ids: list[int]) -> dict[int, list[PinRec]]:
    rows = await conn.fetch(
        "SELECT p.conv_id, p.seq, p.msg_id, p.pinned_by, p.pinned_at FROM pins p"
        " JOIN messages m ON m.conv_id = p.conv_id AND m.seq = p.seq"
        " WHERE p.conv_id = ANY ($1) AND NOT m.recalled ORDER BY p.pinned_at DESC, p.seq DESC",
        conv_ids,
    )
    out: dict[int, list[PinRec]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(PinRec(r[1], r[2], r[3], r[4]))
    return out


class PgRunner:
    """A write anchors its conversation, that conversation's members (only under write
    fan-out: ``yim_lock`` skips read-fan-out groups) and its actor (postgres/locks.py)."""

    def __init__(self, store: Any) -> None:
        self._s = store

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, actor_id: int) -> Awaitable[Any]:
        anchors = Anchors(convs=(conv_id,), members_of=(conv_id,), users=(actor_id,))
        return self._s.write(fn, *args, anchors=anchors)

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)


class PgReactionStore(ReactionJobs):
    def __init__(self, store: Any) -> None:
        super().__init__(sys.modules[__name__], PgRunner(store))
