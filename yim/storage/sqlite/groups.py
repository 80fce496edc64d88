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

from yim.storage.records import GROUP_COLS, CreateGroupCmd, GroupChange, GroupHead, GroupRec, MemberRec, group_rec
from yim.storage.rules import groups as rules
from yim.storage.sqlite.rows import member_ids
from yim.storage.sqlite.timeline import append_entry


def load_group(conn: sqlite3.Connection, conv_id: int, *, allow_dissolved: bool = False) -> GroupRec:
    r = conn.execute(f"SELECT {GROUP_COLS} FROM conversations WHERE id=? AND type='group'", (conv_id,)).fetchone()
    return rules.live_group(group_rec(r) if r else None, conv_id, allow_dissolved=allow_dissolved)


def _role(conn: sqlite3.Connection, conv_id: int, user_id: int) -> str | None:
    r = conn.execute(
        "SELECT role FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL", (conv_id, user_id)
    ).fetchone()
    return r[0] if r else None


def _require_member(conn: sqlite3.Connection, conv_id: int, user_id: int) -> str:
    return rules.require_member(_role(conn, conv_id, user_id), conv_id)


def _existing_users(conn: sqlite3.Connection, user_ids: list[int]) -> set[int]:
    found: set[int] = set()
    for i in range(0, len(user_ids), 10_000):
        chunk = user_ids[i : i + 10_000]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(f"SELECT id FROM users WHERE id IN ({marks})", chunk))
    return found


def create_group(conn: sqlite3.Connection, cmd: CreateGroupCmd) -> GroupChange:
    members = list(dict.fromkeys([cmd.owner_id, *cmd.member_ids]))
    rules.check_users_exist(members, _existing_users(conn, members))
    rules.check_room(len(members), cmd.max_members)
    row = rules.new_group_row(cmd, len(members), cmd.threshold)
    conn.execute(f"INSERT INTO conversations ({rules.NEW_GROUP_COLS}) VALUES ({','.join('?' * len(row))})", row)
    conn.executemany(
        "INSERT INTO user_conversations (user_id, conv_id, role) VALUES (?,?,?)",
        [(uid, cmd.conv_id, "owner" if uid == cmd.owner_id else "member") for uid in members],
    )
    entry = append_entry(
        conn,
        cmd.conv_id,
        rules.system_entry(
            cmd.owner_id, cmd.msg_id, cmd.created_at, "created", name=cmd.name, users=[str(u) for u in members]
        ),
        members_changed=True,
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
    rules.check_add(group, actor_id, None if via == "join" else _role(conn, conv_id, actor_id), user_ids, via)
    wanted = list(dict.fromkeys(user_ids))
    rules.check_users_exist(wanted, _existing_users(conn, wanted))
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
    rules.check_room(group.member_count + len(new), group.max_members)
    # New members see the timeline from the entry announcing them on: joined_seq = head now.
    conn.executemany(
        "INSERT INTO user_conversations (user_id, conv_id, joined_seq, read_seq, role) VALUES (?,?,?,?,'member')"
        " ON CONFLICT (user_id, conv_id) DO UPDATE SET joined_seq=excluded.joined_seq,"
        " read_seq=excluded.read_seq, left_seq=NULL, role='member', muted_until=0, mention_seq=0",
        [(u, conv_id, group.last_seq, group.last_seq) for u in new],
    )
    count = group.member_count + len(new)
    conn.execute("UPDATE conversations SET member_count=? WHERE id=?", (count, conv_id))
    entry = append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "joined" if via == "join" else "invited", users=[str(u) for u in new]
        ),
        members_changed=True,
    )
    if rules.switches_to_read(group, count, threshold):
        conn.execute("UPDATE conversations SET fanout='read', switch_seq=? WHERE id=?", (entry.message.seq, conv_id))
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def remove_member(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int
) -> GroupChange:
    load_group(conn, conv_id)
    event = rules.remove_event(
        conv_id, actor_id, _role(conn, conv_id, actor_id), user_id, _role(conn, conv_id, user_id)
    )
    # The entry is appended while the member still belongs, so they receive it (also
    # under read fan-out, through their inbox) — then their window closes at its seq.
    entry = append_entry(
        conn,
        conv_id,
        rules.system_entry(actor_id, msg_id, now, event, users=[str(user_id)]),
        also_inbox=(user_id,),
        members_changed=True,
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
    rules.check_set_role(conv_id, actor_id, _role(conn, conv_id, actor_id), user_id, _role(conn, conv_id, user_id))
    if role == "owner":  # transfer: the old owner stays on as an admin
        conn.execute("UPDATE user_conversations SET role='admin' WHERE conv_id=? AND user_id=?", (conv_id, actor_id))
        conn.execute("UPDATE conversations SET owner_id=? WHERE id=?", (user_id, conv_id))
    conn.execute("UPDATE user_conversations SET role=? WHERE conv_id=? AND user_id=?", (role, conv_id, user_id))
    entry = append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "owner" if role == "owner" else "role", users=[str(user_id)], role=role
        ),
    )
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def mute_member(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
) -> GroupChange:
    load_group(conn, conv_id)
    rules.check_mute(conv_id, _role(conn, conv_id, actor_id), user_id, _role(conn, conv_id, user_id))
    conn.execute("UPDATE user_conversations SET muted_until=? WHERE conv_id=? AND user_id=?", (until, conv_id, user_id))
    entry = append_entry(
        conn,
        conv_id,
        rules.system_entry(
            actor_id, msg_id, now, "muted" if until > now else "unmuted", users=[str(user_id)], until=until
        ),
    )
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def update_group(
    conn: sqlite3.Connection, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
) -> GroupChange:
    group = load_group(conn, conv_id)
    cols = rules.check_update(group, _role(conn, conv_id, actor_id), changes)
    conn.execute(
        f"UPDATE conversations SET {', '.join(f'{c}=?' for c in cols)} WHERE id=?",
        (*[changes[c] for c in cols], conv_id),
    )
    entry = append_entry(conn, conv_id, rules.system_entry(actor_id, msg_id, now, "updated", changes=changes))
    return GroupChange(group=load_group(conn, conv_id), entry=entry)


def dissolve_group(conn: sqlite3.Connection, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
    load_group(conn, conv_id)
    rules.check_dissolve(conv_id, _role(conn, conv_id, actor_id))
    members = tuple(member_ids(conn, conv_id))
    entry = append_entry(
        conn, conv_id, rules.system_entry(actor_id, msg_id, now, "dissolved"), also_inbox=members, members_changed=True
    )
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
    return rules.check_view(group, known is not None)


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
    sender = rules.receipt_sender(row[0] if row else None, conv_id, seq)
    # Who could read it: members when it was sent (joined before, not left before), minus its sender.
    eligible = conn.execute(
        "SELECT user_id, read_seq FROM user_conversations WHERE conv_id=? AND joined_seq < ?"
        " AND (left_seq IS NULL OR left_seq >= ?) AND user_id != ?",
        (conv_id, seq, seq, sender),
    ).fetchall()
    readers = [uid for uid, read_seq in eligible if read_seq >= seq]
    return readers, len(eligible)
