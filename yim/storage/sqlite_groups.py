"""Group jobs of the SQLite store: create, membership, roles, mute, settings, dissolve.

Each change appends a "system" entry (kind ``system``, never counted as unread) to the
group timeline in the same transaction, so every member sees membership changes in order
with the chat, through the same fan-out as messages.

Fan-out switch: a group is created in write fan-out if it has at most ``threshold``
members, else read fan-out. When members are added past the threshold the group switches
to read fan-out after the entry that announces them: entries up to ``switch_seq`` are in
the members' inboxes, later ones only in the group timeline. The switch is one-way (a
group that shrank keeps read fan-out): a member's devices then never have to reconcile
two switches.
"""

from __future__ import annotations

import sqlite3

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
from yim.storage.sqlite_timeline import append_entry, member_ids

MANAGERS = ("owner", "admin")


def load_group(conn: sqlite3.Connection, conv_id: int, *, allow_dissolved: bool = False) -> GroupRec:
    r = conn.execute(f"SELECT {GROUP_COLS} FROM conversations WHERE id=? AND type='group'", (conv_id,)).fetchone()
    if r is None:
        raise YimError("not_found", f"no group {conv_id}")
    group = group_rec(r)
    if group.dissolved and not allow_dissolved:
        raise YimError("group_dissolved", f"group {conv_id} was dissolved")
    return group


def _role(conn: sqlite3.Connection, conv_id: int, user_id: int) -> str | None:
    r = conn.execute(
        "SELECT role FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL", (conv_id, user_id)
    ).fetchone()
    return r[0] if r else None


def _require_member(conn: sqlite3.Connection, conv_id: int, user_id: int) -> str:
    role = _role(conn, conv_id, user_id)
    if role is None:
        raise YimError("not_member", f"you are not a member of group {conv_id}")
    return role


