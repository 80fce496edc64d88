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
"""

from __future__ import annotations

import abc

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


class PushWork(msgspec.Struct, frozen=True):
    """A claimed pusher and its user's inbox head when it was claimed."""

    pusher: PusherRec
    head: int


class PushPrefsRec(msgspec.Struct, frozen=True):
    """A user's push settings; the defaults when they never set any."""

    preview: bool = True
    time_zone: str = "UTC"
    dnd: tuple[int, int] | None = None  # quiet hours, minutes after local midnight
    mutes: dict[int, str] = {}  # conv id -> "mentions" | "all"


class PushStore(abc.ABC):
    @abc.abstractmethod
    async def prefs(self, user_id: int) -> PushPrefsRec: ...

    @abc.abstractmethod
    async def set_prefs(self, user_id: int, preview: bool, time_zone: str, dnd: tuple[int, int] | None) -> None: ...

    @abc.abstractmethod
    async def set_mute(self, user_id: int, conv_id: int, mute: str) -> None:
        """``mute`` "off" removes the conversation's mute."""

    @abc.abstractmethod
    async def set_pusher(self, user_id: int, device_id: str, kind: str, target: str, now: int) -> PusherRec:
        """Register or replace the device's pusher. Pushing starts after the inbox head of
        now: what the device already had is never pushed."""

    @abc.abstractmethod
    async def pushers(self, user_id: int) -> list[PusherRec]:
        """The user's pushers, by device id."""

    @abc.abstractmethod
    async def remove_pusher(self, user_id: int, device_id: str, target: str | None = None) -> bool:
        """Remove the device's pusher (only if it still has ``target``, when given: a gone
        address must not remove the one registered since). True if one was removed."""

    @abc.abstractmethod
    async def claim(self, now: int, lease_ms: int, limit: int) -> list[PushWork]:
        """Up to ``limit`` pushers whose user's inbox moved past their ``pushed_seq`` and that
        no one holds (``lease_until`` past), now held until ``now + lease_ms``. Several nodes
        claiming at once never get the same pusher."""

    @abc.abstractmethod
    async def advance(self, user_id: int, device_id: str, created_at: int, seq: int, hold_until: int) -> None:
        """The device's pushes up to inbox ``seq`` are done: move ``pushed_seq`` there, clear
        the failures, and hold the pusher until ``hold_until`` (what comes meanwhile is one
        burst, pushed together after). A no-op for a pusher registered anew since (another
        ``created_at``)."""

    @abc.abstractmethod
    async def back_off(self, user_id: int, device_id: str, created_at: int, until: int) -> None:
        """The provider asked to retry: count a failure; nobody takes the pusher again
        before ``until``."""
