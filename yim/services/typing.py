"""Typing indicator: ephemeral, forwarded to the other members' online devices, never
stored, at most one per (user, conversation) per ``typing_interval_s`` (``node.typing``:
yim.gateway.limits.TypingLimiter, counted for the whole node when it has workers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import Typing, TypingNotice
from yim.protocol.ids import parse_id
from yim.services.conversations import direct_peer_blocked
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device


async def typing(node: Context, session: SessionRec, req: Typing, origin: Device | None = None) -> dict[str, bool]:
    conv_id = parse_id(req.conv_id, "conversation")
    members = await node.rosters.members(conv_id)
    if session.user_id not in members:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    forwarded = node.typing.allow(session.user_id, conv_id)
    # After the limiter, so that at most one signal per interval costs the store reads.
    if forwarded and len(members) == 2 and await direct_peer_blocked(node, session.user_id, conv_id):
        forwarded = False  # one-to-one, and a block stands between the two (§8.2)
    if forwarded:
        payload = msgspec.json.encode(TypingNotice(conv_id=req.conv_id, user_id=str(session.user_id)))
        node.bus.publish_notice(members, "typing", payload, origin, skip={session.user_id})
    return {"forwarded": forwarded}
