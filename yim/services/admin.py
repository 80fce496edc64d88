"""Server administration: the admin_* ops, and the self-service account changes.

Each admin action is one function here that validates its request, asks the store to make
the change — which checks that the actor is a server admin and appends the audit row in the
same transaction (yim/storage/admin.py) — and then tells the devices concerned (ended
sessions are closed on every node). Reads check the actor the same way, inside their read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from yim.protocol import frames as f
from yim.protocol.close import CLOSE_DISABLED, CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.services.context import REQUEST_SOURCE
from yim.services.groups import changed, group_out
from yim.services.service import agent_out, shop_out
from yim.services.users import avatar_media_id, profile_changed
from yim.storage.admin import AccountRec, AuditEntry, AuditRec
from yim.storage.records import SessionRec
from yim.storage.rules.admin import require_admin

if TYPE_CHECKING:
    from yim.services.context import Context, Device

_encode = msgspec.json.encode
_detail = msgspec.json.Decoder(dict[str, Any])


def _now() -> int:
    return int(time.time() * 1000)


def audit_entry(action: str, target: str, **detail: Any) -> AuditEntry:
    """The audit row of an action on ``target`` ("user:<id>", "group:<id>"), from where the
    request being served came."""
    return AuditEntry(
        at=_now(),
        source=REQUEST_SOURCE.get() or "unknown",
        action=action,
        target=target,
        detail=_encode({k: v for k, v in detail.items() if v not in ("", None)}),
    )


def actor_and_user(session: SessionRec | None, user_id: str) -> tuple[int | None, int]:
    """The actor of an action on a user (None: the operator on the host, who has no
    session) and the user's id, checked."""
    return (session.user_id if session is not None else None), parse_id(user_id, "user")


def account_out(a: AccountRec) -> f.AdminUserOut:
    return f.AdminUserOut(
        user_id=str(a.id),
        username=a.username,
        display_name=a.display_name,
        created_at=a.created_at,
        admin=a.is_admin,
        disabled_at=a.disabled_at,
    )


def audit_out(r: AuditRec) -> f.AuditOut:
    return f.AuditOut(
        id=str(r.id),
        at=r.at,
        actor_id=None if r.actor_id is None else str(r.actor_id),
        action=r.action,
        target=r.target,
        detail=_detail.decode(r.detail),
        source=r.source,
    )


# --- reads --------------------------------------------------------------------------------------


async def users(node: Context, session: SessionRec, req: f.AdminUsers, origin: Device | None = None) -> f.AdminUserPage:
    after = parse_id(req.after, "user") if req.after else 0
    found = await node.store.admin.find_users(session.user_id, req.q.strip(), after, req.limit + 1)
    more = len(found) > req.limit
    page = found[: req.limit]
    return f.AdminUserPage(users=[account_out(a) for a in page], next_after=str(page[-1].id) if more and page else None)


async def user(node: Context, session: SessionRec, req: f.AdminUser, origin: Device | None = None) -> f.AdminUserDetail:
    user_id = parse_id(req.user_id, "user")
    account, facts = await node.store.admin.user_facts(session.user_id, user_id)
    devices = await node.store.list_devices(user_id)
    c = await node.store.relations.counts(user_id)
    return f.AdminUserDetail(
        user=account_out(account),
        devices=[
            f.AdminDeviceOut(
                device_id=d.device_id,
                platform=d.platform,
                name=d.name,
                created_at=d.created_at,
                last_seen_at=d.last_seen_at,
            )
            for d in devices
        ],
        groups=[f.AdminGroupOut(conv_id=str(g[0]), name=g[1], role=g[2]) for g in facts.groups],
        counts=f.CountsOut(user_id=str(user_id), friends=c.friends, followers=c.followers, following=c.following),
        message_count=facts.message_count,
    )


async def audit(node: Context, session: SessionRec, req: f.AdminAudit, origin: Device | None = None) -> f.AuditPage:
    before = parse_id(req.before, "audit entry") if req.before else None
    rows = await node.store.admin.audit(session.user_id, before, req.limit + 1)
    more = len(rows) > req.limit
    page = rows[: req.limit]
    return f.AuditPage(entries=[audit_out(r) for r in page], next_before=str(page[-1].id) if more and page else None)


