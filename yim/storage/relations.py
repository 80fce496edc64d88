"""The relation-chain store interface (friends, follows, blocks, privacy) and its records.

Relations live in relational tables keyed by the user they are read for, in both
directions, so each list is one index range and each check one primary-key lookup; see
docs/architecture.md for when a graph database would pay off instead.

Write methods return the inbox events they wrote, ``(user_id, inbox_seq, payload_json)``,
so the service can push them; a device that was offline finds them by sync.
"""

from __future__ import annotations

import abc

import msgspec

InboxWrite = tuple[int, int, bytes]

#: The friend_requests columns both stores select, in FriendRequestRec's order.
REQUEST_COLS = "id, from_id, to_id, message, status, created_at, updated_at"


class FriendRequestRec(msgspec.Struct, frozen=True):
    id: int
    from_id: int
    to_id: int
    message: str
    status: str
    created_at: int
    updated_at: int


class FriendRec(msgspec.Struct, frozen=True):
    friend_id: int
    remark: str
    tags: list[str]
    created_at: int


class EdgeRec(msgspec.Struct, frozen=True):
    user_id: int
    created_at: int


class RelationState(msgspec.Struct, frozen=True):
    friend: bool
    following: bool
    followed_by: bool
    blocked: bool  # I blocked them
    blocked_by: bool  # they blocked me
    pending_request_id: int | None  # a pending friend request between us, either way


class PrivacyRec(msgspec.Struct, frozen=True):
    dm_policy: str = "anyone"
    presence: str = "friends"


class RelationCounts(msgspec.Struct, frozen=True):
    friends: int
    followers: int
    following: int


class RelationStore(abc.ABC):
    @abc.abstractmethod
    async def friend_request(
        self, request_id: int, from_id: int, to_id: int, message: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        """Create a pending request (idempotent per pair); a crossing request accepts both."""

    @abc.abstractmethod
    async def friend_respond(
        self, request_id: int, actor_id: int, action: str, now: int
    ) -> tuple[FriendRequestRec, list[InboxWrite]]:
        """action: "accept" | "reject" (by the recipient) | "cancel" (by the sender)."""

    @abc.abstractmethod
    async def friend_delete(self, actor_id: int, other_id: int, now: int) -> list[InboxWrite]: ...

    @abc.abstractmethod
    async def friend_update(
        self, actor_id: int, other_id: int, remark: str | None, tags: list[str] | None
    ) -> FriendRec: ...

    @abc.abstractmethod
    async def follow(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]: ...

    @abc.abstractmethod
    async def block(self, actor_id: int, target_id: int, on: bool, now: int) -> list[InboxWrite]:
        """Blocking removes friendship, pending requests and follows in both directions."""

    @abc.abstractmethod
    async def set_privacy(self, user_id: int, dm_policy: str | None, presence: str | None) -> PrivacyRec: ...

    @abc.abstractmethod
    async def privacy(self, user_id: int) -> PrivacyRec: ...

    @abc.abstractmethod
    async def friend_requests(
        self, user_id: int, incoming: bool, before: int | None, limit: int
    ) -> list[FriendRequestRec]:
        """Pending requests to (incoming) or from the user, newest first."""

    @abc.abstractmethod
    async def friends(self, user_id: int, after: int, limit: int) -> list[FriendRec]: ...

    @abc.abstractmethod
    async def edges(self, user_id: int, kind: str, after: int, limit: int) -> list[EdgeRec]:
        """kind: "followers" | "following" | "blocks"; ordered by user id."""

    @abc.abstractmethod
    async def counts(self, user_id: int) -> RelationCounts: ...

    @abc.abstractmethod
    async def relation(self, user_id: int, other_id: int) -> RelationState: ...

    @abc.abstractmethod
    async def blocked_either_way(self, user_id: int, others: list[int]) -> set[int]:
        """Which of others block user_id, or are blocked by them."""

    @abc.abstractmethod
    async def presence_audience(self, user_id: int) -> list[int]:
        """Users allowed to see this user's presence: friends unless hidden, never blocked."""

    @abc.abstractmethod
    async def presence_audiences(self, user_ids: list[int]) -> dict[int, list[int]]:
        """``presence_audience`` of each of user_ids, in one store round trip (a presence
        flush publishes the users of a burst of connects together)."""

    @abc.abstractmethod
    async def profile_audience(self, user_id: int, max_group_members: int, limit: int) -> list[int]:
        """Users whose clients show this user, to tell of a profile change: friends,
        followers, peers of direct conversations and co-members of the groups of at most
        ``max_group_members`` members the user is in; at most ``limit`` of them, the user
        not included."""

    @abc.abstractmethod
    async def presence_visible(self, viewer_id: int, user_ids: list[int]) -> set[int]:
        """Which of user_ids let viewer_id see their presence."""
