"""The relation chain (关系链): two-way friends, one-way follows, blocks, privacy.

Relations are independent of conversations: befriending needs no chat, chatting needs no
relation unless the recipient's ``dm_policy`` says "friends". Every change is written to
the inboxes of both parties as a ``relation`` event (blocks: only the blocker's), so
their other devices learn it live or by sync. A block is enforced on every path: direct
messages, friend requests, follows and presence.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from yim.protocol.errors import YimError
from yim.protocol.frames import (
    Block,
    Blocks,
    CountsOut,
    EdgeOut,
    EdgesPage,
    Follow,
    Followers,
    Following,
    FriendAccept,
    FriendCancel,
    FriendDelete,
    FriendOut,
    FriendReject,
    FriendRequest,
    FriendRequestOut,
    FriendRequests,
    FriendRequestsPage,
    Friends,
    FriendsPage,
    FriendUpdate,
    PrivacyGet,
    PrivacyOut,
    PrivacySet,
    Relation,
    RelationCountsReq,
    RelationOut,
    Unblock,
    Unfollow,
)
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.storage.records import SessionRec
from yim.storage.relations import EdgeRec, FriendRequestRec, InboxWrite, PrivacyRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device


def _now() -> int:
    return int(time.time() * 1000)


def _publish(node: Context, events: list[InboxWrite], origin: Device | None) -> None:
    # The requesting connection gets its own event pushed too (unlike a sent message, whose
    # reply carries the inbox seq): its cursor then has no gap to fill.
    for user_id, inbox_seq, payload in events:
        node.bus.publish_event([(user_id, inbox_seq)], "relation", payload)


def request_out(r: FriendRequestRec) -> FriendRequestOut:
    return FriendRequestOut(
        request_id=str(r.id),
        from_id=str(r.from_id),
        to_id=str(r.to_id),
        message=r.message,
        status=r.status,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _friendship_started(node: Context, req: FriendRequestRec) -> None:
    if req.status == "accepted":
        node.presence.share(req.from_id, req.to_id)


async def friend_request(
    node: Context, session: SessionRec, req: FriendRequest, origin: Device | None = None
) -> FriendRequestOut:
    if node.words is not None:  # the request's note is read by another user: sensitive words
        req = node.words.fields(req, "message", what="the friend request")
    rec, events = await node.store.relations.friend_request(
        node.ids.next_id(), session.user_id, parse_id(req.to, "user"), req.message, _now()
    )
    _publish(node, events, origin)
    _friendship_started(node, rec)
    return request_out(rec)


async def _respond(node: Context, session: SessionRec, request_id: str, action: str, origin: Device | None):
    rec, events = await node.store.relations.friend_respond(
        parse_id(request_id, "friend request"), session.user_id, action, _now()
    )
    _publish(node, events, origin)
    _friendship_started(node, rec)
    return request_out(rec)


async def friend_accept(
    node: Context, session: SessionRec, req: FriendAccept, origin: Device | None = None
) -> FriendRequestOut:
    return await _respond(node, session, req.request_id, "accept", origin)


async def friend_reject(
    node: Context, session: SessionRec, req: FriendReject, origin: Device | None = None
) -> FriendRequestOut:
    return await _respond(node, session, req.request_id, "reject", origin)


async def friend_cancel(
    node: Context, session: SessionRec, req: FriendCancel, origin: Device | None = None
) -> FriendRequestOut:
    return await _respond(node, session, req.request_id, "cancel", origin)


async def friend_delete(
    node: Context, session: SessionRec, req: FriendDelete, origin: Device | None = None
) -> dict[str, bool]:
    events = await node.store.relations.friend_delete(session.user_id, parse_id(req.user_id, "user"), _now())
    _publish(node, events, origin)
    return {"deleted": True}


async def friend_update(
    node: Context, session: SessionRec, req: FriendUpdate, origin: Device | None = None
) -> FriendOut:
    other = parse_id(req.user_id, "user")
    rec = await node.store.relations.friend_update(session.user_id, other, req.remark, req.tags)
    users = await node.store.users_by_ids([other])
    return FriendOut(user=user_out(users[other]), remark=rec.remark, tags=rec.tags, since=rec.created_at)


async def friends(node: Context, session: SessionRec, req: Friends, origin: Device | None = None) -> FriendsPage:
    after = parse_id(req.after, "user") if req.after else 0
    rows = await node.store.relations.friends(session.user_id, after, req.limit)
    users = await node.store.users_by_ids([r.friend_id for r in rows])
    return FriendsPage(
        friends=[
            FriendOut(user=user_out(users[r.friend_id]), remark=r.remark, tags=r.tags, since=r.created_at)
            for r in rows
            if r.friend_id in users
        ],
        next_after=str(rows[-1].friend_id) if len(rows) == req.limit else None,
    )


async def friend_requests(
    node: Context, session: SessionRec, req: FriendRequests, origin: Device | None = None
) -> FriendRequestsPage:
    before = parse_id(req.before, "friend request") if req.before else None
    rows = await node.store.relations.friend_requests(session.user_id, req.direction == "incoming", before, req.limit)
    return FriendRequestsPage(
        requests=[request_out(r) for r in rows], next_before=str(rows[-1].id) if len(rows) == req.limit else None
    )


async def _follow(node: Context, session: SessionRec, user_id: str, on: bool, origin: Device | None) -> RelationOut:
    target = parse_id(user_id, "user")
    _publish(node, await node.store.relations.follow(session.user_id, target, on, _now()), origin)
    return await _relation(node, session.user_id, target)


async def follow(node: Context, session: SessionRec, req: Follow, origin: Device | None = None) -> RelationOut:
    return await _follow(node, session, req.user_id, True, origin)


async def unfollow(node: Context, session: SessionRec, req: Unfollow, origin: Device | None = None) -> RelationOut:
    return await _follow(node, session, req.user_id, False, origin)


async def _block(node: Context, session: SessionRec, user_id: str, on: bool, origin: Device | None) -> RelationOut:
    target = parse_id(user_id, "user")
    _publish(node, await node.store.relations.block(session.user_id, target, on, _now()), origin)
    if on:  # the blocked user stops seeing my presence at once
        node.bus.publish_notice([target], "presence", node.presence.payload(session.user_id, ("offline", ())))
    return await _relation(node, session.user_id, target)


async def block(node: Context, session: SessionRec, req: Block, origin: Device | None = None) -> RelationOut:
    return await _block(node, session, req.user_id, True, origin)


async def unblock(node: Context, session: SessionRec, req: Unblock, origin: Device | None = None) -> RelationOut:
    return await _block(node, session, req.user_id, False, origin)


async def _edges_page(node: Context, rows: list[EdgeRec], limit: int) -> EdgesPage:
    users = await node.store.users_by_ids([r.user_id for r in rows])
    return EdgesPage(
        users=[EdgeOut(user=user_out(users[r.user_id]), since=r.created_at) for r in rows if r.user_id in users],
        next_after=str(rows[-1].user_id) if len(rows) == limit else None,
    )


async def _public_edges(
    node: Context, session: SessionRec, user_id: str | None, kind: str, after: str | None, limit: int
):
    target = parse_id(user_id, "user") if user_id else session.user_id
    if target != session.user_id and (await node.store.relations.relation(session.user_id, target)).blocked_by:
        raise YimError("blocked", "this user's lists are not visible to you")
    rows = await node.store.relations.edges(target, kind, parse_id(after, "user") if after else 0, limit)
    return await _edges_page(node, rows, limit)


async def followers(node: Context, session: SessionRec, req: Followers, origin: Device | None = None) -> EdgesPage:
    return await _public_edges(node, session, req.user_id, "followers", req.after, req.limit)


async def following(node: Context, session: SessionRec, req: Following, origin: Device | None = None) -> EdgesPage:
    return await _public_edges(node, session, req.user_id, "following", req.after, req.limit)


async def blocks(node: Context, session: SessionRec, req: Blocks, origin: Device | None = None) -> EdgesPage:
    after = parse_id(req.after, "user") if req.after else 0
    return await _edges_page(
        node, await node.store.relations.edges(session.user_id, "blocks", after, req.limit), req.limit
    )


async def _relation(node: Context, user_id: int, other_id: int) -> RelationOut:
    r = await node.store.relations.relation(user_id, other_id)
    return RelationOut(
        user_id=str(other_id),
        friend=r.friend,
        following=r.following,
        followed_by=r.followed_by,
        blocked=r.blocked,
        blocked_by=r.blocked_by,
        pending_request_id=str(r.pending_request_id) if r.pending_request_id else None,
    )


async def relation(node: Context, session: SessionRec, req: Relation, origin: Device | None = None) -> RelationOut:
    return await _relation(node, session.user_id, parse_id(req.user_id, "user"))


async def counts(node: Context, session: SessionRec, req: RelationCountsReq, origin: Device | None = None) -> CountsOut:
    target = parse_id(req.user_id, "user") if req.user_id else session.user_id
    c = await node.store.relations.counts(target)
    return CountsOut(user_id=str(target), friends=c.friends, followers=c.followers, following=c.following)


def _privacy_out(p: PrivacyRec) -> PrivacyOut:
    return PrivacyOut(dm_policy=p.dm_policy, presence=p.presence)


async def privacy_get(node: Context, session: SessionRec, req: PrivacyGet, origin: Device | None = None) -> PrivacyOut:
    return _privacy_out(await node.store.relations.privacy(session.user_id))


async def privacy_set(node: Context, session: SessionRec, req: PrivacySet, origin: Device | None = None) -> PrivacyOut:
    before = await node.store.relations.privacy(session.user_id)
    after = await node.store.relations.set_privacy(session.user_id, req.dm_policy, req.presence)
    if before.presence != after.presence:
        # Hiding: watchers see "offline" now; showing: they see the real state.
        state = (
            (await node.presence.view([session.user_id], fresh=True))[session.user_id][0]
            if after.presence != "nobody"
            else ("offline", ())
        )
        audience = (
            await node.store.relations.presence_audience(session.user_id)
            if after.presence != "nobody"
            else [f.friend_id for f in await node.store.relations.friends(session.user_id, 0, 100_000)]
        )
        node.bus.publish_notice(audience, "presence", node.presence.payload(session.user_id, state))
    return _privacy_out(after)
