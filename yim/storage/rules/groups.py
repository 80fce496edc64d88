"""Group rules: roles and who may act on whom, join policy, member limits, settable fields,
fan-out, and the body of the "system" entries that announce every change."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import CreateGroupCmd, Entry, GroupRec

#: Roles that manage a group: they may invite to admins_invite groups, change settings,
#: and remove or mute members below them.
MANAGERS: Final = ("owner", "admin")

#: The group settings a manager may change with update_group.
UPDATABLE: Final = frozenset({"name", "avatar", "announcement", "join_policy", "mute_all", "max_members", "pin_policy"})


def live_group(group: GroupRec | None, conv_id: int, *, allow_dissolved: bool = False) -> GroupRec:
    """The group a job works on: it must exist, and (unless asked) not be dissolved."""
    if group is None:
        raise YimError("not_found", f"no group {conv_id}")
    if group.dissolved and not allow_dissolved:
        raise YimError("group_dissolved", f"group {conv_id} was dissolved")
    return group


def require_member(role: str | None, conv_id: int) -> str:
    """The actor's role; someone who is not a current member may do nothing here."""
    if role is None:
        raise YimError("not_member", f"you are not a member of group {conv_id}")
    return role


def _require_target(role: str | None, user_id: int) -> str:
    if role is None:
        raise YimError("not_found", f"user {user_id} is not a member")
    return role


def outranks(actor_role: str, target_role: str) -> bool:
    """May a member with actor_role remove or mute one with target_role? Managers act on
    members below them: never on the owner, and an admin not on another admin."""
    if actor_role not in MANAGERS or target_role == "owner":
        return False
    return not (actor_role == "admin" and target_role == "admin")


def check_users_exist(wanted: Iterable[int], existing: Collection[int]) -> None:
    missing = set(wanted) - set(existing)
    if missing:
        raise YimError("not_found", f"no user {min(missing)}")


def check_room(count: int, max_members: int) -> None:
    """``count`` members would be in the group."""
    if count > max_members:
        raise YimError("group_full", f"a group holds at most {max_members} members")


#: The columns of a new group's conversation row, in the order of :func:`new_group_row`.
NEW_GROUP_COLS: Final = (
    "id, type, created_at, last_seq, last_msg_id, updated_at, name, avatar, announcement, owner_id, join_policy,"
    " max_members, member_count, fanout"
)


def new_group_row(cmd: CreateGroupCmd, member_count: int, threshold: int) -> tuple[object, ...]:
    """A new group's conversation row (NEW_GROUP_COLS), in the fan-out its size calls for."""
    return (
        cmd.conv_id,
        "group",
        cmd.created_at,
        0,
        cmd.conv_id,
        cmd.created_at,
        cmd.name,
        cmd.avatar,
        cmd.announcement,
        cmd.owner_id,
        cmd.join_policy,
        cmd.max_members,
        member_count,
        fanout_for(member_count, threshold),
    )


def fanout_for(count: int, threshold: int) -> str:
    """A new group's fan-out: read fan-out past the threshold, else write fan-out."""
    return "read" if count > threshold else "write"


def switches_to_read(group: GroupRec, count: int, threshold: int) -> bool:
    """Does growing to ``count`` members switch the group to read fan-out? One way only:
    a group that shrank keeps read fan-out."""
    return group.fanout == "write" and count > threshold


def check_add(group: GroupRec, actor_id: int, actor_role: str | None, user_ids: list[int], via: str) -> None:
    """``via`` "join": the actor adds only themself, to an open group; otherwise a member
    invites, and to an admins_invite group only a manager may."""
    if via == "join":
        if user_ids != [actor_id]:
            raise YimError("bad_request", "join adds only yourself")
        if group.join_policy != "open":
            raise YimError("forbidden", "this group is joined by invitation only")
        return
    role = require_member(actor_role, group.conv_id)
    if group.join_policy == "admins_invite" and role not in MANAGERS:
        raise YimError("forbidden", "only the owner and admins may invite to this group")


def remove_event(conv_id: int, actor_id: int, actor_role: str | None, user_id: int, target_role: str | None) -> str:
    """Check a leave (actor == user) or a removal; returns the entry's event name."""
    role = require_member(actor_role, conv_id)
    if actor_id == user_id:
        if role == "owner":
            raise YimError("forbidden", "the owner must transfer ownership (or dissolve the group) before leaving")
        return "left"
    target = _require_target(target_role, user_id)
    if not outranks(role, target):
        raise YimError("forbidden", "you may not remove this member")
    return "removed"


def check_set_role(conv_id: int, actor_id: int, actor_role: str | None, user_id: int, target_role: str | None) -> None:
    if require_member(actor_role, conv_id) != "owner":
        raise YimError("forbidden", "only the owner may change roles")
    _require_target(target_role, user_id)
    if user_id == actor_id:
        raise YimError("bad_request", "the owner cannot change their own role (transfer ownership instead)")


def check_mute(conv_id: int, actor_role: str | None, user_id: int, target_role: str | None) -> None:
    role = require_member(actor_role, conv_id)
    target = _require_target(target_role, user_id)
    if not outranks(role, target):
        raise YimError("forbidden", "you may not mute this member")


def check_update(group: GroupRec, actor_role: str | None, changes: dict[str, object]) -> list[str]:
    """Check a settings change; returns the columns to write, sorted."""
    if require_member(actor_role, group.conv_id) not in MANAGERS:
        raise YimError("forbidden", "only the owner and admins may change group settings")
    if not changes or set(changes) - UPDATABLE:
        raise YimError("bad_request", f"nothing to update (settable: {', '.join(sorted(UPDATABLE))})")
    limit = changes.get("max_members")
    if limit is not None and int(limit) < group.member_count:  # type: ignore[call-overload]
        raise YimError("bad_request", f"the group already has {group.member_count} members")
    return sorted(changes)


def check_dissolve(conv_id: int, actor_role: str | None) -> None:
    if require_member(actor_role, conv_id) != "owner":
        raise YimError("forbidden", "only the owner may dissolve the group")


def check_view(group: GroupRec, ever_member: bool) -> GroupRec:
    """Anyone may see an open group; others only members, past or present."""
    if not ever_member and group.join_policy != "open":
        raise YimError("not_member", f"you are not a member of group {group.conv_id}")
    return group


def receipt_sender(sender_id: int | None, conv_id: int, seq: int) -> int:
    """The sender of the message whose receipts are asked for; it must exist."""
    if sender_id is None:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    return sender_id


def system_entry(actor_id: int, msg_id: int, now: int, event: str, **fields: object) -> Entry:
    """The timeline entry announcing a group change, kind "system", never counted as unread."""
    body = msgspec.json.encode({"event": event, "actor": str(actor_id), **fields})
    return Entry(msg_id, actor_id, "", "system", body, f"system:{msg_id}", now, uncounted=True)
