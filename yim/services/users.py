"""User profiles: batch lookup, so clients resolve member and sender names in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from yim.protocol.frames import Users, UsersPage
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.gateway.connection import Connection
    from yim.node import Node


async def users(node: Node, session: SessionRec, req: Users, origin: Connection | None = None) -> UsersPage:
    """Public profiles of up to 500 users; unknown ids are left out."""
    ids = list(dict.fromkeys(parse_id(u, "user") for u in req.user_ids))
    found = await node.store.users_by_ids(ids)
    return UsersPage(users=[user_out(found[i]) for i in ids if i in found])
