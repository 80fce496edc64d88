"""Relation checks used on the message path: blocks and who may message whom.

Kept apart from the relation jobs so the timeline module can use them without a cycle.
Each check is one primary-key lookup — and is skipped when the writer's memory
(:class:`~yim.storage.sqlite.memory.WriterMemory`) proves it would find nothing, which is the common case: most
users block nobody and accept messages from anyone.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from yim.storage.rules.send import check_direct_allowed as check_direct_allowed_rule
from yim.storage.sqlite.memory import writer_memory


def _exists(conn: sqlite3.Connection, sql: str, *args: Any) -> bool:
    return conn.execute(sql, args).fetchone() is not None


def is_blocked(conn: sqlite3.Connection, user_id: int, by_id: int) -> bool:
    return _exists(conn, "SELECT 1 FROM blocks WHERE user_id=? AND blocked_id=?", by_id, user_id)


def blocked_either_way(conn: sqlite3.Connection, a: int, b: int) -> bool:
    """Does a block b, or b block a? (skipped, like the checks below, when the writer's
    memory proves neither blocks anyone)"""
    memory = writer_memory(conn)
    return ((memory is None or b in memory.blockers) and is_blocked(conn, a, by_id=b)) or (
        (memory is None or a in memory.blockers) and is_blocked(conn, b, by_id=a)
    )


def are_friends(conn: sqlite3.Connection, a: int, b: int) -> bool:
    return _exists(conn, "SELECT 1 FROM friends WHERE user_id=? AND friend_id=?", a, b)


def check_direct_allowed(conn: sqlite3.Connection, sender_id: int, to_id: int) -> None:
    """May sender message to_id directly? (blocks, then the recipient's dm_policy)."""
    memory = writer_memory(conn)
    blocked_by = (memory is None or to_id in memory.blockers) and is_blocked(conn, sender_id, by_id=to_id)
    blocking = (memory is None or sender_id in memory.blockers) and is_blocked(conn, to_id, by_id=sender_id)
    friends_only = False
    if not (blocked_by or blocking) and (memory is None or to_id in memory.friends_only):
        policy = conn.execute("SELECT dm_policy FROM privacy WHERE user_id=?", (to_id,)).fetchone()
        friends_only = policy is not None and policy[0] == "friends" and not are_friends(conn, to_id, sender_id)
    check_direct_allowed_rule(blocked_by, blocking, friends_only)
