"""PostgreSQL jobs of the relation chain; mirrors :mod:`yim.storage.sqlite_relations`.

Concurrency: SQLite runs one write at a time; here several nodes write at once, so every
write about a pair of users first takes a transaction-scoped advisory lock on that
(unordered) pair. Two crossing friend requests, or a block racing a follow, then apply
one after the other exactly as they would on one node.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from yim.protocol.errors import YimError
from yim.storage.postgres_locks import Anchors, lock_anchors
from yim.storage.postgres_timeline import append_inbox_events
from yim.storage.relations import (
    EdgeRec,
    FriendRec,
    FriendRequestRec,
    InboxWrite,
    PrivacyRec,
    RelationCounts,
    RelationState,
    RelationStore,
)

_REQ_COLS = "id, from_id, to_id, message, status, created_at, updated_at"
_tags = msgspec.json.Decoder(list[str])
_enc = msgspec.json.Encoder()


def _event(event: str, other_id: int, request: FriendRequestRec | None = None) -> bytes:
    payload: dict[str, Any] = {"event": event, "user_id": str(other_id)}
    if request is not None:
        payload["request_id"] = str(request.id)
        payload["message"] = request.message
    return _enc.encode(payload)


async def _lock_pair(conn: asyncpg.Connection, a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"pair:{lo}:{hi}")


async def _exists(conn: asyncpg.Connection, sql: str, *args: Any) -> bool:
    return await conn.fetchval(sql, *args) is not None


async def is_blocked(conn: asyncpg.Connection, user_id: int, by_id: int) -> bool:
    return await _exists(conn, "SELECT 1 FROM blocks WHERE user_id=$1 AND blocked_id=$2", by_id, user_id)


async def are_friends(conn: asyncpg.Connection, a: int, b: int) -> bool:
    return await _exists(conn, "SELECT 1 FROM friends WHERE user_id=$1 AND friend_id=$2", a, b)


async def _user_exists(conn: asyncpg.Connection, user_id: int) -> None:
    if not await _exists(conn, "SELECT 1 FROM users WHERE id=$1", user_id):
        raise YimError("not_found", f"no user {user_id}")


async def _request(conn: asyncpg.Connection, request_id: int) -> FriendRequestRec:
    r = await conn.fetchrow(f"SELECT {_REQ_COLS} FROM friend_requests WHERE id=$1", request_id)
    if r is None:
        raise YimError("not_found", f"no friend request {request_id}")
    return FriendRequestRec(*r)


async def _befriend(conn: asyncpg.Connection, a: int, b: int, now: int) -> None:
    await conn.execute(
        "INSERT INTO friends (user_id, friend_id, created_at) VALUES ($1,$2,$3), ($2,$1,$3) ON CONFLICT DO NOTHING",
        a,
        b,
        now,
    )


async def _set_status(conn: asyncpg.Connection, req: FriendRequestRec, status: str, now: int) -> FriendRequestRec:
    await conn.execute("UPDATE friend_requests SET status=$2, updated_at=$3 WHERE id=$1", req.id, status, now)
    return msgspec.structs.replace(req, status=status, updated_at=now)


async def friend_request(
    conn: asyncpg.Connection, request_id: int, from_id: int, to_id: int, message: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    if from_id == to_id:
        raise YimError("bad_request", "you cannot befriend yourself")
    await _user_exists(conn, to_id)
    await _lock_pair(conn, from_id, to_id)
    if await is_blocked(conn, from_id, by_id=to_id):
        raise YimError("blocked", "this user does not accept friend requests from you")
    if await is_blocked(conn, to_id, by_id=from_id):
        raise YimError("blocked", "you blocked this user; unblock them first")
    if await are_friends(conn, from_id, to_id):
        raise YimError("already_friends", "you are already friends")
    pending = await conn.fetchrow(
        f"SELECT {_REQ_COLS} FROM friend_requests WHERE status='pending' AND"
        " ((from_id=$1 AND to_id=$2) OR (from_id=$2 AND to_id=$1))",
        from_id,
        to_id,
    )
    if pending is not None:
        req = FriendRequestRec(*pending)
        if req.from_id == from_id:
            return req, []  # a repeated request is the same request
        # They already asked me: asking back is accepting.
        req = await _set_status(conn, req, "accepted", now)
        await _befriend(conn, from_id, to_id, now)
        events = [
            (to_id, from_id, _event("friend_added", from_id, req)),
            (from_id, to_id, _event("friend_added", to_id, req)),
        ]
        return req, await append_inbox_events(conn, "relation", events, now)
    req = FriendRequestRec(
        id=request_id, from_id=from_id, to_id=to_id, message=message, status="pending", created_at=now, updated_at=now
    )
    await conn.execute(
        f"INSERT INTO friend_requests ({_REQ_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        req.id,
        req.from_id,
        req.to_id,
        req.message,
        req.status,
        req.created_at,
        req.updated_at,
    )
    events = [
        (to_id, from_id, _event("friend_request", from_id, req)),
        (from_id, to_id, _event("friend_request_sent", to_id, req)),
    ]
    return req, await append_inbox_events(conn, "relation", events, now)


async def friend_respond(
    conn: asyncpg.Connection, request_id: int, actor_id: int, action: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    req = await _request(conn, request_id)
    if actor_id not in (req.from_id, req.to_id):
        raise YimError("not_found", f"no friend request {request_id}")
    # Submitted without anchors (the users are known only now), so it runs alone and takes
    # its prelude here, before any other lock: the pair's users, then the pair.
    await lock_anchors(conn, [Anchors(users=(req.from_id, req.to_id))])
    await _lock_pair(conn, req.from_id, req.to_id)
    req = await _request(conn, request_id)  # as it is now that the pair is ours
    if req.status != "pending":
        raise YimError("bad_request", f"the request is already {req.status}")
    if action == "cancel":
        if actor_id != req.from_id:
            raise YimError("forbidden", "only the sender can cancel a friend request")
        req = await _set_status(conn, req, "canceled", now)
        events = [
            (req.to_id, req.from_id, _event("friend_request_canceled", req.from_id, req)),
            (req.from_id, req.to_id, _event("friend_request_canceled", req.to_id, req)),
        ]
    else:
        if actor_id != req.to_id:
            raise YimError("forbidden", "only the recipient can accept or reject a friend request")
        if action == "accept":
            if await is_blocked(conn, req.to_id, by_id=req.from_id) or await is_blocked(
                conn, req.from_id, by_id=req.to_id
            ):
                raise YimError("blocked", "one of you blocked the other")
            req = await _set_status(conn, req, "accepted", now)
            await _befriend(conn, req.from_id, req.to_id, now)
            name = "friend_added"
        else:
            req = await _set_status(conn, req, "rejected", now)
            name = "friend_request_rejected"
        events = [
            (req.from_id, req.to_id, _event(name, req.to_id, req)),
            (req.to_id, req.from_id, _event(name, req.from_id, req)),
        ]
    return req, await append_inbox_events(conn, "relation", events, now)


async def _unfriend(conn: asyncpg.Connection, a: int, b: int) -> bool:
    status = await conn.execute(
        "DELETE FROM friends WHERE (user_id=$1 AND friend_id=$2) OR (user_id=$2 AND friend_id=$1)", a, b
    )
    return status != "DELETE 0"


async def friend_delete(conn: asyncpg.Connection, actor_id: int, other_id: int, now: int) -> list[InboxWrite]:
    await _lock_pair(conn, actor_id, other_id)
    if not await _unfriend(conn, actor_id, other_id):
        raise YimError("not_found", "you are not friends")
    events = [
        (other_id, actor_id, _event("friend_removed", actor_id)),
        (actor_id, other_id, _event("friend_removed", other_id)),
    ]
    return await append_inbox_events(conn, "relation", events, now)


async def friend_update(
    conn: asyncpg.Connection, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
) -> FriendRec:
    row = await conn.fetchrow(
        "SELECT remark, tags, created_at FROM friends WHERE user_id=$1 AND friend_id=$2 FOR UPDATE", actor_id, other_id
    )
    if row is None:
        raise YimError("not_found", "you are not friends")
    new_remark = row[0] if remark is None else remark
    new_tags = _tags.decode(row[1]) if tags is None else tags
    await conn.execute(
        "UPDATE friends SET remark=$3, tags=$4 WHERE user_id=$1 AND friend_id=$2",
        actor_id,
        other_id,
        new_remark,
        _enc.encode(new_tags).decode(),
    )
    return FriendRec(friend_id=other_id, remark=new_remark, tags=new_tags, created_at=row[2])


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
    if actor_id == target_id:
        raise YimError("bad_request", "you cannot follow yourself")
    await _user_exists(conn, target_id)
    await _lock_pair(conn, actor_id, target_id)
    if on and (await is_blocked(conn, actor_id, by_id=target_id) or await is_blocked(conn, target_id, by_id=actor_id)):
        raise YimError("blocked", "one of you blocked the other")
    if not await _set_follow(conn, actor_id, target_id, on, now):
        return []  # already in that state: nothing happened, nobody is told
    events = [
        (target_id, actor_id, _event("follower_added" if on else "follower_removed", actor_id)),
        (actor_id, target_id, _event("following_added" if on else "following_removed", target_id)),
    ]
    return await append_inbox_events(conn, "relation", events, now)


async def block(conn: asyncpg.Connection, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
    if actor_id == target_id:
        raise YimError("bad_request", "you cannot block yourself")
    await _user_exists(conn, target_id)
    await _lock_pair(conn, actor_id, target_id)
    events: list[tuple[int, int, bytes]] = []
    if on:
        status = await conn.execute(
            "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            actor_id,
            target_id,
            now,
        )
        if status == "INSERT 0 0":
            return []
        events.append((actor_id, target_id, _event("blocked", target_id)))
        if await _unfriend(conn, actor_id, target_id):
            # The blocked user is not told of the block, but their friend list changed.
            events.append((target_id, actor_id, _event("friend_removed", actor_id)))
            events.append((actor_id, target_id, _event("friend_removed", target_id)))
        await conn.execute(
            "UPDATE friend_requests SET status='canceled', updated_at=$1 WHERE status='pending' AND"
            " ((from_id=$2 AND to_id=$3) OR (from_id=$3 AND to_id=$2))",
            now,
            actor_id,
            target_id,
        )
        for a, b in ((actor_id, target_id), (target_id, actor_id)):
            if await _set_follow(conn, a, b, False, now):
                events.append((b, a, _event("follower_removed", a)))
                events.append((a, b, _event("following_removed", b)))
    else:
        status = await conn.execute("DELETE FROM blocks WHERE user_id=$1 AND blocked_id=$2", actor_id, target_id)
        if status == "DELETE 0":
            return []
        events.append((actor_id, target_id, _event("unblocked", target_id)))
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
        f"SELECT {_REQ_COLS} FROM friend_requests WHERE {col}=$1 AND status='pending' AND id<$2"
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
    return [FriendRec(friend_id=r[0], remark=r[1], tags=_tags.decode(r[2]), created_at=r[3]) for r in rows]


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


class PgRelationStore(RelationStore):
    def __init__(self, store: Any) -> None:
        self._s = store

    async def friend_request(
        self, request_id: int, from_id: int, to_id: int, message: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        return await self._s.write(
            friend_request, request_id, from_id, to_id, message, now, anchors=Anchors(users=(from_id, to_id))
        )

    async def friend_respond(
        self, request_id: int, actor_id: int, action: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        return await self._s.write(
            friend_respond, request_id, actor_id, action, now, anchors=None
        )  # users known only inside

    async def friend_delete(self, actor_id: int, other_id: int, now: int) -> list[InboxWrite]:
        return await self._s.write(friend_delete, actor_id, other_id, now, anchors=Anchors(users=(actor_id, other_id)))

    async def friend_update(
        self, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
    ) -> FriendRec:
        return await self._s.write(friend_update, actor_id, other_id, remark, tags, anchors=Anchors(users=(actor_id,)))

    async def follow(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
        return await self._s.write(follow, actor_id, target_id, on, now, anchors=Anchors(users=(actor_id, target_id)))

    async def block(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
        return await self._s.write(block, actor_id, target_id, on, now, anchors=Anchors(users=(actor_id, target_id)))

    async def set_privacy(self, user_id: int, dm_policy: str | None, presence: str | None) -> PrivacyRec:
        return await self._s.write(set_privacy, user_id, dm_policy, presence, anchors=Anchors(users=(user_id,)))

    async def privacy(self, user_id: int) -> PrivacyRec:
        return await self._s.read1(privacy, user_id)

    async def friend_requests(
        self, user_id: int, incoming: bool, before: int | None, limit: int
    ) -> list[FriendRequestRec]:
        return await self._s.read1(friend_requests, user_id, incoming, before, limit)

    async def friends(self, user_id: int, after: int, limit: int) -> list[FriendRec]:
        return await self._s.read1(friends, user_id, after, limit)

    async def edges(self, user_id: int, kind: str, after: int, limit: int) -> list[EdgeRec]:
        return await self._s.read1(edges, user_id, kind, after, limit)

    async def counts(self, user_id: int) -> RelationCounts:
        return await self._s.read1(counts, user_id)

    async def relation(self, user_id: int, other_id: int) -> RelationState:
        return await self._s.read1(relation, user_id, other_id)

    async def blocked_either_way(self, user_id: int, others: list[int]) -> set[int]:
        return await self._s.read1(blocked_either_way, user_id, others)

    async def presence_audience(self, user_id: int) -> list[int]:
        return await self._s.read(presence_audience, user_id)

    async def presence_audiences(self, user_ids: list[int]) -> dict[int, list[int]]:
        return await self._s.read(presence_audiences, user_ids)

    async def presence_visible(self, viewer_id: int, user_ids: list[int]) -> set[int]:
        return await self._s.read1(presence_visible, viewer_id, user_ids)
