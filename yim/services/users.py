"""User profiles: batch lookup, so clients resolve member and sender names in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from yim.protocol.errors import YimError
from yim.protocol.frames import UserOut, Users, UsersPage
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device


async def users(node: Context, session: SessionRec, req: Users, origin: Device | None = None) -> UsersPage:
    """Public profiles of up to 500 users; unknown ids are left out."""
    ids = list(dict.fromkeys(parse_id(u, "user") for u in req.user_ids))
    found = await node.store.users_by_ids(ids)
    return UsersPage(users=[user_out(found[i]) for i in ids if i in found])


async def user(node: Context, user_id: int) -> UserOut:
    """One user's public profile, or ``not_found``."""
    found = await node.store.users_by_ids([user_id])
    if user_id not in found:
        raise YimError("not_found", f"no user {user_id}")
    return user_out(found[user_id])


async def user_named(node: Context, username: str) -> UserOut:
    """The profile of the user with this name, or ``not_found``."""
    rec = await node.store.user_by_name(username)
    if rec is None:
        raise YimError("not_found", f"no user named {username!r}")
    return user_out(rec)
