"""Group chat: create, invite / join, leave / remove, roles, mute, settings, dissolve.

Each action validates its request, lets the store apply the change together with the
system entry that announces it (one transaction, permissions checked inside it), and
publishes that entry like any message. Roles: the owner manages everything; admins manage
members (not other admins) and settings; members chat, and invite when the group's
``join_policy`` allows.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import (
    GroupChangeOut,
    GroupCreate,
    GroupDissolve,
    GroupInfo,
    GroupInvite,
    GroupJoin,
    GroupLeave,
    GroupMembers,
    GroupMute,
    GroupOut,
    GroupRemove,
    GroupRole,
    GroupUpdate,
    MemberOut,
    MembersPage,
)
from yim.protocol.ids import parse_id
from yim.services.delivery import publish_entry
from yim.storage.records import CreateGroupCmd, GroupChange, GroupRec, SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device


def _now() -> int:
    return int(time.time() * 1000)


def group_out(g: GroupRec) -> GroupOut:
    return GroupOut(
        conv_id=str(g.conv_id),
        name=g.name,
        avatar=g.avatar,
        announcement=g.announcement,
        owner_id=str(g.owner_id),
        join_policy=g.join_policy,
        mute_all=g.mute_all,
        max_members=g.max_members,
        member_count=g.member_count,
        fanout=g.fanout,
        last_seq=g.last_seq,
        created_at=g.created_at,
        dissolved=g.dissolved,
        pin_policy=g.pin_policy,
    )


async def changed(node: Context, change: GroupChange, origin: Device | None) -> GroupChangeOut:
    """The reply to a group change, after publishing its system entry (and recording its
    group_changed webhook event, when a hook takes them)."""
    entry = change.entry
    out = GroupChangeOut(
        group=group_out(change.group),
        seq=entry.message.seq if entry else None,
        inbox_seq=entry.sender_inbox_seq if entry else 0,
    )
    if entry is not None:
        publish_entry(node, entry, origin)
        if node.hooks is not None:
            m = entry.message
            await node.hooks.emit(
                "group_changed",
                m.msg_id,
                {
                    "conv_id": str(m.conv_id),
                    "seq": m.seq,
                    "actor_id": str(m.sender_id),
                    "change": msgspec.Raw(m.body),
                    "group": out.group,
                },
            )
    return out


async def create_group(
    node: Context, session: SessionRec, req: GroupCreate, origin: Device | None = None
) -> GroupChangeOut:
    if node.words is not None:  # sensitive words (yim/services/words.py)
        req = node.words.fields(req, "name", "announcement", what="the group")
    settings = node.settings
    max_members = min(req.max_members or settings.group_max_members, settings.group_max_members)
    conv_id = node.ids.next_id()
    cmd = CreateGroupCmd(
        conv_id=conv_id,
        msg_id=node.ids.next_id(),
        owner_id=session.user_id,
        member_ids=[parse_id(u, "user") for u in req.members],
        name=req.name,
        announcement=req.announcement,
        avatar=req.avatar,
        join_policy=req.join_policy,
        max_members=max_members,
        threshold=settings.group_write_fanout_max,
        created_at=_now(),
    )
    return await changed(node, await node.store.create_group(cmd), origin)


async def invite(node: Context, session: SessionRec, req: GroupInvite, origin: Device | None = None) -> GroupChangeOut:
    change = await node.store.add_members(
        parse_id(req.conv_id, "group"),
        session.user_id,
        [parse_id(u, "user") for u in req.user_ids],
        "invite",
        node.ids.next_id(),
        _now(),
        node.settings.group_write_fanout_max,
    )
    return await changed(node, change, origin)


async def join(node: Context, session: SessionRec, req: GroupJoin, origin: Device | None = None) -> GroupChangeOut:
    change = await node.store.add_members(
        parse_id(req.conv_id, "group"),
        session.user_id,
        [session.user_id],
        "join",
        node.ids.next_id(),
        _now(),
        node.settings.group_write_fanout_max,
    )
    return await changed(node, change, origin)


async def leave(node: Context, session: SessionRec, req: GroupLeave, origin: Device | None = None) -> GroupChangeOut:
    change = await node.store.remove_member(
        parse_id(req.conv_id, "group"), session.user_id, session.user_id, node.ids.next_id(), _now()
    )
    return await changed(node, change, origin)


async def remove(node: Context, session: SessionRec, req: GroupRemove, origin: Device | None = None) -> GroupChangeOut:
    target = parse_id(req.user_id, "user")
    if target == session.user_id:
        raise YimError("bad_request", "use group_leave to leave a group")
    change = await node.store.remove_member(
        parse_id(req.conv_id, "group"), session.user_id, target, node.ids.next_id(), _now()
    )
    return await changed(node, change, origin)


async def set_role(node: Context, session: SessionRec, req: GroupRole, origin: Device | None = None) -> GroupChangeOut:
    change = await node.store.set_role(
        parse_id(req.conv_id, "group"),
        session.user_id,
        parse_id(req.user_id, "user"),
        req.role,
        node.ids.next_id(),
        _now(),
    )
    return await changed(node, change, origin)


async def mute(node: Context, session: SessionRec, req: GroupMute, origin: Device | None = None) -> GroupChangeOut:
    now = _now()
    until = now + req.duration_s * 1000 if req.duration_s else 0
    change = await node.store.mute_member(
        parse_id(req.conv_id, "group"), session.user_id, parse_id(req.user_id, "user"), until, node.ids.next_id(), now
    )
    return await changed(node, change, origin)


async def update(node: Context, session: SessionRec, req: GroupUpdate, origin: Device | None = None) -> GroupChangeOut:
    if node.words is not None:  # sensitive words (yim/services/words.py)
        req = node.words.fields(req, "name", "announcement", what="the group")
    changes: dict[str, object] = {
        name: getattr(req, name)
        for name in ("name", "avatar", "announcement", "join_policy", "mute_all", "max_members", "pin_policy")
        if getattr(req, name) is not None
    }
    if "max_members" in changes:
        changes["max_members"] = min(int(changes["max_members"]), node.settings.group_max_members)  # type: ignore[call-overload]
    change = await node.store.update_group(
        parse_id(req.conv_id, "group"), session.user_id, changes, node.ids.next_id(), _now()
    )
    return await changed(node, change, origin)


async def dissolve(
    node: Context, session: SessionRec, req: GroupDissolve, origin: Device | None = None
) -> GroupChangeOut:
    change = await node.store.dissolve_group(
        parse_id(req.conv_id, "group"), session.user_id, node.ids.next_id(), _now()
    )
    return await changed(node, change, origin)


async def info(node: Context, session: SessionRec, req: GroupInfo, origin: Device | None = None) -> GroupOut:
    return group_out(await node.store.group_info(parse_id(req.conv_id, "group"), session.user_id))


async def members(node: Context, session: SessionRec, req: GroupMembers, origin: Device | None = None) -> MembersPage:
    after = parse_id(req.after, "user") if req.after else 0
    rows = await node.store.group_members(parse_id(req.conv_id, "group"), session.user_id, after, req.limit)
    return MembersPage(
        members=[
            MemberOut(user_id=str(m.user_id), role=m.role, joined_seq=m.joined_seq, muted_until=m.muted_until)
            for m in rows
        ],
        next_after=str(rows[-1].user_id) if len(rows) == req.limit else None,
    )
