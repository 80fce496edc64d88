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
from yim.protocol.frames import (
    Conversation,
    ConversationOut,
    ConversationPage,
    HistoryPage,
    ReadResult,
    Receipts,
    ReceiptsOut,
)
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.services.reactions import pinned_out, reactions_out
from yim.services.sync import within_budget
from yim.services.wire import message_out, read_json, receipt_json
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device


async def direct_peer_blocked(node: Context, user_id: int, conv_id: int) -> bool:
    """Is conv_id a one-to-one conversation of user_id with someone they block, or who
    blocks them? (Between the two, a block stops typing and read receipts too, §8.2.)"""
    rows, _total = await node.store.conversations(user_id, None, 1, conv_id)
    if not rows or rows[0].type != "direct" or rows[0].peer_id is None:
        return False
    return bool(await node.store.relations.blocked_either_way(user_id, [rows[0].peer_id]))


async def list_conversations(
    node: Context, session: SessionRec, before: str | None, limit: int, conv_id: int | None = None
) -> ConversationPage:
    rows, total = await node.store.conversations(
        session.user_id, parse_id(before, "cursor") if before is not None else None, limit, conv_id
    )
    kept = within_budget(rows, lambda r: len(r.last_message.body) if r.last_message else 0)
    more = len(rows) == limit or len(kept) < len(rows)
    rows = kept
    peers = await node.store.users_by_ids(sorted({r.peer_id for r in rows if r.peer_id is not None}))
    # A block (either way) hides each one's reads from the other (docs/protocol.md §8.2).
    readers = sorted({r.peer_id for r in rows if r.type == "direct" and r.peer_id is not None and r.peer_read_seq})
    hidden = await node.store.relations.blocked_either_way(session.user_id, readers) if readers else set()
    conv_ids = [r.conv_id for r in rows]
    pinned = await node.store.reactions.pins(conv_ids)
    versions = await node.store.reactions.versions(conv_ids)
    out = [
        ConversationOut(
            conv_id=str(r.conv_id),
            type=r.type,
            peer=user_out(peers[r.peer_id]) if r.peer_id in peers else None,
            name=r.name,
            member_count=r.member_count,
            active=r.active,
            last_seq=r.last_seq,
            read_seq=r.read_seq,
            unread=r.unread,
            mentioned=r.mentioned,
            peer_read_seq=0 if r.peer_id in hidden else r.peer_read_seq,
            shop_id=str(r.shop_id) if r.shop_id else None,
            customer_id=str(r.customer_id) if r.customer_id else None,
            updated_at=r.updated_at,
            last_message=message_out(r.last_message) if r.last_message else None,
            pinned=pinned_out(pinned.get(r.conv_id, [])),
            reaction_ver=versions.get(r.conv_id, 0),
        )
        for r in rows
    ]
    next_before = str(rows[-1].last_msg_id) if more and rows else None
    return ConversationPage(conversations=out, total_unread=total, next_before=next_before)


async def conversation(
    node: Context, session: SessionRec, req: Conversation, origin: Device | None = None
) -> ConversationOut:
    """One conversation of the user, as it appears in the list."""
    page = await list_conversations(node, session, None, 1, parse_id(req.conv_id, "conversation"))
    if not page.conversations:
        raise YimError("not_member", f"you are not a member of conversation {req.conv_id}")
    return page.conversations[0]


async def mark_read(
    node: Context, session: SessionRec, conv_id: str, seq: int, origin: Device | None = None
) -> ReadResult:
    cid = parse_id(conv_id, "conversation")
    res = await node.store.mark_read(session.user_id, cid, seq, int(time.time() * 1000))
    if res.inbox_seq is not None:
        node.bus.publish_event([(session.user_id, res.inbox_seq)], "read", read_json(cid, res.read_seq), origin)
    if res.receipt is not None:
        peer_id, peer_seq = res.receipt
        node.bus.publish_event([(peer_id, peer_seq)], "receipt", receipt_json(cid, session.user_id, res.read_seq))
    return ReadResult(
        conv_id=conv_id,
        read_seq=res.read_seq,
        unread=res.unread,
        total_unread=res.total_unread,
        inbox_seq=res.inbox_seq or 0,
    )


async def history(
    node: Context, session: SessionRec, conv_id: str, before: int | None, after: int | None, limit: int
) -> HistoryPage:
    if before is not None and after is not None:
        raise YimError("bad_request", "give at most one of `before` and `after`")
    limit = min(limit, node.settings.history_page_max)
    cid = parse_id(conv_id, "conversation")
    msgs, more = await node.store.history(session.user_id, cid, before, after, limit)
    # Keep the page within the reply budget: drop from the far end of the paging direction.
    if after is not None:
        kept = within_budget(msgs, lambda m: len(m.body))
    else:  # paging backwards: keep the newest, drop from the old end
        kept = within_budget(msgs[::-1], lambda m: len(m.body))[::-1]
    more = more or len(kept) < len(msgs)
    msgs = kept
    out = [message_out(m) for m in msgs]
    # Each message carries its reactions, "me" for the reader (what a reaction pull returns too).
    found = await node.store.reactions.reactions_of(cid, session.user_id, [m.seq for m in msgs if not m.recalled])
    for m in out:
        if (r := found.get(m.seq)) is not None:
            m.reactions = reactions_out(r.reactions)
    return HistoryPage(messages=out, has_more=more)


async def receipts(node: Context, session: SessionRec, req: Receipts, origin: Device | None = None) -> ReceiptsOut:
    """Who has read a message: derived from members' read markers, nothing stored per
    message. The list of readers is given for groups up to the write-fan-out threshold;
    above it only the counts (a list of up to 100,000 ids per query is not a chat feature)."""
    conv_id = parse_id(req.conv_id, "conversation")
    readers, total = await node.store.receipts(conv_id, session.user_id, req.seq)
    if readers and total == 1 and await direct_peer_blocked(node, session.user_id, conv_id):
        readers = []  # a block (either way) hides each one's reads from the other (§8.2)
    listed = total <= node.settings.group_write_fanout_max
    return ReceiptsOut(
        conv_id=req.conv_id,
        seq=req.seq,
        read_count=len(readers),
        total=total,
        readers=[str(u) for u in readers] if listed else None,
    )
