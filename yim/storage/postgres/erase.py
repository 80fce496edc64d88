"""PostgreSQL jobs of the erasure store (yim/storage/erase.py); mirrors
:mod:`yim.storage.sqlite.erase`.

Lock order (yim/storage/postgres/locks.py): erasing an account runs alone (it learns the
users it shares relations with only as it runs): it locks the account's row and those
users' rows in the global order (its prelude, as a friend request answered by id), then the
relation pairs, then writes the account's own rows (sessions, devices, inbox, marks: all
under the account's anchor) and the relation rows (under their pair locks). A due deletion
is claimed under the same prelude, its ``account_erasures`` row locked only after it and
re-checked then — of two nodes claiming it, the second finds it taken — and a login's
cancel deletes that row without any anchor (see :func:`claim_due`). Clearing one conversation's entries
anchors that conversation, which guards its messages, mention markers and quotes. Releasing
a shop runs alone and locks the shop's row first, as every customer-service job does, its
later waits bounded (locks.py, "Opaque jobs")."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from yim.storage.admin import AuditEntry
from yim.storage.erase import EraseJobs, ErasureWork, blank_profile_sql
from yim.storage.postgres.admin import _append, _revoke_all, account
from yim.storage.postgres.locks import Anchors, lock_anchors
from yim.storage.postgres.relations import _lock_pair
from yim.storage.postgres.runner import PgJobs
from yim.storage.postgres.service import _SESSION_COLS, Pending, _flush, _leave_conv, _lock_shop
from yim.storage.postgres.timeline import _recall_quotes, _unmention
from yim.storage.relations import InboxWrite
from yim.storage.rules import admin as admin_rules
from yim.storage.rules import erase as rules
from yim.storage.rules import service as service_rules
from yim.storage.service import ServiceSessionRec

_PARTNERS_SQL = (
    "SELECT friend_id FROM friends WHERE user_id=$1 UNION SELECT user_id FROM friends WHERE friend_id=$1"
    " UNION SELECT target_id FROM following WHERE user_id=$1 UNION SELECT user_id FROM following WHERE target_id=$1"
    " UNION SELECT follower_id FROM followers WHERE user_id=$1 UNION SELECT user_id FROM followers"
    " WHERE follower_id=$1 UNION SELECT blocked_id FROM blocks WHERE user_id=$1 UNION SELECT user_id FROM blocks"
    " WHERE blocked_id=$1 UNION SELECT to_id FROM friend_requests WHERE from_id=$1 UNION SELECT from_id"
    " FROM friend_requests WHERE to_id=$1"
)


async def _partners(conn: asyncpg.Connection, user_id: int) -> list[int]:
    return sorted({r[0] for r in await conn.fetch(_PARTNERS_SQL, user_id)} - {user_id})


async def _lock_account(conn: asyncpg.Connection, user_id: int) -> None:
    """The prelude of a job that runs alone: the account and its relations' users, then
    the pairs (re-read once the account is ours: no new relation can start without it)."""
    await lock_anchors(conn, [Anchors(users=(user_id, *await _partners(conn, user_id)))])
    for other in await _partners(conn, user_id):
        await _lock_pair(conn, user_id, other)


async def _erase_rows(conn: asyncpg.Connection, user_id: int, mode: str, now: int) -> ErasureWork:
    blank, values = blank_profile_sql(lambda i: f"${i}", 4)
    await conn.execute(
        f"UPDATE users SET {blank}, is_admin=false, disabled_at=coalesce(disabled_at, $2),"
        " erased_at=coalesce(erased_at, $3) WHERE id=$1",
        user_id,
        now,
        now,
        *values,
    )
    revoked = await _revoke_all(conn, user_id, now, None, None)
    for sql in (
        "DELETE FROM devices WHERE user_id=$1",
        "DELETE FROM pushers WHERE user_id=$1",
        "DELETE FROM push_prefs WHERE user_id=$1",
        "DELETE FROM push_mutes WHERE user_id=$1",
        "DELETE FROM push_group_cursors WHERE user_id=$1",
        "DELETE FROM hidden_messages WHERE user_id=$1",
        "DELETE FROM inbox WHERE user_id=$1",
        "DELETE FROM privacy WHERE user_id=$1",
        "DELETE FROM friends WHERE user_id=$1 OR friend_id=$1",
        "DELETE FROM following WHERE user_id=$1 OR target_id=$1",
        "DELETE FROM followers WHERE user_id=$1 OR follower_id=$1",
        "DELETE FROM blocks WHERE user_id=$1 OR blocked_id=$1",
        "DELETE FROM friend_requests WHERE from_id=$1 OR to_id=$1",
    ):
        await conn.execute(sql, user_id)
    groups = [
        (r[0], r[1])
        for r in await conn.fetch(
            "SELECT c.id, uc.role FROM user_conversations uc JOIN conversations c ON c.id=uc.conv_id"
            " WHERE uc.user_id=$1 AND uc.left_seq IS NULL AND c.type='group' AND NOT c.dissolved ORDER BY c.id",
            user_id,
        )
    ]
    convs = sorted(
        {r[0] for r in await conn.fetch("SELECT conv_id FROM user_conversations WHERE user_id=$1", user_id)}
        | {r[0] for r in await conn.fetch("SELECT DISTINCT conv_id FROM client_msg_ids WHERE sender_id=$1", user_id)}
    )
    await conn.execute(
        "INSERT INTO account_erasures (user_id, state, mode, requested_at, due_at, claimed_at)"
        " VALUES ($1, 'running', $2, $3, $3, $3) ON CONFLICT (user_id) DO UPDATE SET state='running',"
        " mode=excluded.mode, claimed_at=excluded.claimed_at, done_at=NULL",
        user_id,
        mode,
        now,
    )
    return ErasureWork(user_id=user_id, mode=mode, revoked=revoked, groups=groups, convs=convs)


async def erase_account(
    conn: asyncpg.Connection, actor_id: int | None, user_id: int, mode: str, now: int, a: AuditEntry
) -> ErasureWork:
    await _lock_account(conn, user_id)
    admin_rules.require_admin(actor_id, None if actor_id is None else await account(conn, actor_id))
    erased_at = await conn.fetchval("SELECT erased_at FROM users WHERE id=$1", user_id)
    rules.may_erase(actor_id, user_id, await account(conn, user_id), erased_at)
    work = await _erase_rows(conn, user_id, mode, now)
    await _append(conn, actor_id, a)
    return work


async def request_deletion(conn: asyncpg.Connection, user_id: int, mode: str, now: int, due_at: int) -> int:
    await conn.execute(
        "INSERT INTO account_erasures (user_id, state, mode, requested_at, due_at) VALUES ($1, 'pending', $2, $3, $4)"
        " ON CONFLICT (user_id) DO NOTHING",
        user_id,
        mode,
        now,
        due_at,
    )
    return int(await conn.fetchval("SELECT due_at FROM account_erasures WHERE user_id=$1", user_id))


async def cancel_deletion(conn: asyncpg.Connection, user_id: int) -> bool:
    status = await conn.execute("DELETE FROM account_erasures WHERE user_id=$1 AND state='pending'", user_id)
    return bool(status != "DELETE 0")


async def pending_deletion(conn: asyncpg.Connection, user_id: int) -> int | None:
    due: int | None = await conn.fetchval(
        "SELECT due_at FROM account_erasures WHERE user_id=$1 AND state='pending'", user_id
    )
    return due


_DUE = "((state='pending' AND due_at<=$1) OR (state='running' AND claimed_at<$2))"


async def claim_due(
    conn: asyncpg.Connection, now: int, stale_before: int, limit: int, a: AuditEntry
) -> list[ErasureWork]:
    due = [
        r[0]
        for r in await conn.fetch(
            f"SELECT user_id FROM account_erasures WHERE {_DUE} LIMIT $3", now, stale_before, limit
        )
    ]
    if not due:
        return []
    # The accounts' anchors first, then the pairs, and only then the erasure rows: a login's
    # cancel (no anchor) may hold one of those rows while its batch holds other users' rows,
    # so a claim that held the erasure rows while waiting for users could close a cycle.
    partners = {u: await _partners(conn, u) for u in due}
    await lock_anchors(conn, [Anchors(users=(u, *partners[u])) for u in due])
    for u in due:
        for other in await _partners(conn, u):
            await _lock_pair(conn, u, other)
    # Re-checked under the row lock: another node that claimed one first made it 'running'
    # with a fresh claimed_at, and a login since deleted a pending one — either way not ours.
    rows = await conn.fetch(
        f"SELECT user_id, mode, state FROM account_erasures WHERE user_id = ANY ($3) AND {_DUE}"
        " ORDER BY user_id FOR UPDATE",
        now,
        stale_before,
        due,
    )
    out = []
    for user_id, mode, state in rows:
        out.append(await _erase_rows(conn, user_id, mode, now))
        if state == "pending":  # the deletion itself; a retaken claim was recorded the first time
            await _append(conn, user_id, msgspec.structs.replace(a, target=f"user:{user_id}"))
    return out


async def reactions_by(conn: asyncpg.Connection, user_id: int, conv_id: int) -> list[tuple[int, str]]:
    sql = "SELECT seq, emoji FROM reactions WHERE conv_id=$1 AND user_id=$2 ORDER BY seq, emoji"
    return [(r[0], r[1]) for r in await conn.fetch(sql, conv_id, user_id)]


async def shops_owned(conn: asyncpg.Connection, user_id: int) -> list[int]:
    rows = await conn.fetch("SELECT id FROM shops WHERE owner_id=$1 AND closed_at IS NULL ORDER BY id", user_id)
    return [r[0] for r in rows]


async def release_shop(
    conn: asyncpg.Connection, user_id: int, shop_id: int, now: int
) -> tuple[int | None, list[InboxWrite]]:
    await _lock_shop(conn, shop_id)  # first, as every customer-service job; later waits are bounded
    row = await conn.fetchrow("SELECT owner_id, closed_at FROM shops WHERE id=$1", shop_id)
    if row is None or row[1] is not None:
        return None, []
    if row[0] != user_id:
        return row[0], []  # handed over by an earlier run of this step
    agents = await conn.fetch("SELECT user_id, role, added_at FROM shop_agents WHERE shop_id=$1", shop_id)
    heir = rules.shop_heir(user_id, [(a[0], a[1], a[2]) for a in agents])
    if heir is not None:
        await conn.execute("UPDATE shops SET owner_id=$1 WHERE id=$2", heir, shop_id)
        return heir, []
    pending: Pending = []
    for r in await conn.fetch(
        f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=$1 AND status!='closed' ORDER BY queued_at, id",
        shop_id,
    ):
        s = ServiceSessionRec(*r)
        await conn.execute(
            "UPDATE service_sessions SET status='closed', closed_at=$1, agent_id=NULL WHERE id=$2", now, s.id
        )
        pending += service_rules.closed(s, user_id)
        if s.agent_id is not None:
            await _leave_conv(conn, s.conv_id, s.agent_id)
    await conn.execute("DELETE FROM shop_agents WHERE shop_id=$1", shop_id)
    await conn.execute("UPDATE shops SET closed_at=$1 WHERE id=$2", now, shop_id)
    return None, await _flush(conn, pending, now)


async def erase_messages(conn: asyncpg.Connection, user_id: int, conv_id: int, mode: str) -> int:
    rows = await conn.fetch(
        "SELECT seq, kind, recalled, mentions, mention_all FROM messages WHERE conv_id=$1 AND sender_id=$2"
        " AND kind NOT IN ('system', $3) ORDER BY seq",
        conv_id,
        user_id,
        rules.REMOVED_KIND,
    )
    n = 0
    for seq, kind, recalled, mentions, mention_all in rows:
        if not rules.needs_erasing(kind, recalled, mode):
            continue
        # As a recall (timeline.recall); the search index is partial on NOT recalled.
        await conn.execute(
            "UPDATE messages SET kind=$3, recalled=true, uncounted=true, body='{}', sender_device='', mentions=NULL,"
            " mention_all=false WHERE conv_id=$1 AND seq=$2",
            conv_id,
            seq,
            rules.erased_kind(kind, mode),
        )
        if mentions or mention_all:
            await _unmention(conn, conv_id, seq, list(mentions or ()), mention_all)
        await _recall_quotes(conn, conv_id, seq)
        await conn.execute("DELETE FROM message_versions WHERE conv_id=$1 AND seq=$2", conv_id, seq)
        n += 1
    return n


async def erase_media(conn: asyncpg.Connection, user_id: int) -> list[str]:
    gone = await conn.fetch(
        "DELETE FROM media WHERE uploader_id=$1 AND NOT EXISTS (SELECT 1 FROM media_refs r WHERE r.media_id=media.id)"
        " RETURNING sha256",
        user_id,
    )
    keys: list[str] = []
    for sha in sorted({r[0] for r in gone}):
        if await conn.fetchval("SELECT 1 FROM media WHERE sha256=$1 LIMIT 1", sha):
            continue  # the same bytes are someone else's upload too
        thumb = await conn.fetchrow("DELETE FROM media_blobs WHERE sha256=$1 RETURNING thumb_sha256", sha)
        if thumb is not None:
            keys += [sha, *([thumb[0]] if thumb[0] else [])]
    return keys


async def finish(conn: asyncpg.Connection, user_id: int, now: int) -> None:
    await conn.execute("UPDATE account_erasures SET state='done', done_at=$2 WHERE user_id=$1", user_id, now)


class _EraseRunner:
    def __init__(self, store: PgJobs) -> None:
        self._s = store

    def write(
        self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None, convs: tuple[int, ...]
    ) -> Awaitable[Any]:
        return self._s.write(fn, *args, anchors=None if users is None else Anchors(users=users, convs=convs))

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read1(fn, *args)


class PgEraseStore(EraseJobs):
    def __init__(self, store: PgJobs) -> None:
        super().__init__(sys.modules[__name__], _EraseRunner(store))