def _system_entry(
    conn: sqlite3.Connection,
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
    return append_entry(
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


def _existing_users(conn: sqlite3.Connection, user_ids: list[int]) -> set[int]:
    found: set[int] = set()
    for i in range(0, len(user_ids), 10_000):
        chunk = user_ids[i : i + 10_000]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(f"SELECT id FROM users WHERE id IN ({marks})", chunk))
    return found


def create_group(conn: sqlite3.Connection, cmd: CreateGroupCmd) -> GroupChange:
    members = list(dict.fromkeys([cmd.owner_id, *cmd.member_ids]))
    missing = set(members) - _existing_users(conn, members)
    if missing:
        raise YimError("not_found", f"no user {min(missing)}")
    if len(members) > cmd.max_members:
        raise YimError("group_full", f"a group holds at most {cmd.max_members} members")
    fanout = "read" if len(members) > cmd.threshold else "write"
    conn.execute(
        "INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, name, avatar,"
        " announcement, owner_id, join_policy, max_members, member_count, fanout)"
        " VALUES (?, 'group', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cmd.conv_id,
            cmd.created_at,
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
        ),
    )
    conn.executemany(
        "INSERT INTO user_conversations (user_id, conv_id, role) VALUES (?,?,?)",
        [(uid, cmd.conv_id, "owner" if uid == cmd.owner_id else "member") for uid in members],
    )
    entry = _system_entry(
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
    return GroupChange(group=load_group(conn, cmd.conv_id), entry=entry)


def add_members(
    conn: sqlite3.Connection,
    conv_id: int,
    actor_id: int,
    user_ids: list[int],
    via: str,
    msg_id: int,
    now: int,
    threshold: int,
) -> GroupChange:
    group = load_group(conn, conv_id)
    if via == "join":
        if user_ids != [actor_id]:
            raise YimError("bad_request", "join adds only yourself")
        if group.join_policy != "open":
            raise YimError("forbidden", "this group is joined by invitation only")
    else:
        role = _require_member(conn, conv_id, actor_id)
        if group.join_policy == "admins_invite" and role not in MANAGERS:
            raise YimError("forbidden", "only the owner and admins may invite to this group")
    wanted = list(dict.fromkeys(user_ids))
    missing = set(wanted) - _existing_users(conn, wanted)
    if missing:
        raise YimError("not_found", f"no user {min(missing)}")
    marks = ",".join("?" * len(wanted))
    current = {
        r[0]
        for r in conn.execute(
            f"SELECT user_id FROM user_conversations WHERE conv_id=? AND left_seq IS NULL AND user_id IN ({marks})",
            (conv_id, *wanted),
        )
    }
    new = [u for u in wanted if u not in current]
    if not new:
        return GroupChange(group=group, entry=None)
    if group.member_count + len(new) > group.max_members:
        raise YimError("group_full", f"a group holds at most {group.max_members} members")
    # New members see the timeline from the entry announcing them on: joined_seq = head now.
    conn.executemany(
        "INSERT INTO user_conversations (user_id, conv_id, joined_seq, read_seq, role) VALUES (?,?,?,?,'member')"
        " ON CONFLICT (user_id, conv_id) DO UPDATE SET joined_seq=excluded.joined_seq,"
        " read_seq=excluded.read_seq, left_seq=NULL, role='member', muted_until=0, mention_seq=0",
        [(u, conv_id, group.last_seq, group.last_seq) for u in new],
    )
    count = group.member_count + len(new)
    conn.execute("UPDATE conversations SET member_count=? WHERE id=?", (count, conv_id))
    entry = _system_entry(
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
        conn.execute("UPDATE conversations SET fanout='read', switch_seq=? WHERE id=?", (entry.message.seq, conv_id))
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def remove_member(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int
) -> GroupChange:
    load_group(conn, conv_id)
    actor_role = _require_member(conn, conv_id, actor_id)
    if actor_id == user_id:
        if actor_role == "owner":
            raise YimError("forbidden", "the owner must transfer ownership (or dissolve the group) before leaving")
        event = "left"
    else:
        target_role = _role(conn, conv_id, user_id)
        if target_role is None:
            raise YimError("not_found", f"user {user_id} is not a member")
        if actor_role not in MANAGERS or target_role == "owner" or (actor_role == "admin" and target_role == "admin"):
            raise YimError("forbidden", "you may not remove this member")
        event = "removed"
    # The entry is appended while the member still belongs, so they receive it (also
    # under read fan-out, through their inbox) — then their window closes at its seq.
    entry = _system_entry(
        conn, conv_id, actor_id, msg_id, now, event, also_inbox=(user_id,), members_changed=True, users=[str(user_id)]
    )
    conn.execute(
        "UPDATE user_conversations SET left_seq=? WHERE conv_id=? AND user_id=?", (entry.message.seq, conv_id, user_id)
    )
    conn.execute("UPDATE conversations SET member_count = member_count - 1 WHERE id=?", (conv_id,))
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def set_role(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, user_id: int, role: str, msg_id: int, now: int
) -> GroupChange:
    load_group(conn, conv_id)
    if _require_member(conn, conv_id, actor_id) != "owner":
        raise YimError("forbidden", "only the owner may change roles")
    target_role = _role(conn, conv_id, user_id)
    if target_role is None:
        raise YimError("not_found", f"user {user_id} is not a member")
    if user_id == actor_id:
        raise YimError("bad_request", "the owner cannot change their own role (transfer ownership instead)")
    if role == "owner":  # transfer: the old owner stays on as an admin
        conn.execute("UPDATE user_conversations SET role='admin' WHERE conv_id=? AND user_id=?", (conv_id, actor_id))
        conn.execute("UPDATE conversations SET owner_id=? WHERE id=?", (user_id, conv_id))
    conn.execute("UPDATE user_conversations SET role=? WHERE conv_id=? AND user_id=?", (role, conv_id, user_id))
    entry = _system_entry(
        conn, conv_id, actor_id, msg_id, now, "owner" if role == "owner" else "role", users=[str(user_id)], role=role
    )
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def mute_member(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
) -> GroupChange:
    load_group(conn, conv_id)
    actor_role = _require_member(conn, conv_id, actor_id)
    target_role = _role(conn, conv_id, user_id)
    if target_role is None:
        raise YimError("not_found", f"user {user_id} is not a member")
    if actor_role not in MANAGERS or target_role == "owner" or (actor_role == "admin" and target_role == "admin"):
        raise YimError("forbidden", "you may not mute this member")
    conn.execute("UPDATE user_conversations SET muted_until=? WHERE conv_id=? AND user_id=?", (until, conv_id, user_id))
    entry = _system_entry(
        conn, conv_id, actor_id, msg_id, now, "muted" if until > now else "unmuted", users=[str(user_id)], until=until
    )
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


_UPDATABLE = {"name", "avatar", "announcement", "join_policy", "mute_all", "max_members"}


def update_group(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
) -> GroupChange:
    group = load_group(conn, conv_id)
    if _require_member(conn, conv_id, actor_id) not in MANAGERS:
        raise YimError("forbidden", "only the owner and admins may change group settings")
    unknown = set(changes) - _UPDATABLE
    if unknown or not changes:
        raise YimError("bad_request", f"nothing to update (settable: {', '.join(sorted(_UPDATABLE))})")
    if "max_members" in changes and int(changes["max_members"]) < group.member_count:  # type: ignore[arg-type]
        raise YimError("bad_request", f"the group already has {group.member_count} members")
    cols = sorted(changes)
    conn.execute(
        f"UPDATE conversations SET {', '.join(f'{c}=?' for c in cols)} WHERE id=?",
        (*[changes[c] for c in cols], conv_id),
    )
    entry = _system_entry(conn, conv_id, actor_id, msg_id, now, "updated", changes=changes)
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def dissolve_group(conn: sqlite3.Connection, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
    load_group(conn, conv_id)
    if _require_member(conn, conv_id, actor_id) != "owner":
        raise YimError("forbidden", "only the owner may dissolve the group")
    members = tuple(member_ids(conn, conv_id))
    entry = _system_entry(conn, conv_id, actor_id, msg_id, now, "dissolved", also_inbox=members, members_changed=True)
    conn.execute(
        "UPDATE user_conversations SET left_seq=? WHERE conv_id=? AND left_seq IS NULL", (entry.message.seq, conv_id)
    )
    conn.execute("UPDATE conversations SET dissolved=1, member_count=0 WHERE id=?", (conv_id,))
    return GroupChange(group=load_group(conn, conv_id, allow_dissolved=True), entry=entry)


# --- reads -------------------------------------------------------------------------------------


def group_info(conn: sqlite3.Connection, conv_id: int, viewer_id: int) -> GroupRec:
    group = load_group(conn, conv_id, allow_dissolved=True)
    known = conn.execute(
        "SELECT 1 FROM user_conversations WHERE conv_id=? AND user_id=?", (conv_id, viewer_id)
    ).fetchone()
    if known is None and group.join_policy != "open":
        raise YimError("not_member", f"you are not a member of group {conv_id}")
    return group


def group_members(conn: sqlite3.Connection, conv_id: int, viewer_id: int, after: int, limit: int) -> list[MemberRec]:
    load_group(conn, conv_id, allow_dissolved=True)
    _require_member(conn, conv_id, viewer_id)
    return [
        MemberRec(*r)
        for r in conn.execute(
            "SELECT user_id, role, joined_seq, read_seq, muted_until FROM user_conversations"
            " WHERE conv_id=? AND left_seq IS NULL AND user_id>? ORDER BY user_id LIMIT ?",
            (conv_id, after, limit),
        )
    ]


def read_groups(conn: sqlite3.Connection, user_id: int) -> list[GroupHead]:
    # A left group is listed when entries lie between from_seq and the leave entry (which
    # itself reached the user's inbox): a device offline at the time must still pull them.
    return [
        GroupHead(conv_id=r[0], last_seq=r[1], from_seq=r[2], left=bool(r[3]))
        for r in conn.execute(
            "SELECT c.id, COALESCE(uc.left_seq, c.last_seq), MAX(uc.joined_seq, c.switch_seq),"
            " uc.left_seq IS NOT NULL FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
            " WHERE uc.user_id=? AND c.fanout='read'"
            " AND (uc.left_seq IS NULL OR uc.left_seq > MAX(uc.joined_seq, c.switch_seq) + 1)",
            (user_id,),
        )
    ]


def receipts(conn: sqlite3.Connection, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
    _require_member(conn, conv_id, viewer_id)
    row = conn.execute("SELECT sender_id FROM messages WHERE conv_id=? AND seq=?", (conv_id, seq)).fetchone()
    if row is None:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    sender = row[0]
    # Who could read it: members when it was sent (joined before, not left before), minus its sender.
    eligible = conn.execute(
        "SELECT user_id, read_seq FROM user_conversations WHERE conv_id=? AND joined_seq < ?"
        " AND (left_seq IS NULL OR left_seq >= ?) AND user_id != ?",
        (conv_id, seq, seq, sender),
    ).fetchall()
    readers = [uid for uid, read_seq in eligible if read_seq >= seq]
    return readers, len(eligible)
