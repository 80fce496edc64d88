"""Group jobs of the PostgreSQL store: create, membership, roles, mute, settings, dissolve.

Mirrors :mod:`yim.storage.sqlite_groups` (the behavioural spec; the fan-out switch is
explained there). Every write job first locks the group's row (``FOR UPDATE``): sends to
the group lock it too, so permission checks and the entry they append see one state of
the group even when several nodes write to it at once.
"""

from __future__ import annotations

import asyncpg
import msgspec

from yim.protocol.errors import YimError
from yim.storage.base import (
    GROUP_COLS,
    CreateGroupCmd,
    GroupChange,
    GroupHead,
    GroupRec,
    MemberRec,
    SendResult,
    group_rec,
)
from yim.storage.postgres_timeline import append_entry

MANAGERS = ("owner", "admin")


async def load_group(
    conn: asyncpg.Connection, conv_id: int, *, allow_dissolved: bool = False, lock: bool = False
) -> GroupRec:
    r = await conn.fetchrow(
        f"SELECT {GROUP_COLS} FROM conversations WHERE id=$1 AND type='group'{' FOR NO KEY UPDATE' if lock else ''}",
        conv_id,
    )
    if r is None:
        raise YimError("not_found", f"no group {conv_id}")
    group = group_rec(r)
    if group.dissolved and not allow_dissolved:
        raise YimError("group_dissolved", f"group {conv_id} was dissolved")
    return group


async def _role(conn: asyncpg.Connection, conv_id: int, user_id: int) -> str | None:
    return await conn.fetchval(
        "SELECT role FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL", conv_id, user_id
    )


async def _require_member(conn: asyncpg.Connection, conv_id: int, user_id: int) -> str:
    role = await _role(conn, conv_id, user_id)
    if role is None:
        raise YimError("not_member", f"you are not a member of group {conv_id}")
    return role


async def _system_entry(
    conn: asyncpg.Connection,
    conv_id: int,
    actor_id: int,
    msg_id: int,
    now: int,
    event: str,
    *,
    also_inbox: tuple[int, ...] = (),
    members_changed: bool = False,
    **fields: object,
) -> SendResult:
    body = msgspec.json.encode({"event": event, "actor": str(actor_id), **fields})
    return await append_entry(
        conn,
        conv_id,
        msg_id=msg_id,
        sender_id=actor_id,
        sender_device="",
        kind="system",
        body=body,
        client_msg_id=f"system:{msg_id}",
        created_at=now,
        uncounted=True,
        also_inbox=also_inbox,
        members_changed=members_changed,
    )


async def _existing_users(conn: asyncpg.Connection, user_ids: list[int]) -> set[int]:
    return {r[0] for r in await conn.fetch("SELECT id FROM users WHERE id = ANY ($1)", user_ids)}


async def create_group(conn: asyncpg.Connection, cmd: CreateGroupCmd) -> GroupChange:
    members = list(dict.fromkeys([cmd.owner_id, *cmd.member_ids]))
    missing = set(members) - await _existing_users(conn, members)
    if missing:
        raise YimError("not_found", f"no user {min(missing)}")
    if len(members) > cmd.max_members:
        raise YimError("group_full", f"a group holds at most {cmd.max_members} members")
    fanout = "read" if len(members) > cmd.threshold else "write"
    await conn.execute(
        "INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, name, avatar,"
        " announcement, owner_id, join_policy, max_members, member_count, fanout)"
        " VALUES ($1, 'group', $2, 0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        cmd.conv_id,
        cmd.created_at,
        cmd.name,
        cmd.avatar,
        cmd.announcement,
        cmd.owner_id,
        cmd.join_policy,
        cmd.max_members,
        len(members),
        fanout,
    )
    await conn.execute(
        "INSERT INTO user_conversations (user_id, conv_id, role)"
        " SELECT u, $2, CASE WHEN u = $3 THEN 'owner' ELSE 'member' END FROM unnest($1::bigint[]) AS u",
        members,
        cmd.conv_id,
        cmd.owner_id,
    )
    entry = await _system_entry(
        conn,
        cmd.conv_id,
        cmd.owner_id,
        cmd.msg_id,
        cmd.created_at,
        "created",
        members_changed=True,
        name=cmd.name,
        users=[str(u) for u in members],
    )
    return GroupChange(group=await load_group(conn, cmd.conv_id), entry=entry)


