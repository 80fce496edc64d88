"""The reaction and pin store (``store.reactions``): its records and its interface, and
the adapter both backends use (:class:`ReactionJobs`).

Reactions are kept beside the timeline, never in it: a reaction is not an entry, so it
counts as no unread and does not move its conversation in the list. Each change takes the
conversation's next *reaction version*. Under write fan-out every member's inbox also gets
a ``reaction`` event (not unread: unread counts derive from timeline seqs only); under read
fan-out nothing is written per member — devices learn of changes by a notice, or by asking
for the messages whose reactions changed after the version they hold
(:meth:`ReactionStore.changed_since`). Pins are a set per conversation plus a ``system``
entry per pin and unpin, appended like any group change.
"""

from __future__ import annotations

import abc

import msgspec

from yim.protocol.frames import ReactionCountOut, ReactionEvent
from yim.storage.records import SendResult


class ReactionCount(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    me: bool = False


class MessageReactions(msgspec.Struct, frozen=True):
    """The reactions of one message as a viewer sees them, in the order emoji first appeared."""

    seq: int
    msg_id: int
    reactions: tuple[ReactionCount, ...]


class ReactionChange(msgspec.Struct, frozen=True):
    """Outcome of one add or remove."""

    conv_id: int
    seq: int
    msg_id: int
    #: False: a no-op (the reaction was there already, or was not); nothing was written
    changed: bool
    #: the message's reactions after the change, ``me`` as the actor sees them
    reactions: tuple[ReactionCount, ...]
    #: the conversation's reaction version after the change
    ver: int
    fanout: str
    #: (user_id, inbox_seq) of the ``reaction`` events written (write fan-out)
    deliveries: list[tuple[int, int]]
    #: the event's payload: ``data`` of the ``reaction`` event or notice
    payload: bytes


class PinRec(msgspec.Struct, frozen=True):
    seq: int
    msg_id: int
    pinned_by: int
    pinned_at: int


class PinChange(msgspec.Struct, frozen=True):
    changed: bool
    #: the system entry appended (None for a no-op)
    entry: SendResult | None


_encoder = msgspec.json.Encoder()


def reaction_payload(
    conv_id: int, seq: int, msg_id: int, user_id: int, emoji: str, add: bool, counts: list[tuple[str, int]], ver: int
) -> bytes:
    """The ``data`` of a ``reaction`` event or notice (docs/protocol.md §9.7): who changed
    what, and the message's counts after it — absolute, so applying the events of a
    conversation in order converges whatever was missed before."""
    return _encoder.encode(
        ReactionEvent(
            conv_id=str(conv_id),
            seq=seq,
            msg_id=str(msg_id),
            user_id=str(user_id),
            emoji=emoji,
            op="add" if add else "remove",
            counts=[ReactionCountOut(e, n) for e, n in counts],
            ver=ver,
        )
    )


def reaction_change(
    conv_id: int,
    seq: int,
    msg_id: int,
    changed: bool,
    mine: frozenset[str],
    counts: list[tuple[str, int]],
    ver: int,
    fanout: str,
    deliveries: list[tuple[int, int]],
    payload: bytes,
) -> ReactionChange:
    """What a react job returns: the message's ``counts`` after it, the actor's own emoji
    (``mine``) marked."""
    return ReactionChange(
        conv_id=conv_id,
        seq=seq,
        msg_id=msg_id,
        changed=changed,
        reactions=tuple(ReactionCount(e, n, e in mine) for e, n in counts),
        ver=ver,
        fanout=fanout,
        deliveries=deliveries,
        payload=payload,
    )


class ReactionStore(abc.ABC):
    @abc.abstractmethod
    async def react(
        self, conv_id: int, user_id: int, seq: int, emoji: str, add: bool, now: int, max_per_user: int
    ) -> ReactionChange:
        """Add or remove one emoji of the user on message ``seq``: a member, on an entry a
        member sent that stands (YimError otherwise); at most ``max_per_user`` different
        emoji per user and message (``too_many_reactions``)."""

    @abc.abstractmethod
    async def reactions_of(self, conv_id: int, viewer_id: int, seqs: list[int]) -> dict[int, MessageReactions]:
        """The reactions of these messages (those that have any), ``me`` for the viewer."""

    @abc.abstractmethod
    async def changed_since(
        self, conv_id: int, viewer_id: int, after_ver: int, limit: int
    ) -> tuple[list[MessageReactions], int, bool]:
        """Messages whose reactions changed after version ``after_ver`` (oldest change
        first; a message whose reactions are all gone is listed with none), the version
        the page reaches, and whether more follow. Members only."""

    @abc.abstractmethod
    async def reactors(self, conv_id: int, viewer_id: int, seq: int, emoji: str, after: int, limit: int) -> list[int]:
        """Who reacted with ``emoji`` to message ``seq``, by user id after ``after``."""

    @abc.abstractmethod
    async def versions(self, conv_ids: list[int]) -> dict[int, int]:
        """The reaction version of each conversation."""

    @abc.abstractmethod
    async def pin(
        self, conv_id: int, actor_id: int, seq: int, pin: bool, msg_id: int, now: int, max_pins: int
    ) -> PinChange:
        """Pin or unpin message ``seq``, appending a ``system`` entry (``pinned`` /
        ``unpinned``); groups by their ``pin_policy``, one-to-one by both users."""

    @abc.abstractmethod
    async def pins(self, conv_ids: list[int]) -> dict[int, list[PinRec]]:
        """The pinned messages of each conversation, most recently pinned first."""
