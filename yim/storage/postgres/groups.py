"""Group jobs of the PostgreSQL store: create, membership, roles, mute, settings, dissolve.

Mirrors :mod:`yim.storage.sqlite.groups` (the behavioural spec; the fan-out switch is
explained there). Every write job first locks the group's row (``FOR UPDATE``): sends to
the group lock it too, so permission checks and the entry they append see one state of
the group even when several nodes write to it at once.
"""

from __future__ import annotations

import asyncpg

from yim.storage.postgres.timeline import append_entry
from yim.storage.records import GROUP_COLS, CreateGroupCmd, GroupChange, GroupHead, GroupRec, MemberRec, group_rec
from yim.storage.rules import groups as rules


async def load_group(
    conn: asyncpg.Connection, conv_id: int, *, allow_dissolved: bool = False, lock: bool = False
) -> GroupRec:
    r = await conn.fetchrow(
        f"SELECT {GROUP_COLS} FROM conversations WHERE id=$1 AND type='group'{' FOR NO KEY UPDATE' if lock else ''}",
        conv_id,
    )
    return rules.live_group(group_rec(r) if r else None, conv_id, allow_dissolved=allow_dissolved)


async def _role(conn: asyncpg.Connection, conv_id: int, user_id: int) -> str | None:
    return await conn.fetchval(
        "SELECT role FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL", conv_id, user_id
    )


async def _require_member(conn: asyncpg.Connection, conv_id: int, user_id: int) -> str:
    return rules.require_member(await _role(conn, conv_id, user_id), conv_id)


async def _existing_users(conn: asyncpg.Connection, user_ids: list[int]) -> set[int]:
    return {r[0] for r in await conn.fetch("SELECT id FROM users WHERE id = ANY ($1)", user_ids)}


async def create_group(conn: asyncpg.Connection, cmd: CreateGroupCmd) -> GroupChange:
    members = list(dict.fromkeys([cmd.owner_id, *cmd.member_ids]))
    rules.check_users_exist(members, await _existing_users(conn, members))
    rules.check_room(len(members), cmd.max_members)
    row = rules.new_group_row(cmd, len(members), cmd.threshold)
    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO conversations ({rules.NEW_GROUP_COLS}) VALUES ({marks})", *row)
    await conn.execute(
        "INSERT INTO user_conversations (user_id, conv_id, role)"
        " SELECT u, $2, CASE WHEN u = $3 THEN 'owner' ELSE 'member' END FROM unnest($1::bigint[]) AS u",
        members,
        cmd.conv_id,
        cmd.owner_id,
    )
    entry = await append_entry(
        conn,
        cmd.conv_id,
        rules.system_entry(
            cmd.owner_id, cmd.msg_id, cmd.created_at, "created", name=cmd.name, users=[str(u) for u in members]
        ),
        members_changed=True,
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
    rules.check_add(group, actor_id, None if via == "join" else await _role(conn, conv_id, actor_id), user_ids, via)
    wanted = list(dict.fromkeys(user_ids))
    rules.check_users_exist(wanted, await _existing_users(conn, wanted))
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
    rules.check_room(group.member_count + len(new), group.max_members)
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
    entry = await append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "joined" if via == "join" else "invited", users=[str(u) for u in new]
        ),
        members_changed=True,
    )
    if rules.switches_to_read(group, count, threshold):
        await conn.execute(
            "UPDATE conversations SET fanout='read', switch_seq=$2 WHERE id=$1", conv_id, entry.message.seq
        )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def remove_member(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int
) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    actor_role, target_role = await _role(conn, conv_id, actor_id), await _role(conn, conv_id, user_id)
    event = rules.remove_event(conv_id, actor_id, actor_role, user_id, target_role)
    # Appended while the member still belongs, so they receive it; then their window closes.
    entry = await append_entry(
        conn,
        conv_id,
        rules.system_entry(actor_id, msg_id, now, event, users=[str(user_id)]),
        also_inbox=(user_id,),
        members_changed=True,
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
    actor_role, target_role = await _role(conn, conv_id, actor_id), await _role(conn, conv_id, user_id)
    rules.check_set_role(conv_id, actor_id, actor_role, user_id, target_role)
    if role == "owner":  # transfer: the old owner stays on as an admin
        await conn.execute(
            "UPDATE user_conversations SET role='admin' WHERE conv_id=$1 AND user_id=$2", conv_id, actor_id
        )
        await conn.execute("UPDATE conversations SET owner_id=$2 WHERE id=$1", conv_id, user_id)
    await conn.execute("UPDATE user_conversations SET role=$3 WHERE conv_id=$1 AND user_id=$2", conv_id, user_id, role)
    entry = await append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "owner" if role == "owner" else "role", users=[str(user_id)], role=role
        ),
    )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def mute_member(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    rules.check_mute(conv_id, await _role(conn, conv_id, actor_id), user_id, await _role(conn, conv_id, user_id))
    await conn.execute(
        "UPDATE user_conversations SET muted_until=$3 WHERE conv_id=$1 AND user_id=$2", conv_id, user_id, until
    )
    entry = await append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "muted" if until > now else "unmuted", users=[str(user_id)], until=until
        ),
    )
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def update_group(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
) -> GroupChange:
    group = await load_group(conn, conv_id, lock=True)
    cols = rules.check_update(group, await _role(conn, conv_id, actor_id), changes)
    values = [bool(changes[c]) if c == "mute_all" else changes[c] for c in cols]
    await conn.execute(
        f"UPDATE conversations SET {', '.join(f'{c}=${i + 2}' for i, c in enumerate(cols))} WHERE id=$1",
        conv_id,
        *values,
    )
    entry = await append_entry(conn, conv_id, rules.system_entry(actor_id, msg_id, now, "updated", changes=changes))
    return GroupChange(group=await load_group(conn, conv_id), entry=entry)


async def dissolve_group(conn: asyncpg.Connection, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
    await load_group(conn, conv_id, lock=True)
    rules.check_dissolve(conv_id, await _role(conn, conv_id, actor_id))
    members = tuple(
        r[0]
        for r in await conn.fetch(
            "SELECT user_id FROM user_conversations WHERE conv_id=$1 AND left_seq IS NULL ORDER BY user_id", conv_id
        )
    )
    entry = await append_entry(
        conn, conv_id, rules.system_entry(actor_id, msg_id, now, "dissolved"), also_inbox=members, members_changed=True
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
    return rules.check_view(group, known is not None)


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
    row = await conn.fetchval("SELECT sender_id FROM messages WHERE conv_id=$1 AND seq=$2", conv_id, seq)
    sender = rules.receipt_sender(row, conv_id, seq)
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
