"""Relation rules: the friend-request state machine, follows, blocks, and the inbox events
each change tells both users.

An event is ``(user_id, actor_id, payload)``: the user whose inbox gets it, the user it
is about, and its JSON payload; the backend allocates the inbox seqs when it writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from yim.protocol.errors import YimError
from yim.storage.relations import FriendRec, FriendRequestRec

#: An inbox event before its seq is allocated: (user_id, actor_id, payload).
Pending = tuple[int, int, bytes]

#: The actions on a pending request, and who may take them.
RESPONSES: Final = ("accept", "reject", "cancel")

_enc = msgspec.json.Encoder()
_tags = msgspec.json.Decoder(list[str])


def event(name: str, other_id: int, request: FriendRequestRec | None = None) -> bytes:
    payload: dict[str, Any] = {"event": name, "user_id": str(other_id)}
    if request is not None:
        payload["request_id"] = str(request.id)
        payload["message"] = request.message
    return _enc.encode(payload)


def both(a: int, b: int, name: str, request: FriendRequestRec | None = None) -> list[Pending]:
    """The same event told to b (about a) and to a (about b)."""
    return [(b, a, event(name, a, request)), (a, b, event(name, b, request))]


def require_user(exists: bool, user_id: int) -> None:
    if not exists:
        raise YimError("not_found", f"no user {user_id}")


def check_not_self(actor_id: int, other_id: int, verb: str) -> None:
    if actor_id == other_id:
        raise YimError("bad_request", f"you cannot {verb} yourself")


def check_request(blocked_by_them: bool, blocked_them: bool, friends: bool) -> None:
    """May a user send a friend request to another? Checked in this order."""
    if blocked_by_them:
        raise YimError("blocked", "this user does not accept friend requests from you")
    if blocked_them:
        raise YimError("blocked", "you blocked this user; unblock them first")
    if friends:
        raise YimError("already_friends", "you are already friends")


def new_request(
    request_id: int, from_id: int, to_id: int, message: str, now: int
) -> tuple[FriendRequestRec, list[Pending]]:
    req = FriendRequestRec(
        id=request_id, from_id=from_id, to_id=to_id, message=message, status="pending", created_at=now, updated_at=now
    )
    return req, [
        (to_id, from_id, event("friend_request", from_id, req)),
        (from_id, to_id, event("friend_request_sent", to_id, req)),
    ]


def crossing_request(
    pending: FriendRequestRec, from_id: int, now: int
) -> tuple[FriendRequestRec, list[Pending]] | None:
    """A request while one is pending between the pair: a repeated request is the same
    request (None: nothing changes); one crossing theirs accepts it."""
    if pending.from_id == from_id:
        return None
    req = msgspec.structs.replace(pending, status="accepted", updated_at=now)
    return req, both(from_id, pending.from_id, "friend_added", req)


def visible_request(req: FriendRequestRec | None, request_id: int, actor_id: int) -> FriendRequestRec:
    """A request is seen only by its two users; to anyone else it does not exist."""
    if req is None or actor_id not in (req.from_id, req.to_id):
        raise YimError("not_found", f"no friend request {request_id}")
    return req


def respond(
    req: FriendRequestRec, actor_id: int, action: str, now: int, blocked_either_way: bool
) -> tuple[FriendRequestRec, list[Pending]]:
    """The request after the sender cancels it or the recipient accepts or rejects it, and
    the events for both. An accepted request is also a friendship for the backend to write."""
    if req.status != "pending":
        raise YimError("bad_request", f"the request is already {req.status}")
    if action == "cancel":
        if actor_id != req.from_id:
            raise YimError("forbidden", "only the sender can cancel a friend request")
        done = msgspec.structs.replace(req, status="canceled", updated_at=now)
        return done, both(req.from_id, req.to_id, "friend_request_canceled", done)
    if actor_id != req.to_id:
        raise YimError("forbidden", "only the recipient can accept or reject a friend request")
    if action == "accept":
        if blocked_either_way:
            raise YimError("blocked", "one of you blocked the other")
        done = msgspec.structs.replace(req, status="accepted", updated_at=now)
        return done, both(req.to_id, req.from_id, "friend_added", done)
    done = msgspec.structs.replace(req, status="rejected", updated_at=now)
    return done, both(req.to_id, req.from_id, "friend_request_rejected", done)


def require_friends(friends: bool) -> None:
    if not friends:
        raise YimError("not_found", "you are not friends")


def friend(row: Sequence[Any]) -> FriendRec:
    """A friend from a row of (friend_id, remark, tags JSON, created_at)."""
    return FriendRec(friend_id=row[0], remark=row[1], tags=_tags.decode(row[2]), created_at=row[3])


def updated_friend(row: Sequence[Any] | None, other_id: int, remark: str | None, tags: list[str] | None) -> FriendRec:
    """A friend's remark and tags after an update (None keeps the stored value), from the
    stored row of (remark, tags JSON, created_at); the two must be friends."""
    require_friends(row is not None)
    assert row is not None
    stored = friend((other_id, *row))
    return FriendRec(
        friend_id=other_id,
        remark=stored.remark if remark is None else remark,
        tags=stored.tags if tags is None else tags,
        created_at=stored.created_at,
    )


def tags_json(tags: list[str]) -> str:
    return _enc.encode(tags).decode()


def check_follow(on: bool, blocked_either_way: bool) -> None:
    if on and blocked_either_way:
        raise YimError("blocked", "one of you blocked the other")


def follow_events(actor_id: int, target_id: int, on: bool, changed: bool) -> list[Pending]:
    """Following (or not) is told to both; a follow already in that state tells nobody."""
    if not changed:
        return []
    return [
        (target_id, actor_id, event("follower_added" if on else "follower_removed", actor_id)),
        (actor_id, target_id, event("following_added" if on else "following_removed", target_id)),
    ]


def block_events(
    actor_id: int, target_id: int, *, unfriended: bool, unfollowed: tuple[tuple[int, int], ...]
) -> list[Pending]:
    """What a new block tells: the blocker of the block; the blocked user is not told of
    the block, but of the friendship and follows it ended. ``unfollowed`` holds the
    (follower, followed) pairs the block removed."""
    events = [(actor_id, target_id, event("blocked", target_id))]
    if unfriended:
        events += both(actor_id, target_id, "friend_removed")
    for a, b in unfollowed:
        events += [(b, a, event("follower_removed", a)), (a, b, event("following_removed", b))]
    return events


def unblock_events(actor_id: int, target_id: int) -> list[Pending]:
    return [(actor_id, target_id, event("unblocked", target_id))]
