"""Reactions and pins.

A reaction is not a timeline entry: it never counts as unread and never moves its
conversation in the list. Under write fan-out each member's inbox gets a ``reaction``
event (so a device offline now converges on its next sync); under read fan-out nothing is
written per member: online devices get a ``reaction`` notice, and a device that missed
some sees the group's ``reaction_ver`` ahead of its own in sync and pulls ``reactions``.
A pin or unpin is a ``system`` entry in the timeline, delivered like any group change.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from yim.protocol.errors import YimError
from yim.protocol.frames import (
    MessageReactionsOut,
    Pin,
    PinnedOut,
    PinOut,
    React,
    ReactionOut,
    Reactions,
    ReactionsPage,
    Reactors,
    ReactorsPage,
    ReactOut,
    Unpin,
)
from yim.protocol.ids import parse_id
from yim.services.delivery import publish_entry
from yim.storage.reactions import PinRec, ReactionChange, ReactionCount
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device

# C0 control characters have no place in an emoji; nor has blank space alone.
_CONTROLS = frozenset(chr(c) for c in range(32)) | {"\x7f"}


def reactions_out(rs: tuple[ReactionCount, ...]) -> list[ReactionOut]:
    return [ReactionOut(emoji=r.emoji, count=r.count, me=r.me) for r in rs]


def pinned_out(pins: list[PinRec]) -> list[PinnedOut]:
    return [PinnedOut(seq=p.seq, msg_id=str(p.msg_id), pinned_by=str(p.pinned_by), pinned_at=p.pinned_at) for p in pins]


def publish_change(node: Context, conv_id: int, change: ReactionChange, origin: Device | None) -> None:
    """Tell the conversation's devices about a reaction change (an erasure's too)."""
    if change.changed:
        if change.deliveries:
            node.bus.publish_event(change.deliveries, "reaction", change.payload, origin)
        if change.fanout == "read":
            node.rosters.push_notice(conv_id, "reaction", change.payload, origin)


async def react(node: Context, session: SessionRec, req: React, origin: Device | None = None) -> ReactOut:
    if not _CONTROLS.isdisjoint(req.emoji) or not req.emoji.strip():
        raise YimError("bad_request", "emoji must be a visible emoji or sticker code")
    node.limits.check_react(session.user_id)
    conv_id = parse_id(req.conv_id, "conversation")
    change = await node.store.reactions.react(
        conv_id,
        session.user_id,
        req.seq,
        req.emoji,
        not req.remove,
        int(time.time() * 1000),
        node.settings.reactions_per_user_max,
    )
    publish_change(node, conv_id, change, origin)
    inbox_seq = next((s for u, s in change.deliveries if u == session.user_id), 0)
    return ReactOut(
        conv_id=req.conv_id,
        seq=change.seq,
        msg_id=str(change.msg_id),
        changed=change.changed,
        reactions=reactions_out(change.reactions),
        ver=change.ver,
        inbox_seq=inbox_seq,
    )


async def reactions(node: Context, session: SessionRec, req: Reactions, origin: Device | None = None) -> ReactionsPage:
    conv_id = parse_id(req.conv_id, "conversation")
    items, ver, more = await node.store.reactions.changed_since(conv_id, session.user_id, req.after_ver, req.limit)
    return ReactionsPage(
        conv_id=req.conv_id,
        messages=[
            MessageReactionsOut(seq=m.seq, msg_id=str(m.msg_id), reactions=reactions_out(m.reactions)) for m in items
        ],
        ver=ver,
        has_more=more,
    )


async def reactors(node: Context, session: SessionRec, req: Reactors, origin: Device | None = None) -> ReactorsPage:
    conv_id = parse_id(req.conv_id, "conversation")
    after = parse_id(req.after, "cursor") if req.after is not None else 0
    users = await node.store.reactions.reactors(conv_id, session.user_id, req.seq, req.emoji, after, req.limit)
    return ReactorsPage(users=[str(u) for u in users], next_after=str(users[-1]) if len(users) == req.limit else None)


async def _pin(node: Context, session: SessionRec, conv_id: str, seq: int, on: bool, origin: Device | None) -> PinOut:
    cid = parse_id(conv_id, "conversation")
    change = await node.store.reactions.pin(
        cid, session.user_id, seq, on, node.ids.next_id(), int(time.time() * 1000), node.settings.pins_max
    )
    if change.entry is not None:
        publish_entry(node, change.entry, origin)
    return PinOut(
        conv_id=conv_id,
        seq=seq,
        pinned=on,
        entry_seq=change.entry.message.seq if change.entry is not None else None,
        inbox_seq=change.entry.sender_inbox_seq if change.entry is not None else 0,
    )


async def pin(node: Context, session: SessionRec, req: Pin, origin: Device | None = None) -> PinOut:
    """Pin a message: groups by their ``pin_policy``, one-to-one conversations both users."""
    return await _pin(node, session, req.conv_id, req.seq, True, origin)


async def unpin(node: Context, session: SessionRec, req: Unpin, origin: Device | None = None) -> PinOut:
    return await _pin(node, session, req.conv_id, req.seq, False, origin)
