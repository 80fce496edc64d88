"""Conversations: the list with unread counts, read markers, and history paging.

Unread counts are derived (``last_seq - read_seq``) in the same read as the list, so the
per-conversation numbers always add up to the total. Marking read on one device writes a
``read`` event to the user's inbox: the other devices get it pushed or by sync, and
converge on the same counts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from yim.protocol.errors import YimError
from yim.protocol.frames import ConversationOut, ConversationPage, HistoryPage, ReadResult
from yim.services.accounts import user_out
from yim.services.messages import parse_id
from yim.services.wire import message_out, read_json
from yim.storage.base import SessionRec

if TYPE_CHECKING:
    from yim.gateway.connection import Connection
    from yim.node import Node


async def list_conversations(node: Node, session: SessionRec, before: int | None, limit: int) -> ConversationPage:
    rows, total = await node.store.conversations(session.user_id, before, limit)
    peers = await node.store.users_by_ids(sorted({r.peer_id for r in rows if r.peer_id is not None}))
    out = [
        ConversationOut(
            conv_id=str(r.conv_id),
            type=r.type,
            peer=user_out(peers[r.peer_id]) if r.peer_id in peers else None,
            last_seq=r.last_seq,
            read_seq=r.read_seq,
            unread=r.last_seq - r.read_seq,
            updated_at=r.updated_at,
            last_message=message_out(r.last_message) if r.last_message else None,
        )
        for r in rows
    ]
    next_before = rows[-1].last_msg_id if len(rows) == limit else None
    return ConversationPage(conversations=out, total_unread=total, next_before=next_before)


async def mark_read(
    node: Node, session: SessionRec, conv_id: str, seq: int, origin: Connection | None = None
) -> ReadResult:
    cid = parse_id(conv_id, "conversation")
    res = await node.store.mark_read(session.user_id, cid, seq, int(time.time() * 1000))
    if res.inbox_seq is not None:
        node.bus.publish_event([(session.user_id, res.inbox_seq)], "read", read_json(cid, res.read_seq), origin)
    return ReadResult(conv_id=conv_id, read_seq=res.read_seq, unread=res.unread, total_unread=res.total_unread)


async def history(
    node: Node, session: SessionRec, conv_id: str, before: int | None, after: int | None, limit: int
) -> HistoryPage:
    if before is not None and after is not None:
        raise YimError("bad_request", "give at most one of `before` and `after`")
    limit = min(limit, node.settings.history_page_max)
    msgs, more = await node.store.history(session.user_id, parse_id(conv_id, "conversation"), before, after, limit)
    return HistoryPage(messages=[message_out(m) for m in msgs], has_more=more)