# --- actions --------------------------------------------------------------------------------------


async def disable(
    node: Context, session: SessionRec | None, req: f.AdminDisable, origin: Device | None = None
) -> f.AdminUserOut:
    """Disable an account: every session ends (live connections close with 4007 on every
    node), logins are refused with ``account_disabled``; its messages stay."""
    actor, user_id = actor_and_user(session, req.user_id)
    account, revoked = await node.store.admin.set_disabled(
        actor, user_id, True, audit_entry("disable", f"user:{user_id}", reason=req.reason)
    )
    node.accounts.sessions_ended(user_id, revoked, "account disabled", CLOSE_DISABLED)
    return account_out(account)


async def enable(
    node: Context, session: SessionRec | None, req: f.AdminEnable, origin: Device | None = None
) -> f.AdminUserOut:
    actor, user_id = actor_and_user(session, req.user_id)
    account, _ = await node.store.admin.set_disabled(
        actor, user_id, False, audit_entry("enable", f"user:{user_id}", reason=req.reason)
    )
    return account_out(account)


async def reset_password(
    node: Context, session: SessionRec | None, req: f.AdminResetPassword, origin: Device | None = None
) -> f.RevokedOut:
    """A new password chosen by the admin; every session of the user ends."""
    actor, user_id = actor_and_user(session, req.user_id)
    if actor is not None:
        # Refused before the costly hash (the store checks again, in the transaction that acts).
        require_admin(actor, await node.store.admin.account(actor))
    pw_hash = await node.accounts.hash_password(req.password)
    entry = audit_entry("reset_password", f"user:{user_id}", reason=req.reason)
    revoked = await node.store.admin.set_password(actor, user_id, pw_hash, None, entry.at, entry)
    node.accounts.sessions_ended(user_id, revoked, "password reset by an admin", CLOSE_REVOKED)
    return f.RevokedOut(revoked=len(revoked))


async def revoke(
    node: Context, session: SessionRec | None, req: f.AdminRevoke, origin: Device | None = None
) -> f.RevokedOut:
    actor, user_id = actor_and_user(session, req.user_id)
    entry = audit_entry("revoke", f"user:{user_id}", device_id=req.device_id, reason=req.reason)
    revoked = await node.store.admin.revoke_devices(actor, user_id, req.device_id, entry)
    node.accounts.sessions_ended(user_id, revoked, "signed out by an admin", CLOSE_REVOKED)
    return f.RevokedOut(revoked=len(revoked))


async def set_role(
    node: Context, session: SessionRec | None, req: f.AdminSetRole, origin: Device | None = None
) -> f.AdminUserOut:
    actor, user_id = actor_and_user(session, req.user_id)
    entry = audit_entry("set_role", f"user:{user_id}", admin=req.admin, reason=req.reason)
    return account_out(await node.store.admin.set_admin(actor, user_id, req.admin, entry))


# --- groups --------------------------------------------------------------------------------------


async def groups(
    node: Context, session: SessionRec, req: f.AdminGroups, origin: Device | None = None
) -> f.AdminGroupPage:
    after = parse_id(req.after, "group") if req.after else 0
    found = await node.store.admin.find_groups(session.user_id, req.q.strip(), after, req.limit + 1)
    more = len(found) > req.limit
    page = found[: req.limit]
    return f.AdminGroupPage(
        groups=[group_out(g) for g in page], next_after=str(page[-1].conv_id) if more and page else None
    )


async def group(node: Context, session: SessionRec, req: f.AdminGroup, origin: Device | None = None) -> f.GroupOut:
    return group_out(await node.store.admin.group(session.user_id, parse_id(req.conv_id, "group")))


async def group_dissolve(
    node: Context, session: SessionRec, req: f.AdminGroupDissolve, origin: Device | None = None
) -> f.GroupChangeOut:
    """Dissolve any group: members get the "dissolved" entry (its actor: the admin), as
    when the owner dissolves it."""
    conv_id = parse_id(req.conv_id, "group")
    entry = audit_entry("group_dissolve", f"group:{conv_id}", reason=req.reason)
    change = await node.store.admin.dissolve_group(session.user_id, conv_id, node.ids.next_id(), entry.at, entry)
    return await changed(node, change, origin)