async def add_members(
    conn: asyncpg.Connection,
    conv_id: int,
    actor_id: int,
    user_ids: list[int],
    via: str,
    msg_id: int,
    now: int,
    threshold: int,
) -> GroupChange:
    group = await load_group(conn, conv_id, lock=True)
    if via == "join":
        if user_ids != [actor_id]:
            raise YimError("bad_request", "join adds only yourself")
        if group.join_policy != "open":
            raise YimError("forbidden", "this group is joined by invitation only")
    else:
        role = await _require_member(conn, conv_id, actor_id)
        if group.join_policy == "admins_invite" and role not in MANAGERS:
            raise YimError("forbidden", "only the owner and admins may invite to this group")
    wanted = list(dict.fromkeys(user_ids))
    missing = set(wanted) - await _existing_users(conn, wanted)
    if missing:
        raise YimError("not_found", f"no user {min(missing)}")
    current = {
        r[0]
        for r in await conn.fetch(
            "SELECT user_id FROM user_conversations WHERE conv_id=$1 AND left_seq IS NULL AND user_id = ANY ($2)",
            conv_id,
            wanted,
        )
    }
    new = [u for u in wanted if u not in current]
    if not new:
        return GroupChange(group=group, entry=None)
    if group.member_count + len(new) > group.max_members:
        raise YimError("group_full", f"a group holds at most {group.max_members} members")
    # New members see the timeline from the entry announcing them on: joined_seq = head now.
    await conn.execute(
        "INSERT INTO user_conversations (user_id, conv_id, joined_seq, read_seq, role)"
        " SELECT u, $2, $3, $3, 'member' FROM unnest($1::bigint[]) AS u"
        " ON CONFLICT (user_id, conv_id) DO UPDATE SET joined_seq=excluded.joined_seq,"
        " read_seq=excluded.read_seq, left_seq=NULL, role='member', muted_until=0, mention_seq=0",
        new,
        conv_id,
        group.last_seq,
    )
    count = group.member_count + len(new)
    await conn.execute("UPDATE conversations SET member_count=$2 WHERE id=$1", conv_id, count)
    entry = await _system_entry(
        conn,
        conv_id,
        actor_id,
        msg_id,
        now,
        "joined" if via == "join" else "invited",
        members_changed=True,
        users=[str(u) for u in new],
    )
    if group.fanout == "write" and count > threshold:
        await conn.execute(
            "UPDATE conversations SET fanout='read', switch_seq=$2 WHERE id=$1", conv_id, entry.message.seq
        )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def remove_member(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int
) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    actor_role = await _require_member(conn, conv_id, actor_id)
    if actor_id == user_id:
        if actor_role == "owner":
            raise YimError("forbidden", "the owner must transfer ownership (or dissolve the group) before leaving")
        event = "left"
    else:
        target_role = await _role(conn, conv_id, user_id)
        if target_role is None:
            raise YimError("not_found", f"user {user_id} is not a member")
        if actor_role not in MANAGERS or target_role == "owner" or (actor_role == "admin" and target_role == "admin"):
            raise YimError("forbidden", "you may not remove this member")
        event = "removed"
    # Appended while the member still belongs, so they receive it; then their window closes.
    entry = await _system_entry(
        conn, conv_id, actor_id, msg_id, now, event, also_inbox=(user_id,), members_changed=True, users=[str(user_id)]
    )
    await conn.execute(
        "UPDATE user_conversations SET left_seq=$3 WHERE conv_id=$1 AND user_id=$2",
        conv_id,
        user_id,
        entry.message.seq,
    )
    await conn.execute("UPDATE conversations SET member_count = member_count - 1 WHERE id=$1", conv_id)
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def set_role(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, user_id: int, role: str, msg_id: int, now: int
) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    if await _require_member(conn, conv_id, actor_id) != "owner":
        raise YimError("forbidden", "only the owner may change roles")
    target_role = await _role(conn, conv_id, user_id)
    if target_role is None:
        raise YimError("not_found", f"user {user_id} is not a member")
    if user_id == actor_id:
        raise YimError("bad_request", "the owner cannot change their own role (transfer ownership instead)")
    if role == "owner":  # transfer: the old owner stays on as an admin
        await conn.execute(
            "UPDATE user_conversations SET role='admin' WHERE conv_id=$1 AND user_id=$2", conv_id, actor_id
        )
        await conn.execute("UPDATE conversations SET owner_id=$2 WHERE id=$1", conv_id, user_id)
    await conn.execute("UPDATE user_conversations SET role=$3 WHERE conv_id=$1 AND user_id=$2", conv_id, user_id, role)
    entry = await _system_entry(
        conn, conv_id, actor_id, msg_id, now, "owner" if role == "owner" else "role", users=[str(user_id)], role=role
    )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def mute_member(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    actor_role = await _require_member(conn, conv_id, actor_id)
    target_role = await _role(conn, conv_id, user_id)
    if target_role is None:
        raise YimError("not_found", f"user {user_id} is not a member")
    if actor_role not in MANAGERS or target_role == "owner" or (actor_role == "admin" and target_role == "admin"):
        raise YimError("forbidden", "you may not mute this member")
    await conn.execute(
        "UPDATE user_conversations SET muted_until=$3 WHERE conv_id=$1 AND user_id=$2", conv_id, user_id, until
    )
    entry = await _system_entry(
        conn, conv_id, actor_id, msg_id, now, "muted" if until > now else "unmuted", users=[str(user_id)], until=until
    )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


_UPDATABLE = {"name", "avatar", "announcement", "join_policy", "mute_all", "max_members"}


async def update_group(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
) -> GroupChange:
    group = await load_group(conn, conv_id, lock=True)
    if await _require_member(conn, conv_id, actor_id) not in MANAGERS:
        raise YimError("forbidden", "only the owner and admins may change group settings")
    unknown = set(changes) - _UPDATABLE
    if unknown or not changes:
        raise YimError("bad_request", f"nothing to update (settable: {', '.join(sorted(_UPDATABLE))})")
    if "max_members" in changes and int(changes["max_members"]) < group.member_count:  # type: ignore[call-overload]
        raise YimError("bad_request", f"the group already has {group.member_count} members")
    cols = sorted(changes)
    values = [bool(changes[c]) if c == "mute_all" else changes[c] for c in cols]
    await conn.execute(
        f"UPDATE conversations SET {', '.join(f'{c}=${i + 2}' for i, c in enumerate(cols))} WHERE id=$1",
        conv_id,
        *values,
    )
    entry = await _system_entry(conn, conv_id, actor_id, msg_id, now, "updated", changes=changes)
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def dissolve_group(conn: asyncpg.Connection, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    if await _require_member(conn, conv_id, actor_id) != "owner":
        raise YimError("forbidden", "only the owner may dissolve the group")
    members = tuple(
        r[0]
        for r in await conn.fetch(
            "SELECT user_id FROM user_conversations WHERE conv_id=$1 AND left_seq IS NULL ORDER BY user_id", conv_id
        )
    )
    entry = await _system_entry(
        conn, conv_id, actor_id, msg_id, now, "dissolved", also_inbox=members, members_changed=True
    )
    await conn.execute(
        "UPDATE user_conversations SET left_seq=$2 WHERE conv_id=$1 AND left_seq IS NULL", conv_id, entry.message.seq
    )
    await conn.execute("UPDATE conversations SET dissolved=true, member_count=0 WHERE id=$1", conv_id)
    return GroupChange(group=await load_group(conn, conv_id, allow_dissolved=True), entry=entry)


# --- reads ----------------------------------------------------------------------------------------


async def group_info(conn: asyncpg.Connection, conv_id: int, viewer_id: int) -> GroupRec:
    group = await load_group(conn, conv_id, allow_dissolved=True)
    known = await conn.fetchval("SELECT 1 FROM user_conversations WHERE conv_id=$1 AND user_id=$2", conv_id, viewer_id)
    if known is None and group.join_policy != "open":
        raise YimError("not_member", f"you are not a member of group {conv_id}")
    return group


async def group_members(
    conn: asyncpg.Connection, conv_id: int, viewer_id: int, after: int, limit: int
) -> list[MemberRec]:
    await load_group(conn, conv_id, allow_dissolved=True)
    await _require_member(conn, conv_id, viewer_id)
    rows = await conn.fetch(
        "SELECT user_id, role, joined_seq, read_seq, muted_until FROM user_conversations"
        " WHERE conv_id=$1 AND left_seq IS NULL AND user_id>$2 ORDER BY user_id LIMIT $3",
        conv_id,
        after,
        limit,
    )
    return [MemberRec(*r) for r in rows]


async def read_groups(conn: asyncpg.Connection, user_id: int) -> list[GroupHead]:
    # A left group is listed when entries lie between from_seq and the leave entry (which
    # itself reached the user's inbox): a device offline at the time must still pull them.
    rows = await conn.fetch(
        "SELECT c.id, COALESCE(uc.left_seq, c.last_seq), GREATEST(uc.joined_seq, c.switch_seq),"
        " uc.left_seq IS NOT NULL FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id=$1 AND c.fanout='read'"
        " AND (uc.left_seq IS NULL OR uc.left_seq > GREATEST(uc.joined_seq, c.switch_seq) + 1)",
        user_id,
    )
    return [GroupHead(conv_id=r[0], last_seq=r[1], from_seq=r[2], left=r[3]) for r in rows]


async def receipts(conn: asyncpg.Connection, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
    await _require_member(conn, conv_id, viewer_id)
    sender = await conn.fetchval("SELECT sender_id FROM messages WHERE conv_id=$1 AND seq=$2", conv_id, seq)
    if sender is None:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    # Who could read it: members when it was sent (joined before, not left before), minus its sender.
    eligible = await conn.fetch(
        "SELECT user_id, read_seq FROM user_conversations WHERE conv_id=$1 AND joined_seq < $2"
        " AND (left_seq IS NULL OR left_seq >= $2) AND user_id != $3 ORDER BY user_id",
        conv_id,
        seq,
        sender,
    )
    readers = [uid for uid, read_seq in eligible if read_seq >= seq]
    return readers, len(eligible)
