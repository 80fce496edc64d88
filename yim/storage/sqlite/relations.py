"""SQLite jobs of the relation chain (see :mod:`yim.storage.relations`)."""

from __future__ import annotations

import sqlite3
import sys

from yim.storage.adapters import RelationJobs
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
from yim.storage.sqlite.memory import writer_memory
from yim.storage.sqlite.policy import _exists, are_friends, is_blocked
from yim.storage.sqlite.policy import blocked_either_way as _blocked_pair
from yim.storage.sqlite.runner import SqliteJobs, SqliteRunner
from yim.storage.sqlite.timeline import append_inbox_events


def _user_exists(conn: sqlite3.Connection, user_id: int) -> None:
    rules.require_user(_exists(conn, "SELECT 1 FROM users WHERE id=?", user_id), user_id)


def _befriend(conn: sqlite3.Connection, a: int, b: int, now: int) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?,?,?)", [(a, b, now), (b, a, now)]
    )


def _save(conn: sqlite3.Connection, req: FriendRequestRec) -> FriendRequestRec:
    conn.execute("UPDATE friend_requests SET status=?, updated_at=? WHERE id=?", (req.status, req.updated_at, req.id))
    if req.status == "accepted":
        _befriend(conn, req.from_id, req.to_id, req.updated_at)
    return req


