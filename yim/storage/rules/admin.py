"""Server-role rules: who may take an admin action, and on whom."""

from __future__ import annotations

from yim.protocol.errors import YimError
from yim.storage.admin import AccountRec


def require_admin(actor_id: int | None, actor: AccountRec | None) -> None:
    """An admin action's actor: the operator on the host (``actor_id`` None), or a server
    admin whose account is not disabled. Anyone else is refused with ``forbidden``."""
    if actor_id is None:
        return
    if actor is None or not actor.is_admin or actor.disabled_at is not None:
        raise YimError("forbidden", "server admins only")


def target_account(user_id: int, target: AccountRec | None) -> AccountRec:
    if target is None:
        raise YimError("not_found", f"no user {user_id}")
    return target


def may_disable(actor_id: int | None, target: AccountRec) -> None:
    """An admin cannot disable their own account (they would lock themself out mid-action),
    nor take back their own role: another admin, or the operator on the host, must."""
    if actor_id is not None and actor_id == target.id:
        raise YimError("bad_request", "an admin cannot disable or demote their own account")


def may_sign_in(disabled_at: int | None) -> None:
    """A disabled account gets no new session (checked in the login's own transaction, so a
    login racing a disable cannot slip a session past it)."""
    if disabled_at is not None:
        raise YimError("account_disabled", "this account is disabled")


def may_transfer(conv_id: int, user_id: int, role: str | None) -> None:
    """An admin hands a group to one of its current members (the old owner stays on as a
    group admin, as in a transfer by the owner)."""
    if role is None:
        raise YimError("not_found", f"user {user_id} is not a member of group {conv_id}")
    if role == "owner":
        raise YimError("bad_request", f"user {user_id} owns group {conv_id} already")


def shop_owner(shop_id: int, owner_id: int | None) -> int:
    """The owner of the shop an admin acts on (the admin acts with the owner's rights)."""
    if owner_id is None:
        raise YimError("not_found", f"no shop {shop_id}")
    return owner_id
