"""SQLite jobs of the admin store (yim/storage/admin.py): SQL only, the rules are shared."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any

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
from yim.storage.records import GROUP_COLS, GroupChange, GroupRec, group_rec
from yim.storage.relations import InboxWrite
from yim.storage.rules import admin as rules
from yim.storage.rules import groups as group_rules
from yim.storage.service import AgentRec, ServiceCtx, ShopRec
from yim.storage.sqlite import service as shops
from yim.storage.sqlite.groups import load_group
from yim.storage.sqlite.runner import SqliteJobs, SqliteRunner
from yim.storage.sqlite.timeline import append_entry, member_ids


def account(conn: sqlite3.Connection, user_id: int) -> AccountRec | None:
    r = conn.execute(f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id=?", (user_id,)).fetchone()
    return account_from_row(r) if r else None


def _admin(conn: sqlite3.Connection, actor_id: int | None) -> None:
    rules.require_admin(actor_id, None if actor_id is None else account(conn, actor_id))


def _target(conn: sqlite3.Connection, actor_id: int | None, user_id: int) -> AccountRec:
    _admin(conn, actor_id)
    return rules.target_account(user_id, account(conn, user_id))


def _append(conn: sqlite3.Connection, actor_id: int | None, a: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor_id, action, target, detail, source) VALUES (?,?,?,?,?,?)",
        (a.at, actor_id, a.action, a.target, a.detail.decode(), a.source),
    )


def _revoke_all(conn: sqlite3.Connection, user_id: int, now: int, device_id: str | None, keep: str | None) -> list[str]:
    where = "user_id=? AND revoked_at IS NULL"
    args: list[object] = [user_id]
    if device_id is not None:
        where += " AND device_id=?"
        args.append(device_id)
    if keep is not None:
        where += " AND id<>?"
        args.append(keep)
    ids = sorted(r[0] for r in conn.execute(f"SELECT id FROM sessions WHERE {where}", args))
    if ids:
        conn.execute(f"UPDATE sessions SET revoked_at=? WHERE {where}", [now, *args])
    return ids


def find_users(conn: sqlite3.Connection, actor_id: int | None, query: str, after: int, limit: int) -> list[AccountRec]:
    _admin(conn, actor_id)
    sql = f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE id>? AND erased_at IS NULL"
    args: list[object] = [after]
    if query:
        pattern = like_pattern(query)
        sql += " AND (id=? OR username LIKE ? ESCAPE '\\' OR display_name LIKE ? ESCAPE '\\')"
        args += [id_of(query), pattern, pattern]
    return [account_from_row(r) for r in conn.execute(sql + " ORDER BY id LIMIT ?", [*args, limit])]


def user_facts(conn: sqlite3.Connection, actor_id: int | None, user_id: int) -> tuple[AccountRec, UserFacts]:
    account = _target(conn, actor_id, user_id)
    groups = [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT c.id, c.name, uc.role FROM user_conversations uc JOIN conversations c ON c.id=uc.conv_id"
            " WHERE uc.user_id=? AND uc.left_seq IS NULL AND c.type='group' ORDER BY c.id",
            (user_id,),
        )
    ]
    count = conn.execute(  # on the (sender_id, client_msg_id) index
        "SELECT count(*) FROM messages WHERE sender_id=? AND kind NOT IN ('system', 'recall')", (user_id,)
    ).fetchone()[0]
    return account, UserFacts(groups=groups, message_count=count)


def audit(conn: sqlite3.Connection, actor_id: int | None, before: int | None, limit: int) -> list[AuditRec]:
    _admin(conn, actor_id)
    rows = conn.execute(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id<? ORDER BY id DESC LIMIT ?",
        (before if before is not None else 2**63 - 1, limit),
    )
    return [audit_from_row(r) for r in rows]


def set_disabled(
    conn: sqlite3.Connection, actor_id: int | None, user_id: int, disabled: bool, a: AuditEntry
) -> tuple[AccountRec, list[str]]:
    target = _target(conn, actor_id, user_id)
    revoked: list[str] = []
    if disabled:
        rules.may_disable(actor_id, target)
        conn.execute("UPDATE users SET disabled_at=coalesce(disabled_at, ?) WHERE id=?", (a.at, user_id))
        revoked = _revoke_all(conn, user_id, a.at, None, None)
    else:
        conn.execute("UPDATE users SET disabled_at=NULL WHERE id=?", (user_id,))
    _append(conn, actor_id, a)
    changed = account(conn, user_id)
    assert changed is not None
    return changed, revoked


def set_admin(
    conn: sqlite3.Connection, actor_id: int | None, user_id: int, is_admin: bool, a: AuditEntry
) -> AccountRec:
    target = _target(conn, actor_id, user_id)
    if not is_admin:
        rules.may_disable(actor_id, target)
    conn.execute("UPDATE users SET is_admin=? WHERE id=?", (int(is_admin), user_id))
    _append(conn, actor_id, a)
    changed = account(conn, user_id)
    assert changed is not None
    return changed


def set_password(
    conn: sqlite3.Connection,
    actor_id: int | None,
    user_id: int,
    password_hash: str,
    keep: str | None,
    now: int,
    a: AuditEntry | None,
) -> list[str]:
    if actor_id != user_id or a is not None:  # an admin's reset; a user's own change is no admin action
        _target(conn, actor_id, user_id)
    conn.execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user_id))
    revoked = _revoke_all(conn, user_id, now, None, keep)
    if a is not None:
        _append(conn, actor_id, a)
    return revoked


def revoke_devices(
    conn: sqlite3.Connection, actor_id: int | None, user_id: int, device_id: str | None, a: AuditEntry
) -> list[str]:
    _target(conn, actor_id, user_id)
    revoked = _revoke_all(conn, user_id, a.at, device_id, None)
    _append(conn, actor_id, a)
    return revoked


def set_display_name(conn: sqlite3.Connection, user_id: int, display_name: str) -> AccountRec:
    conn.execute("UPDATE users SET display_name=? WHERE id=?", (display_name, user_id))
    return rules.target_account(user_id, account(conn, user_id))


def set_avatar(conn: sqlite3.Connection, user_id: int, media_id: int | None) -> AccountRec:
    conn.execute("UPDATE users SET avatar_media_id=? WHERE id=?", (media_id, user_id))
    return rules.target_account(user_id, account(conn, user_id))


def find_groups(conn: sqlite3.Connection, actor_id: int | None, query: str, after: int, limit: int) -> list[GroupRec]:
    _admin(conn, actor_id)
    sql = f"SELECT {GROUP_COLS} FROM conversations WHERE type='group' AND id>?"
    args: list[object] = [after]
    if query:
        pattern = like_pattern(query)
        sql += " AND (id=? OR name LIKE ? ESCAPE '\\')"
        args += [id_of(query), pattern]
    return [group_rec(r) for r in conn.execute(sql + " ORDER BY id LIMIT ?", [*args, limit])]


def group(conn: sqlite3.Connection, actor_id: int | None, conv_id: int) -> GroupRec:
    _admin(conn, actor_id)
    return load_group(conn, conv_id, allow_dissolved=True)


def dissolve_group(
    conn: sqlite3.Connection, actor_id: int | None, conv_id: int, msg_id: int, now: int, a: AuditEntry
) -> GroupChange:
    _admin(conn, actor_id)
    load_group(conn, conv_id)
    members = tuple(member_ids(conn, conv_id))
    entry = append_entry(
        conn,
        conv_id,
        group_rules.system_entry(actor_id or 0, msg_id, now, "dissolved"),
        also_inbox=members,
        members_changed=True,
    )
    conn.execute(
        "UPDATE user_conversations SET left_seq=? WHERE conv_id=? AND left_seq IS NULL", (entry.message.seq, conv_id)
    )
    conn.execute("UPDATE conversations SET dissolved=1, member_count=0 WHERE id=?", (conv_id,))
    _append(conn, actor_id, a)
    return GroupChange(group=load_group(conn, conv_id, allow_dissolved=True), entry=entry)


def transfer_group(
    conn: sqlite3.Connection, actor_id: int | None, conv_id: int, user_id: int, msg_id: int, now: int, a: AuditEntry
) -> GroupChange:
    _admin(conn, actor_id)
    g = load_group(conn, conv_id)
    r = conn.execute(
        "SELECT role FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL", (conv_id, user_id)
    ).fetchone()
    rules.may_transfer(conv_id, user_id, r[0] if r else None)
    conn.execute("UPDATE user_conversations SET role='admin' WHERE conv_id=? AND user_id=?", (conv_id, g.owner_id))
    conn.execute("UPDATE conversations SET owner_id=? WHERE id=?", (user_id, conv_id))
    conn.execute("UPDATE user_conversations SET role='owner' WHERE conv_id=? AND user_id=?", (conv_id, user_id))
    entry = append_entry(
        conn,
        conv_id,
        group_rules.system_entry(actor_id or 0, msg_id, now, "owner", users=[str(user_id)], role="owner"),
    )
    _append(conn, actor_id, a)
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def create_shop(
    conn: sqlite3.Connection, actor_id: int | None, shop_id: int, name: str, owner_id: int, now: int, a: AuditEntry
) -> ShopRec:
    _target(conn, actor_id, owner_id)
    shop = shops.create_shop(conn, shop_id, name, owner_id, now)
    _append(conn, actor_id, a)
    return shop


def set_shop_agent(
    conn: sqlite3.Connection,
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
    _admin(conn, actor_id)
    r = conn.execute("SELECT owner_id FROM shops WHERE id=?", (shop_id,)).fetchone()
    owner_id = rules.shop_owner(shop_id, r[0] if r else None)
    result = shops.set_agent(conn, shop_id, owner_id, user_id, role, skills, capacity, now, ctx)
    _append(conn, actor_id, a)
    return result


class _AdminRunner(SqliteRunner):
    def write_group(
        self, fn: Callable[..., Any], args: tuple[Any, ...], conv_id: int, users: tuple[int, ...], all_members: bool
    ) -> Awaitable[Any]:
        return self.write(fn, args, users)  # one writer thread: nothing to declare


class SqliteAdminStore(AdminJobs):
    def __init__(self, store: SqliteJobs) -> None:
        super().__init__(sys.modules[__name__], _AdminRunner(store), store.service)


def record_export(conn: sqlite3.Connection, actor_id: int | None, user_id: int, a: AuditEntry) -> AccountRec:
    target = _target(conn, actor_id, user_id)
    _append(conn, actor_id, a)
    return target