def friend_request(
    conn: sqlite3.Connection, request_id: int, from_id: int, to_id: int, message: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    rules.check_not_self(from_id, to_id, "befriend")
    _user_exists(conn, to_id)
    rules.check_request(
        is_blocked(conn, from_id, by_id=to_id),
        is_blocked(conn, to_id, by_id=from_id),
        are_friends(conn, from_id, to_id),
    )
    pending = conn.execute(
        f"SELECT {REQUEST_COLS} FROM friend_requests WHERE status='pending' AND"
        " ((from_id=? AND to_id=?) OR (from_id=? AND to_id=?))",
        (from_id, to_id, to_id, from_id),
    ).fetchone()
    if pending is not None:
        crossing = rules.crossing_request(FriendRequestRec(*pending), from_id, now)
        if crossing is None:
            return FriendRequestRec(*pending), []
        req, events = crossing
        _save(conn, req)
        return req, append_inbox_events(conn, "relation", events, now)
    req, events = rules.new_request(request_id, from_id, to_id, message, now)
    conn.execute(
        f"INSERT INTO friend_requests ({REQUEST_COLS}) VALUES (?,?,?,?,?,?,?)",
        (req.id, req.from_id, req.to_id, req.message, req.status, req.created_at, req.updated_at),
    )
    return req, append_inbox_events(conn, "relation", events, now)


def friend_respond(
    conn: sqlite3.Connection, request_id: int, actor_id: int, action: str, now: int
) -> tuple[FriendRequestRec, list[InboxWrite]]:
    r = conn.execute(f"SELECT {REQUEST_COLS} FROM friend_requests WHERE id=?", (request_id,)).fetchone()
    req = rules.visible_request(FriendRequestRec(*r) if r else None, request_id, actor_id)
    blocked = action == "accept" and _blocked_pair(conn, req.from_id, req.to_id)
    req, events = rules.respond(req, actor_id, action, now, blocked)
    _save(conn, req)
    return req, append_inbox_events(conn, "relation", events, now)


def _unfriend(conn: sqlite3.Connection, a: int, b: int) -> bool:
    cur = conn.execute(
        "DELETE FROM friends WHERE (user_id=? AND friend_id=?) OR (user_id=? AND friend_id=?)", (a, b, b, a)
    )
    return cur.rowcount > 0


def friend_delete(conn: sqlite3.Connection, actor_id: int, other_id: int, now: int) -> list[InboxWrite]:
    rules.require_friends(_unfriend(conn, actor_id, other_id))
    return append_inbox_events(conn, "relation", rules.both(actor_id, other_id, "friend_removed"), now)


def friend_update(
    conn: sqlite3.Connection, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
) -> FriendRec:
    row = conn.execute(
        "SELECT remark, tags, created_at FROM friends WHERE user_id=? AND friend_id=?", (actor_id, other_id)
    ).fetchone()
    friend = rules.updated_friend(row, other_id, remark, tags)
    conn.execute(
        "UPDATE friends SET remark=?, tags=? WHERE user_id=? AND friend_id=?",
        (friend.remark, rules.tags_json(friend.tags), actor_id, other_id),
    )
    return friend


def _set_follow(conn: sqlite3.Connection, actor_id: int, target_id: int, on: bool, now: int) -> bool:
    if on:
        cur = conn.execute(
            "INSERT OR IGNORE INTO following (user_id, target_id, created_at) VALUES (?,?,?)",
            (actor_id, target_id, now),
        )
        conn.execute(
            "INSERT OR IGNORE INTO followers (user_id, follower_id, created_at) VALUES (?,?,?)",
            (target_id, actor_id, now),
        )
    else:
        cur = conn.execute("DELETE FROM following WHERE user_id=? AND target_id=?", (actor_id, target_id))
        conn.execute("DELETE FROM followers WHERE user_id=? AND follower_id=?", (target_id, actor_id))
    return cur.rowcount > 0


def follow(conn: sqlite3.Connection, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
    rules.check_not_self(actor_id, target_id, "follow")
    _user_exists(conn, target_id)
    rules.check_follow(on, on and _blocked_pair(conn, actor_id, target_id))
    events = rules.follow_events(actor_id, target_id, on, _set_follow(conn, actor_id, target_id, on, now))
    return append_inbox_events(conn, "relation", events, now)


def block(conn: sqlite3.Connection, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
    rules.check_not_self(actor_id, target_id, "block")
    _user_exists(conn, target_id)
    if on:
        memory = writer_memory(conn)
        if memory is not None:
            memory.blockers.add(actor_id)  # before the row exists: the set stays a superset
        cur = conn.execute(
            "INSERT OR IGNORE INTO blocks (user_id, blocked_id, created_at) VALUES (?,?,?)", (actor_id, target_id, now)
        )
        if cur.rowcount == 0:
            return []
        unfriended = _unfriend(conn, actor_id, target_id)
        conn.execute(
            "UPDATE friend_requests SET status='canceled', updated_at=? WHERE status='pending' AND"
            " ((from_id=? AND to_id=?) OR (from_id=? AND to_id=?))",
            (now, actor_id, target_id, target_id, actor_id),
        )
        pairs = ((actor_id, target_id), (target_id, actor_id))
        unfollowed = tuple((a, b) for a, b in pairs if _set_follow(conn, a, b, False, now))
        events = rules.block_events(actor_id, target_id, unfriended=unfriended, unfollowed=unfollowed)
    else:
        cur = conn.execute("DELETE FROM blocks WHERE user_id=? AND blocked_id=?", (actor_id, target_id))
        if cur.rowcount == 0:
            return []
        events = rules.unblock_events(actor_id, target_id)
    return append_inbox_events(conn, "relation", events, now)


def privacy(conn: sqlite3.Connection, user_id: int) -> PrivacyRec:
    r = conn.execute("SELECT dm_policy, presence FROM privacy WHERE user_id=?", (user_id,)).fetchone()
    return PrivacyRec(*r) if r else PrivacyRec()


def set_privacy(conn: sqlite3.Connection, user_id: int, dm_policy: str | None, presence: str | None) -> PrivacyRec:
    current = privacy(conn, user_id)
    new = PrivacyRec(dm_policy=dm_policy or current.dm_policy, presence=presence or current.presence)
    memory = writer_memory(conn)
    if memory is not None and new.dm_policy == "friends":
        memory.friends_only.add(user_id)  # before the row changes: the set stays a superset
    conn.execute(
        "INSERT INTO privacy (user_id, dm_policy, presence) VALUES (?,?,?) ON CONFLICT (user_id)"
        " DO UPDATE SET dm_policy=excluded.dm_policy, presence=excluded.presence",
        (user_id, new.dm_policy, new.presence),
    )
    return new


def friend_requests(
    conn: sqlite3.Connection, user_id: int, incoming: bool, before: int | None, limit: int
) -> list[FriendRequestRec]:
    col = "to_id" if incoming else "from_id"
    return [
        FriendRequestRec(*r)
        for r in conn.execute(
            f"SELECT {REQUEST_COLS} FROM friend_requests WHERE {col}=? AND status='pending' AND id<?"
            " ORDER BY id DESC LIMIT ?",
            (user_id, before if before is not None else 2**63 - 1, limit),
        )
    ]


def friends(conn: sqlite3.Connection, user_id: int, after: int, limit: int) -> list[FriendRec]:
    return [
        rules.friend(r)
        for r in conn.execute(
            "SELECT friend_id, remark, tags, created_at FROM friends WHERE user_id=? AND friend_id>?"
            " ORDER BY friend_id LIMIT ?",
            (user_id, after, limit),
        )
    ]


_EDGES = {
    "followers": ("followers", "follower_id"),
    "following": ("following", "target_id"),
    "blocks": ("blocks", "blocked_id"),
}


def edges(conn: sqlite3.Connection, user_id: int, kind: str, after: int, limit: int) -> list[EdgeRec]:
    table, col = _EDGES[kind]
    return [
        EdgeRec(*r)
        for r in conn.execute(
            f"SELECT {col}, created_at FROM {table} WHERE user_id=? AND {col}>? ORDER BY {col} LIMIT ?",
            (user_id, after, limit),
        )
    ]


def counts(conn: sqlite3.Connection, user_id: int) -> RelationCounts:
    def n(table: str) -> int:
        return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id=?", (user_id,)).fetchone()[0]

    return RelationCounts(friends=n("friends"), followers=n("followers"), following=n("following"))


def blocked_either_way(conn: sqlite3.Connection, user_id: int, others: list[int]) -> set[int]:
    found: set[int] = set()
    for i in range(0, len(others), 500):
        chunk = others[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT blocked_id FROM blocks WHERE user_id=? AND blocked_id IN ({marks})"
                f" UNION SELECT user_id FROM blocks WHERE blocked_id=? AND user_id IN ({marks})",
                (user_id, *chunk, user_id, *chunk),
            )
        )
    return found


def relation(conn: sqlite3.Connection, user_id: int, other_id: int) -> RelationState:
    pending = conn.execute(
        "SELECT id FROM friend_requests WHERE status='pending'"
        " AND ((from_id=? AND to_id=?) OR (from_id=? AND to_id=?))",
        (user_id, other_id, other_id, user_id),
    ).fetchone()
    return RelationState(
        friend=are_friends(conn, user_id, other_id),
        following=_exists(conn, "SELECT 1 FROM following WHERE user_id=? AND target_id=?", user_id, other_id),
        followed_by=_exists(conn, "SELECT 1 FROM following WHERE user_id=? AND target_id=?", other_id, user_id),
        blocked=is_blocked(conn, other_id, by_id=user_id),
        blocked_by=is_blocked(conn, user_id, by_id=other_id),
        pending_request_id=pending[0] if pending else None,
    )


def presence_audience(conn: sqlite3.Connection, user_id: int) -> list[int]:
    return presence_audiences(conn, [user_id])[user_id]


def presence_audiences(conn: sqlite3.Connection, user_ids: list[int]) -> dict[int, list[int]]:
    audiences: dict[int, list[int]] = {user_id: [] for user_id in user_ids}
    ids = list(audiences)
    for i in range(0, len(ids), 500):  # a bounded statement however big the burst
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for user_id, friend_id in conn.execute(
            "SELECT f.user_id, f.friend_id FROM friends f LEFT JOIN privacy p ON p.user_id = f.user_id"
            f" WHERE f.user_id IN ({marks}) AND COALESCE(p.presence, 'friends') <> 'nobody'"
            " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.user_id=f.user_id AND b.blocked_id=f.friend_id)"
            " OR (b.user_id=f.friend_id AND b.blocked_id=f.user_id)) ORDER BY f.user_id, f.friend_id",
            chunk,
        ):
            audiences[user_id].append(friend_id)
    return audiences


def profile_audience(conn: sqlite3.Connection, user_id: int, max_group_members: int, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT friend_id FROM friends WHERE user_id=?1"
        " UNION SELECT follower_id FROM followers WHERE user_id=?1"
        " UNION SELECT peer_id FROM user_conversations WHERE user_id=?1 AND peer_id IS NOT NULL"
        " UNION SELECT o.user_id FROM user_conversations me"
        " JOIN conversations c ON c.id = me.conv_id AND c.type = 'group' AND c.member_count <= ?2"
        " JOIN user_conversations o ON o.conv_id = me.conv_id AND o.left_seq IS NULL"
        " WHERE me.user_id=?1 AND me.left_seq IS NULL LIMIT ?3",
        (user_id, max_group_members, limit + 1),
    )
    return [r[0] for r in rows if r[0] != user_id][:limit]


def presence_visible(conn: sqlite3.Connection, viewer_id: int, user_ids: list[int]) -> set[int]:
    visible = set()
    for uid in user_ids:
        if uid == viewer_id:
            visible.add(uid)
        elif (
            privacy(conn, uid).presence != "nobody"
            and are_friends(conn, uid, viewer_id)
            and not is_blocked(conn, viewer_id, by_id=uid)
            and not is_blocked(conn, uid, by_id=viewer_id)
        ):
            visible.add(uid)
    return visible


class SqliteRelationStore(RelationJobs):
    def __init__(self, store: SqliteJobs) -> None:
        super().__init__(sys.modules[__name__], SqliteRunner(store))
