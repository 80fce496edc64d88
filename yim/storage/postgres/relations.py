"""PostgreSQL jobs of the relation chain; mirrors :mod:`yim.storage.sqlite.relations`.

Concurrency: SQLite runs one write at a time; here several nodes write at once, so every
write about a pair of users first takes a transaction-scoped advisory lock on that
(unordered) pair. Two crossing friend requests, or a block racing a follow, then apply
one after the other exactly as they would on one node.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from yim.storage.adapters import RelationJobs
from yim.storage.postgres.locks import Anchors, lock_anchors
from yim.storage.postgres.runner import PgJobs, PgRunner
from yim.storage.postgres.timeline import append_inbox_events
from yim.storage.relations import (
    REQUEST_COLS,
    EdgeRec,
    FriendRec,
    FriendRequestRec,
    InboxWrite,
    PrivacyRec,
    RelationCounts,
    RelationState,
)
from yim.storage.rules import relations as rules


async def _lock_pair(conn: asyncpg.Connection, a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"pair:{lo}:{hi}")


async def _exists(conn: asyncpg.Connection, sql: str, *args: Any) -> bool:
    return await conn.fetchval(sql, *args) is not None


async def is_blocked(conn: asyncpg.Connection, user_id: int, by_id: int) -> bool:
    return await _exists(conn, "SELECT 1 FROM blocks WHERE user_id=$1 AND blocked_id=$2", by_id, user_id)


async def are_friends(conn: asyncpg.Connection, a: int, b: int) -> bool:
    return await _exists(conn, "SELECT 1 FROM friends WHERE user_id=$1 AND friend_id=$2", a, b)


async def _blocked_pair(conn: asyncpg.Connection, a: int, b: int) -> bool:
    return await _exists(
        conn, "SELECT 1 FROM blocks WHERE (user_id=$1 AND blocked_id=$2) OR (user_id=$2 AND blocked_id=$1)", a, b
    )


async def _user_exists(conn: asyncpg.Connection, user_id: int) -> None:
    rules.require_user(await _exists(conn, "SELECT 1 FROM users WHERE id=$1", user_id), user_id)


async def _request(conn: asyncpg.Connection, request_id: int, actor_id: int) -> FriendRequestRec:
    r = await conn.fetchrow(f"SELECT {REQUEST_COLS} FROM friend_requests WHERE id=$1", request_id)
    return rules.visible_request(FriendRequestRec(*r) if r else None, request_id, actor_id)


async def _befriend(conn: asyncpg.Connection, a: int, b: int, now: int) -> None:
    await conn.execute(
        "INSERT INTO friends (user_id, friend_id, created_at) VALUES ($1,$2,$3), ($2,$1,$3) ON CONFLICT DO NOTHING",
        a,
        b,
        now,
    )


async def _save(conn: asyncpg.Connection, req: FriendRequestRec) -> None:
    await conn.execute(
        "UPDATE friend_requests SET status=$2, updated_at=$3 WHERE id=$1", req.id, req.status, req.updated_at
    )
    if req.status == "accepted":
        await _befriend(conn, req.from_id, req.to_id, req.updated_at)


async def friend_request(
    conn: asyncpg.Connection, request_id: int, from_id: int, to_id: int, message: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    rules.check_not_self(from_id, to_id, "befriend")
    await _user_exists(conn, to_id)
    await _lock_pair(conn, from_id, to_id)
    blocked_by_them, blocked_them = (
        await is_blocked(conn, from_id, by_id=to_id),
        await is_blocked(conn, to_id, by_id=from_id),
    )
    rules.check_request(blocked_by_them, blocked_them, await are_friends(conn, from_id, to_id))
    pending = await conn.fetchrow(
        f"SELECT {REQUEST_COLS} FROM friend_requests WHERE status='pending' AND"
        " ((from_id=$1 AND to_id=$2) OR (from_id=$2 AND to_id=$1))",
        from_id,
        to_id,
    )
    if pending is not None:
        crossing = rules.crossing_request(FriendRequestRec(*pending), from_id, now)
        if crossing is None:
            return FriendRequestRec(*pending), []
        req, events = crossing
        await _save(conn, req)
        return req, await append_inbox_events(conn, "relation", events, now)
    req, events = rules.new_request(request_id, from_id, to_id, message, now)
    await conn.execute(
        f"INSERT INTO friend_requests ({REQUEST_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        req.id,
        req.from_id,
        req.to_id,
        req.message,
        req.status,
        req.created_at,
        req.updated_at,
    )
    return req, await append_inbox_events(conn, "relation", events, now)


async def friend_respond(
    conn: asyncpg.Connection, request_id: int, actor_id: int, action: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    req = await _request(conn, request_id, actor_id)
    # Submitted without anchors (the users are known only now), so it runs alone and takes
    # its prelude here, before any other lock: the pair's users, then the pair.
    await lock_anchors(conn, [Anchors(users=(req.from_id, req.to_id))])
    await _lock_pair(conn, req.from_id, req.to_id)
    req = await _request(conn, request_id, actor_id)  # as it is now that the pair is ours
    blocked = action == "accept" and await _blocked_pair(conn, req.from_id, req.to_id)
    req, events = rules.respond(req, actor_id, action, now, blocked)
    await _save(conn, req)
    return req, await append_inbox_events(conn, "relation", events, now)


async def _unfriend(conn: asyncpg.Connection, a: int, b: int) -> bool:
    status = await conn.execute(
        "DELETE FROM friends WHERE (user_id=$1 AND friend_id=$2) OR (user_id=$2 AND friend_id=$1)", a, b
    )
    return status != "DELETE 0"


async def friend_delete(conn: asyncpg.Connection, actor_id: int, other_id: int, now: int) -> list[InboxWrite]:
    await _lock_pair(conn, actor_id, other_id)
    rules.require_friends(await _unfriend(conn, actor_id, other_id))
    return await append_inbox_events(conn, "relation", rules.both(actor_id, other_id, "friend_removed"), now)


async def friend_update(
    conn: asyncpg.Connection, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
) -> FriendRec:
    row = await conn.fetchrow(
        "SELECT remark, tags, created_at FROM friends WHERE user_id=$1 AND friend_id=$2 FOR UPDATE", actor_id, other_id
    )
    friend = rules.updated_friend(row, other_id, remark, tags)
    sql = "UPDATE friends SET remark=$3, tags=$4 WHERE user_id=$1 AND friend_id=$2"
    await conn.execute(sql, actor_id, other_id, friend.remark, rules.tags_json(friend.tags))
    return friend


async def _set_follow(conn: asyncpg.Connection, actor_id: int, target_id: int, on: bool, now: int) -> bool:
    if on:
        status = await conn.execute(
            "INSERT INTO following (user_id, target_id, created_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            actor_id,
            target_id,
            now,
        )
        await conn.execute(
            "INSERT INTO followers (user_id, follower_id, created_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            target_id,
            actor_id,
            now,
        )
        return status != "INSERT 0 0"
    status = await conn.execute("DELETE FROM following WHERE user_id=$1 AND target_id=$2", actor_id, target_id)
    await conn.execute("DELETE FROM followers WHERE user_id=$1 AND follower_id=$2", target_id, actor_id)
    return status != "DELETE 0"


async def follow(conn: asyncpg.Connection, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
    rules.check_not_self(actor_id, target_id, "follow")
    await _user_exists(conn, target_id)
    await _lock_pair(conn, actor_id, target_id)
    rules.check_follow(on, on and await _blocked_pair(conn, actor_id, target_id))
    events = rules.follow_events(actor_id, target_id, on, await _set_follow(conn, actor_id, target_id, on, now))
    return await append_inbox_events(conn, "relation", events, now)


async def block(conn: asyncpg.Connection, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
    rules.check_not_self(actor_id, target_id, "block")
    await _user_exists(conn, target_id)
    await _lock_pair(conn, actor_id, target_id)
    if on:
        status = await conn.execute(
            "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            actor_id,
            target_id,
            now,
        )
        if status == "INSERT 0 0":
            return []
        unfriended = await _unfriend(conn, actor_id, target_id)
        await conn.execute(
            "UPDATE friend_requests SET status='canceled', updated_at=$1 WHERE status='pending' AND"
            " ((from_id=$2 AND to_id=$3) OR (from_id=$3 AND to_id=$2))",
            now,
            actor_id,
            target_id,
        )
        pairs = ((actor_id, target_id), (target_id, actor_id))
        unfollowed = tuple([(a, b) for a, b in pairs if await _set_follow(conn, a, b, False, now)])
        events = rules.block_events(actor_id, target_id, unfriended=unfriended, unfollowed=unfollowed)
    else:
        status = await conn.execute("DELETE FROM blocks WHERE user_id=$1 AND blocked_id=$2", actor_id, target_id)
        if status == "DELETE 0":
            return []
        events = rules.unblock_events(actor_id, target_id)
    return await append_inbox_events(conn, "relation", events, now)


async def privacy(conn: asyncpg.Connection, user_id: int) -> PrivacyRec:
    r = await conn.fetchrow("SELECT dm_policy, presence FROM privacy WHERE user_id=$1", user_id)
    return PrivacyRec(*r) if r else PrivacyRec()


async def set_privacy(
    conn: asyncpg.Connection, user_id: int, dm_policy: str | None, presence: str | None
) -> PrivacyRec:
    r = await conn.fetchrow(
        "INSERT INTO privacy AS p (user_id, dm_policy, presence) VALUES ($1, COALESCE($2, 'anyone'),"
        " COALESCE($3, 'friends')) ON CONFLICT (user_id) DO UPDATE SET dm_policy=COALESCE($2, p.dm_policy),"
        " presence=COALESCE($3, p.presence) RETURNING dm_policy, presence",
        user_id,
        dm_policy or None,
        presence or None,
    )
    return PrivacyRec(*r)


async def friend_requests(
    conn: asyncpg.Connection, user_id: int, incoming: bool, before: int | None, limit: int
) -> list[FriendRequestRec]:
    col = "to_id" if incoming else "from_id"
    rows = await conn.fetch(
        f"SELECT {REQUEST_COLS} FROM friend_requests WHERE {col}=$1 AND status='pending' AND id<$2"
        " ORDER BY id DESC LIMIT $3",
        user_id,
        before if before is not None else 2**63 - 1,
        limit,
    )
    return [FriendRequestRec(*r) for r in rows]


async def friends(conn: asyncpg.Connection, user_id: int, after: int, limit: int) -> list[FriendRec]:
    rows = await conn.fetch(
        "SELECT friend_id, remark, tags, created_at FROM friends WHERE user_id=$1 AND friend_id>$2"
        " ORDER BY friend_id LIMIT $3",
        user_id,
        after,
        limit,
    )
    return [rules.friend(r) for r in rows]


_EDGES = {
    "followers": ("followers", "follower_id"),
    "following": ("following", "target_id"),
    "blocks": ("blocks", "blocked_id"),
}


async def edges(conn: asyncpg.Connection, user_id: int, kind: str, after: int, limit: int) -> list[EdgeRec]:
    table, col = _EDGES[kind]
    rows = await conn.fetch(
        f"SELECT {col}, created_at FROM {table} WHERE user_id=$1 AND {col}>$2 ORDER BY {col} LIMIT $3",
        user_id,
        after,
        limit,
    )
    return [EdgeRec(*r) for r in rows]


async def counts(conn: asyncpg.Connection, user_id: int) -> RelationCounts:
    r = await conn.fetchrow(
        "SELECT (SELECT COUNT(*) FROM friends WHERE user_id=$1), (SELECT COUNT(*) FROM followers WHERE user_id=$1),"
        " (SELECT COUNT(*) FROM following WHERE user_id=$1)",
        user_id,
    )
    return RelationCounts(friends=r[0], followers=r[1], following=r[2])


async def blocked_either_way(conn: asyncpg.Connection, user_id: int, others: list[int]) -> set[int]:
    rows = await conn.fetch(
        "SELECT blocked_id FROM blocks WHERE user_id=$1 AND blocked_id = ANY ($2)"
        " UNION SELECT user_id FROM blocks WHERE blocked_id=$1 AND user_id = ANY ($2)",
        user_id,
        others,
    )
    return {r[0] for r in rows}


async def relation(conn: asyncpg.Connection, user_id: int, other_id: int) -> RelationState:
    r = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM friends WHERE user_id=$1 AND friend_id=$2),"
        " EXISTS (SELECT 1 FROM following WHERE user_id=$1 AND target_id=$2),"
        " EXISTS (SELECT 1 FROM following WHERE user_id=$2 AND target_id=$1),"
        " EXISTS (SELECT 1 FROM blocks WHERE user_id=$1 AND blocked_id=$2),"
        " EXISTS (SELECT 1 FROM blocks WHERE user_id=$2 AND blocked_id=$1),"
        " (SELECT id FROM friend_requests WHERE status='pending'"
        "  AND ((from_id=$1 AND to_id=$2) OR (from_id=$2 AND to_id=$1)) LIMIT 1)",
        user_id,
        other_id,
    )
    return RelationState(
        friend=r[0], following=r[1], followed_by=r[2], blocked=r[3], blocked_by=r[4], pending_request_id=r[5]
    )


async def presence_audience(conn: asyncpg.Connection, user_id: int) -> list[int]:
    return (await presence_audiences(conn, [user_id]))[user_id]


async def presence_audiences(conn: asyncpg.Connection, user_ids: list[int]) -> dict[int, list[int]]:
    audiences: dict[int, list[int]] = {user_id: [] for user_id in user_ids}
    rows = await conn.fetch(
        "SELECT f.user_id, f.friend_id FROM friends f LEFT JOIN privacy p ON p.user_id = f.user_id"
        " WHERE f.user_id = ANY ($1::bigint[]) AND COALESCE(p.presence, 'friends') <> 'nobody'"
        " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.user_id=f.user_id AND b.blocked_id=f.friend_id)"
        " OR (b.user_id=f.friend_id AND b.blocked_id=f.user_id)) ORDER BY f.user_id, f.friend_id",
        list(audiences),
    )
    for user_id, friend_id in rows:
        audiences[user_id].append(friend_id)
    return audiences


async def profile_audience(conn: asyncpg.Connection, user_id: int, max_group_members: int, limit: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT friend_id FROM friends WHERE user_id=$1"
        " UNION SELECT follower_id FROM followers WHERE user_id=$1"
        " UNION SELECT peer_id FROM user_conversations WHERE user_id=$1 AND peer_id IS NOT NULL"
        " UNION SELECT o.user_id FROM user_conversations me"
        " JOIN conversations c ON c.id = me.conv_id AND c.type = 'group' AND c.member_count <= $2"
        " JOIN user_conversations o ON o.conv_id = me.conv_id AND o.left_seq IS NULL"
        " WHERE me.user_id=$1 AND me.left_seq IS NULL LIMIT $3",
        user_id,
        max_group_members,
        limit + 1,
    )
    return [r[0] for r in rows if r[0] != user_id][:limit]


async def presence_visible(conn: asyncpg.Connection, viewer_id: int, user_ids: list[int]) -> set[int]:
    others = [u for u in user_ids if u != viewer_id]
    visible = {viewer_id} if viewer_id in user_ids else set()
    if others:
        rows = await conn.fetch(
            "SELECT f.user_id FROM friends f LEFT JOIN privacy p ON p.user_id = f.user_id"
            " WHERE f.user_id = ANY ($2) AND f.friend_id=$1 AND COALESCE(p.presence, 'friends') <> 'nobody'"
            " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.user_id=f.user_id AND b.blocked_id=$1)"
            " OR (b.user_id=$1 AND b.blocked_id=f.user_id))",
            viewer_id,
            others,
        )
        visible.update(r[0] for r in rows)
    return visible


class PgRelationStore(RelationJobs):
    def __init__(self, store: PgJobs) -> None:
        one_statement: frozenset[Callable[..., Awaitable[Any]]] = frozenset(
            {privacy, friend_requests, friends, edges, counts, relation, blocked_either_way, presence_visible}
        )
        super().__init__(sys.modules[__name__], PgRunner(store, one_statement))