async def group_transfer(
    node: Context, session: SessionRec, req: f.AdminGroupTransfer, origin: Device | None = None
) -> f.GroupChangeOut:
    conv_id, user_id = parse_id(req.conv_id, "group"), parse_id(req.user_id, "user")
    entry = audit_entry("group_transfer", f"group:{conv_id}", user_id=str(user_id), reason=req.reason)
    change = await node.store.admin.transfer_group(
        session.user_id, conv_id, user_id, node.ids.next_id(), entry.at, entry
    )
    return await changed(node, change, origin)


# --- shops ---------------------------------------------------------------------------------------


async def shop_create(
    node: Context, session: SessionRec, req: f.AdminShopCreate, origin: Device | None = None
) -> f.ShopOut:
    """A customer-service shop for a user (say, a company's account), who administers it."""
    owner_id = parse_id(req.owner_id, "user")
    shop_id = node.ids.next_id()
    entry = audit_entry("shop_create", f"shop:{shop_id}", owner_id=str(owner_id), name=req.name, reason=req.reason)
    return shop_out(await node.store.admin.create_shop(session.user_id, shop_id, req.name, owner_id, entry.at, entry))


async def shop_agent_set(
    node: Context, session: SessionRec, req: f.AdminShopAgentSet, origin: Device | None = None
) -> f.AgentOut:
    """Add an agent to any shop or change its role, skills and capacity, as the shop's
    owner could; waiting customers are routed to it as then."""
    shop_id, user_id = parse_id(req.shop_id, "shop"), parse_id(req.user_id, "user")
    skills = list(dict.fromkeys(req.skills))
    entry = audit_entry(
        "shop_agent_set",
        f"shop:{shop_id}",
        user_id=str(user_id),
        role=req.role,
        skills=skills,
        capacity=req.capacity,
        reason=req.reason,
    )
    agent, events = await node.store.admin.set_shop_agent(
        session.user_id, shop_id, user_id, req.role, skills, req.capacity, entry.at, entry
    )
    node.service.publish(events, origin)
    await node.service.agent_added(agent.user_id)
    return agent_out(node, agent)


# --- self-service ---------------------------------------------------------------------------------


async def password_change(
    node: Context, session: SessionRec, req: f.PasswordChange, origin: Device | None = None
) -> f.RevokedOut:
    """The user's own new password: the old one must match; every other session ends (this
    one goes on)."""
    found = await node.store.users_by_ids([session.user_id])
    me = found.get(session.user_id)
    if me is None or not await node.accounts.check_password(me.password_hash, req.old_password):
        raise YimError("wrong_password", "the old password is not this account's")
    pw_hash = await node.accounts.hash_password(req.new_password)
    revoked = await node.store.admin.set_password(session.user_id, session.user_id, pw_hash, session.id, _now(), None)
    node.accounts.sessions_ended(session.user_id, revoked, "password changed", CLOSE_REVOKED)
    return f.RevokedOut(revoked=len(revoked))


async def profile_set(node: Context, session: SessionRec, req: f.ProfileSet, origin: Device | None = None) -> f.UserOut:
    """The user's own display name (empty: the username, as at registration) and avatar
    (``""``: none); a field left out stays. A change is told to those who show the user."""
    found = await node.store.users_by_ids([session.user_id])
    me = found.get(session.user_id)
    if me is None:
        raise YimError("not_found", "no such user")
    after = me
    if req.avatar is not None:
        media_id = await avatar_media_id(node, session.user_id, req.avatar)
        if media_id != me.avatar_media_id:
            await node.store.admin.set_avatar(session.user_id, media_id)
            after = msgspec.structs.replace(after, avatar_media_id=media_id)
    if req.display_name is not None:
        name = req.display_name.strip() or me.username
        if node.words is not None:  # as at registration: others see the name (sensitive words)
            name = node.words.apply(name, "the display name")
        if name != me.display_name:
            account = await node.store.admin.set_display_name(session.user_id, name)
            after = msgspec.structs.replace(after, display_name=account.display_name)
    out = user_out(after)
    if after != me:
        await profile_changed(node, out, origin)
    return out
