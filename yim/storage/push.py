"""The pushers store interface: how each device that is not connected is woken, and how far
its pushes have got.

A pusher belongs to one device of one user (a device is woken one way: registering again
replaces it). Its ``target`` is the provider's address (a browser's subscription, an APNs or
FCM token, a gateway pushkey) as JSON, opaque to the store. Push work is derived from the
inbox, not written on the send path: ``pushed_seq`` is the last inbox seq of the user that
was considered for this device, so the pushers whose user's ``inbox_seq`` moved past it are
the work to do. A node *claims* such pushers for a while (``lease_until``, ms since the
epoch), sends, then advances ``pushed_seq`` and clears the lease in one write; a node that
dies holding a lease leaves it to expire, and another node (or this one restarted) takes
the work again.

Read-fan-out groups write no inbox entry per member (docs/architecture.md §4), so the inbox
cursor never sees their messages. For them each pusher has one more cursor per group,
``push_group_cursors.pushed_seq`` (a timeline seq), and a pusher is also work when one of its
user's read-fan-out groups has something *due* past that cursor: the group's head if the
user's mute for it is "off", the user's latest mention in it if "mentions", nothing if
"all". A device never has pushed what its user has read: the cursor counts as at least the
member's read marker. The send path writes nothing for this either: the timeline head and
the mention markers it already writes are what the claim compares.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec


class PusherRec(msgspec.Struct, frozen=True):
    user_id: int
    device_id: str
    kind: str  # "webpush" | "apns" | "fcm" | "gateway"
    target: str  # the provider target as JSON (yim.push.types), opaque to the store
    created_at: int
    pushed_seq: int = 0  # the last inbox seq considered for this device
    lease_until: int = 0  # claimed (or backing off, or collapsing a burst) until then, ms since the epoch
    failures: int = 0  # retries in a row


class GroupWork(msgspec.Struct, frozen=True):
    """A read-fan-out group with something due for a claimed pusher."""

    conv_id: int
    pushed_seq: int  # considered up to here: the group cursor, or the member's read marker if later
    head: int  # the group's timeline head when claimed
    mute: str  # the user's mute for the group, the default applied ("off" | "mentions")


class PushWork(msgspec.Struct, frozen=True):
    """A claimed pusher, its user's inbox head when it was claimed, and its read-fan-out
    groups with something due."""

    pusher: PusherRec
    head: int
    groups: tuple[GroupWork, ...] = ()


class PushPrefsRec(msgspec.Struct, frozen=True):
    """A user's push settings; the defaults when they never set any."""

    preview: bool = True
    time_zone: str = "UTC"
    dnd: tuple[int, int] | None = None  # quiet hours, minutes after local midnight
    mutes: dict[int, str] = {}  # conv id -> "off" | "mentions" | "all", as the user set it


class PushStore(abc.ABC):
    @abc.abstractmethod
    async def prefs(self, user_id: int) -> PushPrefsRec: ...

    @abc.abstractmethod
    async def set_prefs(self, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None) -> None: ...

    @abc.abstractmethod
    async def set_mute(self, user_id: int, conv_id: int, mute: str) -> None:
        """Record the user's mute for the conversation, "off" too: in a read-fan-out group
        "off" is not the default (:data:`yim.push.rules.READ_FANOUT_MUTE`)."""

    @abc.abstractmethod
    async def set_pusher(self, user_id: int, device_id: str, kind: str, target: str, now: int) -> PusherRec:
        """Register or replace the device's pusher. Pushing starts after the inbox head of
        now, and after the head of each of the user's read-fan-out groups: what the device
        already had is never pushed."""

    @abc.abstractmethod
    async def pushers(self, user_id: int) -> list[PusherRec]:
        """The user's pushers, by device id."""

    @abc.abstractmethod
    async def remove_pusher(self, user_id: int, device_id: str, target: str | None = None) -> bool:
        """Remove the device's pusher (only if it still has ``target``, when given: a gone
        address must not remove the one registered since). True if one was removed."""

    @abc.abstractmethod
    async def claim(self, now: int, lease_ms: int, limit: int, read_fanout_mute: str) -> list[PushWork]:
        """Up to ``limit`` pushers that no one holds (``lease_until`` past) and whose user's
        inbox moved past their ``pushed_seq`` or that have a read-fan-out group with
        something due (``read_fanout_mute``: the mute of a group the user set none for), now
        held until ``now + lease_ms``. Several nodes claiming at once never get the same
        pusher."""

    @abc.abstractmethod
    async def advance(
        self,
        user_id: int,
        device_id: str,
        created_at: int,
        seq: int,
        hold_until: int,
        groups: Sequence[tuple[int, int]] = (),
    ) -> None:
        """The device's pushes up to inbox ``seq`` (and in each of ``groups``, (conv id,
        timeline seq), up to that seq) are done: move the cursors there, clear the failures,
        and hold the pusher until ``hold_until`` (what comes meanwhile is one burst, pushed
        together after). One write; a no-op for a pusher registered anew since (another
        ``created_at``)."""

    @abc.abstractmethod
    async def back_off(self, user_id: int, device_id: str, created_at: int, until: int) -> None:
        """The provider asked to retry: count a failure; nobody takes the pusher again
        before ``until``."""
