"""PostgreSQL jobs of the admin store (yim/storage/admin.py): SQL only, the rules are shared.

Lock order (yim/storage/postgres/locks.py): a job that changes a user's flags, password or
sessions anchors that user's row, which guards the user's session rows (as logins and
device revocations do), so a login racing a disable waits for it and then sees the flag.
The audit row is a new row of its own: no one ever waits for it."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from yim.storage.adapters import AdminJobs
from yim.storage.admin import (
    ACCOUNT_COLUMNS,
    AUDIT_COLUMNS,
    AccountRec,
    AuditEntry,
    AuditRec,
    UserFacts,
    account_from_row,
    audit_from_row,
    id_of,
    like_pattern,
)
from yim.storage.postgres import service as shops
from yim.storage.postgres.groups import load_group
from yim.storage.postgres.locks import Anchors
from yim.storage.postgres.runner import PgJobs, PgRunner
from yim.storage.postgres.timeline import append_entry
from yim.storage.records import GROUP_COLS, GroupChange, GroupRec, group_rec
from yim.storage.relations import InboxWrite
from yim.storage.rules import admin as rules
from yim.storage.rules import groups as group_rules
from yim.storage.service import AgentRec, ServiceCtx, ShopRec


async def account(conn: asyncpg.Connection, user_id: int) -> AccountRec | None:
    r = await conn.fetchrow(f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id=$1", user_id)
    return account_from_row(r) if r else None


async def _admin(conn: asyncpg.Connection, actor_id: int | None) -> None:
    rules.require_admin(actor_id, None if actor_id is None else await account(conn, actor_id))


async def _target(conn: asyncpg.Connection, actor_id: int | None, user_id: int) -> AccountRec:
    await _admin(conn, actor_id)
    return rules.target_account(user_id, await account(conn, user_id))


async def _append(conn: asyncpg.Connection, actor_id: int | None, a: AuditEntry) -> None:
    await conn.execute(
        "INSERT INTO audit_log (at, actor_id, action, target, detail, source) VALUES ($1,$2,$3,$4,$5,$6)",
        a.at,
        actor_id,
        a.action,
        a.target,
        a.detail.decode(),
        a.source,
    )


async def _revoke_all(
    conn: asyncpg.Connection, user_id: int, now: int, device_id: str | None, keep: str | None
) -> list[str]:
    rows = await conn.fetch(
        "UPDATE sessions SET revoked_at=$2 WHERE user_id=$1 AND revoked_at IS NULL"
        " AND ($3::text IS NULL OR device_id=$3) AND ($4::text IS NULL OR id<>$4) RETURNING id",
        user_id,
        now,
        device_id,
        keep,
    )
    return sorted(r[0] for r in rows)


async def find_users(
    conn: asyncpg.Connection, actor_id: int | None, query: str, after: int, limit: int
) -> list[AccountRec]:
    await _admin(conn, actor_id)
    if not query:
        rows = await conn.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id>$1 AND erased_at IS NULL ORDER BY id LIMIT $2", after, limit
        )
    else:
        pattern = like_pattern(query)
        rows = await conn.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id>$1 AND erased_at IS NULL"
            " AND (id=$2 OR username ILIKE $3 OR display_name ILIKE $3) ORDER BY id LIMIT $4",
            after,
            id_of(query),
            pattern,
            limit,
        )
    return [account_from_row(r) for r in rows]


async def user_facts(conn: asyncpg.Connection, actor_id: int | None, user_id: int) -> tuple[AccountRec, UserFacts]:
    account = await _target(conn, actor_id, user_id)
    rows = await conn.fetch(
        "SELECT c.id, c.name, uc.role FROM user_conversations uc JOIN conversations c ON c.id=uc.conv_id"
        " WHERE uc.user_id=$1 AND uc.left_seq IS NULL AND c.type='group' ORDER BY c.id",
        user_id,
    )
    # Every entry claims its (sender, client_msg_id) key, and messages have no index by
    # sender: counted on the keys' primary key, the server's own entries (system:, recall:)
    # left out, as kind NOT IN ('system', 'recall') does on SQLite's messages index.
    count = await conn.fetchval(
        "SELECT count(*) FROM client_msg_ids WHERE sender_id=$1"
        " AND client_msg_id NOT LIKE 'system:%' AND client_msg_id NOT LIKE 'recall:%'",
        user_id,
    )
    return account, UserFacts(groups=[(r[0], r[1], r[2]) for r in rows], message_count=count)


async def audit(conn: asyncpg.Connection, actor_id: int | None, before: int | None, limit: int) -> list[AuditRec]:
    await _admin(conn, actor_id)
    rows = await conn.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id<$1 ORDER BY id DESC LIMIT $2",
        before if before is not None else 2**63 - 1,
        limit,
    )
    return [audit_from_row(r) for r in rows]


async def set_disabled(
    conn: asyncpg.Connection, actor_id: int | None, user_id: int, disabled: bool, a: AuditEntry
) -> tuple[AccountRec, list[str]]:
    target = await _target(conn, actor_id, user_id)
    revoked: list[str] = []
    if disabled:
        rules.may_disable(actor_id, target)
        await conn.execute("UPDATE users SET disabled_at=coalesce(disabled_at, $2) WHERE id=$1", user_id, a.at)
        revoked = await _revoke_all(conn, user_id, a.at, None, None)
    else:
        await conn.execute("UPDATE users SET disabled_at=NULL WHERE id=$1", user_id)
    await _append(conn, actor_id, a)
    changed = await account(conn, user_id)
    assert changed is not None
    return changed, revoked


async def set_admin(
    conn: asyncpg.Connection, actor_id: int | None, user_id: int, is_admin: bool, a: AuditEntry
) -> AccountRec:
    target = await _target(conn, actor_id, user_id)
    if not is_admin:
        rules.may_disable(actor_id, target)
    await conn.execute("UPDATE users SET is_admin=$2 WHERE id=$1", user_id, is_admin)
    await _append(conn, actor_id, a)
    changed = await account(conn, user_id)
    assert changed is not None
    return changed


async def set_password(
    conn: asyncpg.Connection,
    actor_id: int | None,
    user_id: int,
    password_hash: str,
    keep: str | None,
    now: int,
    a: AuditEntry | None,
) -> list[str]:
    if actor_id != user_id or a is not None:  # an admin's reset; a user's own change is no admin action
        await _target(conn, actor_id, user_id)
    await conn.execute("UPDATE users SET password_hash=$2 WHERE id=$1", user_id, password_hash)
    revoked = await _revoke_all(conn, user_id, now, None, keep)
    if a is not None:
        await _append(conn, actor_id, a)
    return revoked


async def revoke_devices(
    conn: asyncpg.Connection, actor_id: int | None, user_id: int, device_id: str | None, a: AuditEntry
) -> list[str]:
    await _target(conn, actor_id, user_id)
    revoked = await _revoke_all(conn, user_id, a.at, device_id, None)
    await _append(conn, actor_id, a)
    return revoked


async def set_display_name(conn: asyncpg.Connection, user_id: int, display_name: str) -> AccountRec:
    await conn.execute("UPDATE users SET display_name=$2 WHERE id=$1", user_id, display_name)
    return rules.target_account(user_id, await account(conn, user_id))


async def set_avatar(conn: asyncpg.Connection, user_id: int, media_id: int | None) -> AccountRec:
    await conn.execute("UPDATE users SET avatar_media_id=$2 WHERE id=$1", user_id, media_id)
    return rules.target_account(user_id, await account(conn, user_id))


async def find_groups(
    conn: asyncpg.Connection, actor_id: int | None, query: str, after: int, limit: int
) -> list[GroupRec]:
    await _admin(conn, actor_id)
    rows = await conn.fetch(
        f"SELECT {GROUP_COLS} FROM conversations WHERE type='group' AND id>$1"
        " AND ($2 = '' OR id=$3 OR name ILIKE $4) ORDER BY id LIMIT $5",
        after,
        query,
        id_of(query),
        like_pattern(query),
        limit,
    )
    return [group_rec(r) for r in rows]


async def group(conn: asyncpg.Connection, actor_id: int | None, conv_id: int) -> GroupRec:
    await _admin(conn, actor_id)
    return await load_group(conn, conv_id, allow_dissolved=True)


async def dissolve_group(
    conn: asyncpg.Connection, actor_id: int | None, conv_id: int, msg_id: int, now: int, a: AuditEntry
) -> GroupChange:
    await _admin(conn, actor_id)
    await load_group(conn, conv_id, lock=True)
    members = tuple(
        r[0]
        for r in await conn.fetch(
            "SELECT user_id FROM user_conversations WHERE conv_id=$1 AND left_seq IS NULL ORDER BY user_id", conv_id
        )
    )
    entry = await append_entry(
        conn,
        conv_id,
        group_rules.system_entry(actor_id or 0, msg_id, now, "dissolved"),
        also_inbox=members,
        members_changed=True,
    )
    await conn.execute(
        "UPDATE user_conversations SET left_seq=$2 WHERE conv_id=$1 AND left_seq IS NULL", conv_id, entry.message.seq
    )
    await conn.execute("UPDATE conversations SET dissolved=true, member_count=0 WHERE id=$1", conv_id)
    await _append(conn, actor_id, a)
    return GroupChange(group=await load_group(conn, conv_id, allow_dissolved=True), entry=entry)


async def transfer_group(
    conn: asyncpg.Connection, actor_id: int | None, conv_id: int, user_id: int, msg_id: int, now: int, a: AuditEntry
) -> GroupChange:
    await _admin(conn, actor_id)
    g = await load_group(conn, conv_id, lock=True)
    role = await conn.fetchval(
        "SELECT role FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL", conv_id, user_id
    )
    rules.may_transfer(conv_id, user_id, role)
    await conn.execute(
        "UPDATE user_conversations SET role='admin' WHERE conv_id=$1 AND user_id=$2", conv_id, g.owner_id
    )
    await conn.execute("UPDATE conversations SET owner_id=$2 WHERE id=$1", conv_id, user_id)
    await conn.execute("UPDATE user_conversations SET role='owner' WHERE conv_id=$1 AND user_id=$2", conv_id, user_id)
    entry = await append_entry(
        conn,
        conv_id,
        group_rules.system_entry(actor_id or 0, msg_id, now, "owner", users=[str(user_id)], role="owner"),
    )
    await _append(conn, actor_id, a)
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def create_shop(
    conn: asyncpg.Connection, actor_id: int | None, shop_id: int, name: str, owner_id: int, now: int, a: AuditEntry
) -> ShopRec:
    await _target(conn, actor_id, owner_id)
    shop = await shops.create_shop(conn, shop_id, name, owner_id, now)
    await _append(conn, actor_id, a)
    return shop


async def set_shop_agent(
    conn: asyncpg.Connection,
    actor_id: int | None,
    shop_id: int,
    user_id: int,
    role: str,
    skills: list[str],
    capacity: int,
    now: int,
    ctx: ServiceCtx,
    a: AuditEntry,
) -> tuple[AgentRec, list[InboxWrite]]:
    await _admin(conn, actor_id)
    owner_id = rules.shop_owner(shop_id, await conn.fetchval("SELECT owner_id FROM shops WHERE id=$1", shop_id))
    # as the owner's own agent change: it locks the shop, then discovers its other locks
    result: tuple[AgentRec, list[InboxWrite]] = await shops.set_agent(
        conn, shop_id, owner_id, user_id, role, skills, capacity, now, ctx
    )
    await _append(conn, actor_id, a)
    return result


class _AdminRunner(PgRunner):
    def write_group(
        self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, users: tuple[int, ...], all_members: bool
    ) -> Awaitable[Any]:
        if all_members:
            anchors = Anchors(convs=(conv_id,), users=users, all_members_of=(conv_id,))
        else:
            anchors = Anchors(convs=(conv_id,), members_of=(conv_id,), users=users)
        return self._s.write(fn, *args, anchors=anchors)


class PgAdminStore(AdminJobs):
    def __init__(self, store: PgJobs) -> None:
        super().__init__(sys.modules[__name__], _AdminRunner(store, frozenset({account})), store.service)


async def record_export(conn: asyncpg.Connection, actor_id: int | None, user_id: int, a: AuditEntry) -> AccountRec:
    target = await _target(conn, actor_id, user_id)
    await _append(conn, actor_id, a)
    return target
