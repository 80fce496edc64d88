"""The store process's side of a multi-process node: the state its workers share.

A node started with ``--workers N`` runs N worker processes (each with its own event loop,
gateway and services) around one store process. What the cluster keeps in Redis
(:mod:`yim.bus.redis`, :mod:`yim.bus.cluster_state`) a multi-process node keeps here, in
the memory of the store process, exact (one process, one event loop, no expiry):

* routes: which worker holds the live connection of each (user, device), registered by the
  worker before the device's auth reply and removed when the connection ends — or at once,
  for all its devices, when a worker's channel closes (the worker died);
* presence: each worker's devices of a user as its debounced presence last wrote them, the
  aggregate last published to watchers, and when the user was last seen;
* online agents (customer service), copied to every worker;
* rate-limit buckets and failed-login back-off shared by the workers, so that N workers
  give a user the budget of one node, not N times it;
* each worker's open connections per client IP, so that the cap on them holds for the
  node (each worker decides from its copy of the others' counts, kept in step every sync
  period: yim.gateway.limits.ConnectionCounts).

It also routes the pushes of committed timeline entries (:meth:`WorkerHub.entries_routed`):
the store process is where every entry is committed, so it sends each entry's ``message``
event to the other workers holding its recipients right when the store answers, in commit
order — one hop from the store to the worker that holds the device, where a worker
forwarding it after its reply would take three, and could let a later entry overtake it.

:class:`HubState` is that state as a pure class (plain values in, plain values out, no I/O,
the clock passed in), unit-tested on its own; :class:`WorkerHub` is the thin adapter that
answers the ``hub.*`` calls and casts of the workers' channels and sends them ``worker.*``
casts. The wire bodies of both directions are the structs below (array-like msgpack).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from yim.bus.bounded import bounded
from yim.protocol.close import CLOSE_POLICY, CLOSE_REPLACED, CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.protocol.platforms import PLATFORM_CLASS, signed_out
from yim.services.context import State
from yim.services.lockout import locked_until
from yim.services.presence import aggregate_presence
from yim.storage.records import MessageRec
from yim.storage.remote import entries_in

if TYPE_CHECKING:
    from yim.config import Settings
    from yim.ipc.channel import Channel
    from yim.storage.records import SendResult

log = logging.getLogger("yim.bus.workers")

#: shared rate-limit buckets and back-off counters kept at most (each table); past it, the
#: entries at rest go first, then the oldest half (forgetting only ever forgets a debt)
MAX_LIMIT_KEYS = 200_000
#: a shared bucket overdrawn by workers spending at once owes at most this many bursts
#: (as in the cluster, yim.bus.cluster_state.DEBT_BURSTS)
DEBT_BURSTS = 8.0
OFFLINE: State = ("offline", ())
#: how long ``hub.metrics`` waits for a worker's snapshot; one that takes longer is left out
#: of that scrape (``yim_workers_reporting`` shows it), so a stuck worker cannot hang it
METRICS_WAIT_S = 1.0


# --- wire bodies: worker -> store process (hub.*) -------------------------------------------
class RouteIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.route`` (call): a device authenticated on the calling worker."""

    user_id: int
    device_id: str
    platform: str
    connected_ms: int
    serial: int  # the worker's number for this connection: an unroute names it


class UnrouteIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.unroute`` (cast): that connection ended.

    ``back``: it ended in its auth checks (never registered), while an older connection of
    the same device on the same worker is still registered there and live — the one whose
    route its ``hub.route`` replaced. The route goes back to that one (HubState.hand_back)."""

    user_id: int
    device_id: str
    serial: int
    back: RouteIn | None = None


class PolicyIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.policy`` (cast): the connect of this route passed its checks and is registered
    on the calling worker; its ``hub.route`` answered that the multi-device policy has
    devices to sign out (HubState.apply_policy)."""

    user_id: int
    device_id: str
    serial: int


class EventOut(msgspec.Struct, array_like=True, frozen=True):
    """``hub.ev`` / ``worker.ev`` (casts): one inbox event for some users' devices."""

    type: str
    payload: bytes  # the event's JSON, as LocalBus.publish_event takes it
    deliveries: list[tuple[int, int]]


class EntryOut(msgspec.Struct, array_like=True, frozen=True):
    """``worker.entry`` (cast): a committed timeline entry for some users' devices, as the
    store gave it; the worker makes its ``message`` event's JSON (work the workers share,
    not the store process, the one process every message crosses)."""

    message: MessageRec
    deliveries: list[tuple[int, int]]


class NoticeOut(msgspec.Struct, array_like=True, frozen=True):
    """``hub.no`` / ``worker.no`` (casts): one unnumbered notice for some users' devices."""

    type: str
    payload: bytes
    users: list[int]


class Revoke(msgspec.Struct, array_like=True, frozen=True):
    """``hub.revoke`` / ``worker.revoke`` (casts): sessions revoked on one worker."""

    user_id: int
    session_ids: list[str]
    reason: str
    code: int = CLOSE_REVOKED


class PresenceIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.presence_sync`` (call): the caller's devices of each user, now (none: gone).
    A device is (device_id, status, platform, connected_ms)."""

    users: list[tuple[int, list[tuple[str, str, str, int]]]]
    now_ms: int


#: per user: (changed, status, platforms, status before, platforms before, last seen ms, may
#: be an agent: False when the store knows the user is none, so the worker skips the
#: customer-service check that would cost a store round trip per user in a burst of connects)
PresenceOut = list[tuple[int, bool, str, list[str], str, list[str], int | None, bool]]


class PresenceReadIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.presence_read`` (call); ``local``: the caller's devices as they are now
    ((status, platform) each), counted instead of what it last wrote."""

    user_ids: list[int]
    local: dict[int, list[tuple[str, str]]] | None = None


#: per user: (status, platforms, last seen ms while offline)
PresenceReadOut = list[tuple[int, str, list[str], int | None]]


class TakeIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.take`` (call): a strict shared bucket; the reply is the wait in seconds."""

    name: str
    key: int | str
    rate: float
    burst: float
    cost: float = 1.0


class BackoffOp(msgspec.Struct, array_like=True, frozen=True):
    """One failed-login counter operation: ``op`` is check | fail | forget | forgive."""

    name: str
    key: int | str
    op: str
    free: int
    base_s: float
    max_s: float
    window_s: float


class DebitIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.debit`` (call): what a worker spent of each shared bucket since its last
    debit, as (name, key, rate, burst, cost); the reply is each bucket's level after it."""

    spent: list[tuple[str, int | str, float, float, float]]


class DeviceIn(msgspec.Struct, array_like=True, frozen=True):
    """``hub.device_present`` (call): is this device connected to some worker."""

    user_id: int
    device_id: str


class Agent(msgspec.Struct, array_like=True, frozen=True):
    """``hub.agent`` (call) / ``worker.agent`` (cast): an agent came online or went offline."""

    user_id: int
    online: bool


# --- wire bodies: store process -> worker (worker.*) ----------------------------------------
class Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """``worker.snapshot`` (cast, the first frame a worker gets): every user with devices
    on some worker, and which workers; the online agents."""

    routes: list[tuple[int, list[int]]]
    agents: list[int]


class Levels(msgspec.Struct, array_like=True, frozen=True):
    """``worker.levels`` (cast): shared buckets another worker just spent from, each
    (name, key, tokens now)."""

    levels: list[tuple[str, int | str, float]]


class Close(msgspec.Struct, array_like=True, frozen=True):
    """``worker.close`` (cast): close the connection of this device whose route has
    ``serial`` (its worker's number for it, RouteIn.serial), if it was made no later than
    ``before_ms``. The serial names exactly one connection: the device may have a second one
    on that worker, registered or still in its auth checks, which the kick is not for."""

    user_id: int
    device_id: str
    code: int
    reason: str
    before_ms: int
    serial: int


#: ``hub.conns`` (cast): a worker's open connections from each IP whose count changed, as
#: (ip, count now; 0: none left). ``worker.conns`` (cast): what the *other* workers hold of
#: each IP, (ip, their sum; 0: nothing), for the IPs that changed or, after ``worker.snapshot``,
#: every IP with connections.
ConnCounts = list[tuple[str, int]]

# ``worker.routes`` (cast): list[tuple[user, workers]], workers empty when the user has no
# device left anywhere. ``worker.roster`` (cast):
# conv_id. ``worker.resync`` (cast): users whose presence a dead worker's devices counted.


# The hub keeps a record per online device (a route, a presence field): both are structs
# without a GC header (gc=False: they hold only strings and ints, no cycle can pass through
# them), their platform and status strings the interned ones. A user's records are the
# lone record itself (most users have one device online) or a tuple of them: see _each.
class Route(msgspec.Struct, frozen=True, gc=False):
    """One device's live connection, on one worker."""

    device_id: str
    worker: int
    serial: int
    platform: str
    connected_ms: int


class Field(msgspec.Struct, frozen=True, gc=False):
    """One device as the presence of its worker last wrote it."""

    device_id: str
    worker: int
    status: str
    platform: str
    connected_ms: int


_Record = TypeVar("_Record", "Route", "Field")


def _each(records: _Record | tuple[_Record, ...]) -> tuple[_Record, ...]:
    """A user's records as a tuple (a lone one is kept bare: a 1-tuple would be 56 bytes
    of every online user, in two tables)."""
    return records if isinstance(records, tuple) else (records,)


def _kept(records: tuple[_Record, ...]) -> _Record | tuple[_Record, ...]:
    """How a user's non-empty records are kept (see _each)."""
    return records[0] if len(records) == 1 else records


#: sets of workers a user is on (``HubState.workers_of``, a worker's replica) are shared tuples
#: taken from one table each: there are few distinct ones, and a tuple of its own per user
#: would be ~56 bytes of every online user; past this bound they are made afresh
SHARED_SETS_MAX = 1024


def shared_set(table: dict[tuple[int, ...], tuple[int, ...]], workers: tuple[int, ...]) -> tuple[int, ...]:
    """``workers`` as the one equal tuple of ``table`` (added if there is room)."""
    got = table.get(workers)
    if got is not None:
        return got
    if len(table) < SHARED_SETS_MAX:
        table[workers] = workers
    return workers


class Kick(msgspec.Struct, array_like=True, frozen=True):
    """A connection to close (replaced, or by the multi-device policy): the route
    ``serial`` of ``device_id`` of the user on ``worker``, if made no later than ``before_ms``."""

    worker: int
    device_id: str
    code: int
    reason: str
    before_ms: int
    serial: int


_PLATFORM = operator.attrgetter("platform")
_MADE = operator.attrgetter("connected_ms")


def _quiet_since(since: float) -> Callable[[list[float]], bool]:
    """A back-off counter with no failure since ``since`` (at rest: forgotten first)."""
    return lambda v: v[2] < since


class HubState:
    """Everything the workers of one node share, as plain data (see the module docstring).

    Routes are exact: the newest connection of a device wins (the older one, on another
    worker, is to be closed with 4002) and the multi-device policy counts the devices of
    every worker (the older ones beyond a platform-class limit or the per-user limit are
    to be closed with 4006) — the same rules as the gateway's Hub applies on one node.
    """

    def __init__(
        self,
        class_limits: dict[str, int],
        max_per_user: int,
        max_limit_keys: int = MAX_LIMIT_KEYS,
        may_be_agent: Callable[[int], bool] | None = None,
    ) -> None:
        self._class_limits = class_limits
        #: the store's ServiceStore.may_be_agent (in memory, exact for the SQLite store):
        #: answered with each presence change; None says True, always safe
        self._may_be_agent = may_be_agent
        self._max_per_user = max_per_user
        self._max_keys = max(16, max_limit_keys)
        #: user -> the live connection of each of the user's devices (one per device id, in
        #: the order they were made; never empty: a user without one has no entry; _each)
        self.routes: dict[int, Route | tuple[Route, ...]] = {}
        #: user -> the workers that hold a device of the user, sorted, for the users with
        #: several routes: exactly the workers of ``routes[user]`` (written with them by
        #: _set_routes); a lone route's is ``_alone[its worker]``. Tuples shared via ``_sets``.
        self.placed: dict[int, tuple[int, ...]] = {}
        self._alone: dict[int, tuple[int, ...]] = {}
        self._sets: dict[tuple[int, ...], tuple[int, ...]] = {}
        #: user -> each device as presence last wrote it (one per device id, never empty; _each).
        #: The aggregate of a user's fields is what was last published to the user's watchers
        #: (presence_sync publishes each change it makes), except after a worker's death
        #: dropped fields: ``_told`` keeps what watchers were told then, until the user's
        #: next sync (the resync the hub asks a live worker for).
        self.presence: dict[int, Field | tuple[Field, ...]] = {}
        self._told: dict[int, State] = {}
        #: user -> ms the user last went offline
        self.seen: dict[int, int] = {}
        self.agents: set[int] = set()
        #: (name, key) -> [tokens, at (s)]
        self.buckets: dict[tuple[str, Hashable], list[float]] = {}
        #: (name, key) -> [failures, locked until (s), last failure (s)]
        self.backoffs: dict[tuple[str, Hashable], list[float]] = {}
        #: ip -> worker -> its open connections from that IP (IPs with none are not kept:
        #: bounded by the node's connections; ~300 bytes per IP)
        self.conns: dict[str, dict[int, int]] = {}
        #: connects routed while the multi-device policy had devices to sign out, not yet
        #: registered (their ``hub.policy`` to come), as (worker, user, device, serial): the
        #: policy of another connect does not count them, as one node's Hub does not count
        #: a connect still in its checks; their own policy, when they register, counts it.
        #: Bounded by the connects in progress.
        self._checking: set[tuple[int, int, str, int]] = set()

    # --- routes --------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, may_be_agent: Callable[[int], bool] | None = None) -> HubState:
        return cls(settings.class_limits, settings.max_connections_per_user, may_be_agent=may_be_agent)

    def workers_of(self, user_id: int) -> tuple[int, ...]:
        """The workers that hold a device of the user, in order (none: offline): two dict
        lookups at most, as every forwarded delivery asks it."""
        routes = self.routes.get(user_id)
        if routes is None:
            return ()
        if isinstance(routes, Route):
            return self._alone[routes.worker]
        return self.placed[user_id]

    def _set_routes(self, user_id: int, routes: tuple[Route, ...]) -> tuple[int, ...]:
        """The user's routes are now ``routes``: ``placed`` follows (the one place that
        writes either). Returns the user's workers."""
        if not routes:
            self.routes.pop(user_id, None)
            self.placed.pop(user_id, None)
            return ()
        self.routes[user_id] = _kept(routes)
        if len(routes) == 1:
            self.placed.pop(user_id, None)
            w = routes[0].worker
            alone = self._alone.get(w)
            if alone is None:
                alone = self._alone[w] = shared_set(self._sets, (w,))
            return alone
        workers = shared_set(self._sets, tuple(sorted({r.worker for r in routes})))
        self.placed[user_id] = workers
        return workers

    def is_connected(self, user_id: int) -> bool:
        return user_id in self.routes

    def routes_of(self, user_id: int) -> tuple[Route, ...]:
        return _each(self.routes.get(user_id, ()))

    def fields_of(self, user_id: int) -> tuple[Field, ...]:
        """The user's devices as presence last wrote them."""
        return _each(self.presence.get(user_id, ()))

    def register(self, worker: int, r: RouteIn) -> tuple[list[Kick], list[int] | None, bool]:
        """A device authenticated on ``worker``. Returns the connections to close (the
        device's older one on another worker), the user's workers if they changed (else
        None), and whether the multi-device policy has devices to sign out.

        The policy is not applied here: the connect may still fail its checks (the
        revocation re-check of yim/gateway/ws.py), and a device signed out for a connect
        that never was would be gone for nothing (4006 ends a client). The worker asks for
        it once the connect is registered (``hub.policy``, :meth:`apply_policy`), so until
        then the older devices stay routed. The older connection of the same device is
        replaced at once: the route is the device's, and the connect took it."""
        before = self.workers_of(r.user_id)
        routes = self.routes_of(r.user_id)
        others = tuple(d for d in routes if d.device_id != r.device_id)
        kicks: list[Kick] = []
        old = next((d for d in routes if d.device_id == r.device_id), None)
        if old is not None and old.worker != worker:  # on the same worker its Hub replaces it
            kicks.append(
                Kick(
                    old.worker,
                    r.device_id,
                    CLOSE_REPLACED,
                    "replaced by a newer connection of this device",
                    old.connected_ms,
                    old.serial,
                )
            )
        new = Route(r.device_id, worker, r.serial, sys.intern(r.platform), r.connected_ms)
        after = self._set_routes(r.user_id, (*others, new))
        policy_due = bool(others) and bool(self._policy(new, others))
        if policy_due:
            self._checking.add((worker, r.user_id, r.device_id, r.serial))
        return kicks, (list(after) if after != before else None), policy_due

    def apply_policy(self, worker: int, p: PolicyIn) -> tuple[list[Kick], list[int] | None]:
        """The connect of route ``p`` on ``worker`` is registered: the user's other devices
        beyond the multi-device policy's limits, the oldest first, are unrouted and returned
        to be closed (4006), with the user's workers if they changed. The one that registers
        last wins, as on one node: connects still in their checks with the policy due
        (``_checking``) are not counted; registering, they count this one.

        The device's route may since name another connect of it on the same worker (in its
        checks; if that one fails, the route goes back to this one, ``hand_back``): the
        policy applies all the same. Nothing if the route is gone or on another worker: a
        newer connection of the device elsewhere replaced this one."""
        self._checking.discard((worker, p.user_id, p.device_id, p.serial))
        routes = self.routes_of(p.user_id)
        cur = next((d for d in routes if d.device_id == p.device_id), None)
        if cur is None or cur.worker != worker:
            return [], None
        kicks = self._policy(cur, self._registered(p.user_id, routes, cur))
        if not kicks:
            return [], None
        before = self.workers_of(p.user_id)
        gone = {k.device_id for k in kicks}  # leaving: unrouted at once
        after = self._set_routes(p.user_id, tuple(d for d in routes if d.device_id not in gone))
        return kicks, (list(after) if after != before else None)

    def _registered(self, user_id: int, routes: tuple[Route, ...], but: Route) -> tuple[Route, ...]:
        """``routes`` but ``but`` and the connects still in their checks (``_checking``)."""
        checking = self._checking
        return tuple(d for d in routes if d is not but and (d.worker, user_id, d.device_id, d.serial) not in checking)

    def _policy(self, newest: Route, others: tuple[Route, ...]) -> list[Kick]:
        """The newest connection wins: the user's older devices beyond a platform-class
        limit, or beyond the per-user limit, on whichever worker."""
        victims = signed_out(newest.platform, others, self._class_limits, self._max_per_user, _PLATFORM, _MADE)
        return [Kick(r.worker, r.device_id, CLOSE_POLICY, reason, r.connected_ms, r.serial) for r, reason in victims]

    def _policy_kick(self, worker: int, back: RouteIn) -> Kick:
        """``back``, the connection of a route the policy closed, to be closed on ``worker``:
        most likely for the class its device is of."""
        cls = PLATFORM_CLASS.get(back.platform, back.platform)
        reason = f"signed in on another {cls} device" if self._class_limits.get(cls) else "too many devices online"
        return Kick(worker, back.device_id, CLOSE_POLICY, reason, back.connected_ms, back.serial)

    def unregister(self, worker: int, u: UnrouteIn) -> list[int] | None:
        """A connection on ``worker`` ended; a newer one of the device (anywhere) stays.
        Returns the user's workers if they changed (else None)."""
        self._checking.discard((worker, u.user_id, u.device_id, u.serial))
        routes = self.routes_of(u.user_id)
        cur = next((r for r in routes if r.device_id == u.device_id), None)
        if cur is None or cur.worker != worker or cur.serial != u.serial:
            return None
        before = self.workers_of(u.user_id)
        after = self._set_routes(u.user_id, tuple(r for r in routes if r is not cur))
        return list(after) if after != before else None

    def hand_back(self, worker: int, u: UnrouteIn) -> list[Kick]:
        """A connection on ``worker`` ended in its auth checks; ``u.back`` is the device's
        older connection there, still registered, whose route its ``hub.route`` replaced.
        Returns the connections to close (``u.back`` or none).

        The device keeps the connection it had, as on one node, where a connect that fails
        its checks never touched the older one: a client whose retry lost a race with a
        revocation (or was cut off mid-connect) should not lose a working connection for it.
        The route is swapped in place, the worker staying the same, so there is no moment
        without one: an entry committed meanwhile is routed to the worker, whose Hub has
        held the older connection all along. If the route was taken from the ended one in
        the meantime — by a newer connection of the device elsewhere, or by the multi-device
        policy — the kick that took it named the ended one (gone now), and the older one is
        as old as that: it is closed with the same code. A route of another connection on
        the same worker (another connect of the device in progress there, or ``back``'s own
        when the ended one's route call was never served) is left alone: that one decides.
        The route given back is counted by the multi-device policy at once, as the devices
        that registered while the failed connect held it would have counted it."""
        self._checking.discard((worker, u.user_id, u.device_id, u.serial))
        back = u.back
        if back is None:
            return []
        routes = self.routes_of(u.user_id)
        cur = next((r for r in routes if r.device_id == u.device_id), None)
        if cur is not None and cur.worker == worker:
            if cur.serial != u.serial:
                return []
            new = Route(cur.device_id, worker, back.serial, sys.intern(back.platform), back.connected_ms)
            routes = tuple(new if r is cur else r for r in routes)
            self._set_routes(u.user_id, routes)
            # Devices that registered while the failed connect held the route (in its
            # checks: not counted) did not count the older one: were it over a limit with
            # them now, their policies would have closed it, as on one node. It leaves the
            # routes at once, as apply_policy's victims do, so no later policy counts it.
            if not self._policy(new, self._registered(u.user_id, routes, new)):
                return []
            self._set_routes(u.user_id, tuple(r for r in routes if r is not new))
            return [self._policy_kick(worker, back)]
        if cur is None:  # the policy dropped it
            return [self._policy_kick(worker, back)]
        reason = "replaced by a newer connection of this device"
        return [Kick(worker, u.device_id, CLOSE_REPLACED, reason, back.connected_ms, back.serial)]

    def drop_worker(self, worker: int) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """A worker is gone with every connection on it. Returns the route changes (user,
        workers) and the users whose presence counted its devices (to be synced again).
        Walks every user (a worker's death is rare; a table of each worker's users would
        cost every online user its entry)."""
        self._checking = {c for c in self._checking if c[0] != worker}
        changes: list[tuple[int, list[int]]] = []
        for user_id in sorted(u for u in self.routes if worker in self.workers_of(u)):
            workers = self._set_routes(user_id, tuple(r for r in self.routes_of(user_id) if r.worker != worker))
            changes.append((user_id, list(workers)))
        stale = [u for u, fields in self.presence.items() if any(f.worker == worker for f in _each(fields))]
        for user_id in stale:
            fields = self.fields_of(user_id)
            # what the watchers were told (an earlier drop's, if the user was not synced since)
            self._told.setdefault(user_id, aggregate_presence((f.status, f.platform) for f in fields))
            left = tuple(f for f in fields if f.worker != worker)
            if left:
                self.presence[user_id] = _kept(left)
            else:
                del self.presence[user_id]
        return changes, stale

    def snapshot(self) -> Snapshot:
        return Snapshot([(u, list(self.workers_of(u))) for u in self.routes], sorted(self.agents))

    # --- presence ------------------------------------------------------------------------
    def presence_sync(self, worker: int, body: PresenceIn) -> PresenceOut:
        """Write ``worker``'s devices of each user (replacing what it wrote before) and
        aggregate over every worker; say whether the aggregate differs from the one last
        published, and remember the new one as published (the caller publishes it)."""
        out: PresenceOut = []
        may_be_agent = self._may_be_agent
        intern = sys.intern
        for user_id, devices in body.users:
            old = self.fields_of(user_id)
            told = self._told.pop(user_id, None)
            before = told if told is not None else aggregate_presence((f.status, f.platform) for f in old)
            fields = [f for f in old if f.worker != worker]
            routes = self.routes_of(user_id)
            for device_id, status, platform, cms in devices:
                # the device id and time its route holds, if any: one copy of each in the hub
                route = next((r for r in routes if r.device_id == device_id), None)
                if route is not None:
                    device_id = route.device_id
                    cms = route.connected_ms if route.connected_ms == cms else cms
                new = Field(device_id, worker, intern(status), intern(platform), cms)
                for k, f in enumerate(fields):
                    if f.device_id == device_id:
                        # the same device connected again on another worker: the newest wins
                        if f.connected_ms <= cms:
                            fields[k] = new
                        break
                else:
                    fields.append(new)
            if fields:
                self.presence[user_id] = _kept(tuple(fields))
            else:
                self.presence.pop(user_id, None)
            state = aggregate_presence((f.status, f.platform) for f in fields)
            changed = state != before
            if changed and state == OFFLINE:
                self.seen[user_id] = body.now_ms
            seen = self.seen.get(user_id) if state == OFFLINE else None
            agent = changed and (may_be_agent is None or may_be_agent(user_id))
            out.append((user_id, changed, state[0], list(state[1]), before[0], list(before[1]), seen, agent))
        return out

    def presence_read(self, worker: int, body: PresenceReadIn) -> PresenceReadOut:
        """Each user's aggregate over every worker (``body.local``: the caller's devices as
        they are now instead of as it last wrote them), and last seen while offline."""
        out: PresenceReadOut = []
        local = body.local
        for user_id in body.user_ids:
            fields = self.fields_of(user_id)
            entries = [(f.status, f.platform) for f in fields if local is None or f.worker != worker]
            if local is not None:
                entries += local.get(user_id, [])
            status, platforms = aggregate_presence(entries)
            seen = self.seen.get(user_id) if status == "offline" else None
            out.append((user_id, status, list(platforms), seen))
        return out

    def device_present(self, user_id: int, device_id: str) -> bool:
        """Is the device connected to some worker now (its route, not its debounced presence)."""
        return any(r.device_id == device_id for r in self.routes_of(user_id))

    # --- connections per IP --------------------------------------------------------------
    def count_connections(self, worker: int, counts: Iterable[tuple[str, int]]) -> list[str]:
        """``worker``'s report: its open connections from each IP, now. Returns the IPs
        whose count changed (the other workers are to hear of them)."""
        conns = self.conns
        changed: list[str] = []
        for ip, count in counts:
            per = conns.get(ip)
            if count > 0:
                if per is None:
                    per = conns[ip] = {}
                elif per.get(worker) == count:
                    continue
                per[worker] = count
            else:
                if per is None or per.pop(worker, None) is None:
                    continue
                if not per:
                    del conns[ip]
            changed.append(ip)
        return changed

    def others_connected(self, worker: int, ips: Iterable[str]) -> ConnCounts:
        """What the workers other than ``worker`` hold of each IP (0: nothing)."""
        conns = self.conns
        out: ConnCounts = []
        for ip in ips:
            per = conns.get(ip)
            out.append((ip, sum(n for w, n in per.items() if w != worker) if per else 0))
        return out

    def drop_connections(self, worker: int) -> list[str]:
        """A worker is gone, and its connections with it: the IPs it held some of."""
        gone: list[str] = []
        for ip, per in list(self.conns.items()):  # a walk of every IP, only when a worker dies
            if per.pop(worker, None) is not None:
                gone.append(ip)
                if not per:
                    del self.conns[ip]
        return gone

    # --- rate limits ---------------------------------------------------------------------
    def _bounded(self, table: dict[tuple[str, Hashable], list[float]], rest: Callable[[list[float]], bool]) -> None:
        if len(table) < self._max_keys:
            return
        for key in [k for k, v in table.items() if rest(v)]:
            del table[key]
        if len(table) >= self._max_keys * 0.9:
            for key in list(table)[: len(table) // 2]:
                del table[key]

    def _level(self, name: str, key: Hashable, rate: float, burst: float, now: float) -> list[float]:
        st = self.buckets.get((name, key))
        if st is None:
            self._bounded(self.buckets, lambda v: v[0] + (now - v[1]) * rate >= burst)
            st = self.buckets[(name, key)] = [burst, now]
        else:
            st[0] = min(burst, st[0] + max(0.0, now - st[1]) * rate)
            st[1] = now
        return st

    def take(self, t: TakeIn, now: float) -> float:
        """Strict: take ``cost`` if there is as much, else take nothing. Returns 0.0 if
        allowed, else the seconds until it would be."""
        if t.rate <= 0:
            return 0.0
        st = self._level(t.name, t.key, t.rate, t.burst, now)
        if st[0] >= t.cost:
            st[0] -= t.cost
            return 0.0
        return (t.cost - st[0]) / t.rate

    def debit(self, spent: Iterable[tuple[str, int | str, float, float, float]], now: float) -> list[float]:
        """What a worker already allowed out of its own copy of each bucket: always taken,
        down to a debt of DEBT_BURSTS bursts. Returns each bucket's level after it (the
        worker sets its copy to it)."""
        out = []
        for name, key, rate, burst, cost in spent:
            if rate <= 0:
                out.append(burst)
                continue
            st = self._level(name, key, rate, burst, now)
            st[0] = max(-burst * DEBT_BURSTS, st[0] - cost)
            out.append(st[0])
        return out

    def backoff(self, ops: Iterable[BackoffOp], now: float) -> list[float]:
        """Failed-login counters, as yim.gateway.limits.Backoff keeps them on one node:
        each op's seconds until its key may try again."""
        out = []
        for b in ops:
            k = (b.name, b.key)
            st = self.backoffs.get(k)
            if st is not None and now - st[2] > b.window_s:
                del self.backoffs[k]
                st = None
            if b.op == "forget":
                self.backoffs.pop(k, None)
                out.append(0.0)
                continue
            if b.op == "forgive":
                if st is not None and st[0] > 0:
                    st[0] -= 1
                out.append(0.0)
                continue
            if b.op == "fail":
                if st is None:
                    self._bounded(self.backoffs, _quiet_since(now - b.window_s))
                    st = self.backoffs[k] = [0.0, 0.0, now]
                st[0] += 1
                st[2] = now
                until = locked_until(int(st[0]), b.free, b.base_s, b.max_s, now)
                if until is not None:
                    st[1] = until
            elif b.op != "check":
                raise YimError("bad_request", f"unknown back-off operation {b.op!r}")
            out.append(max(0.0, st[1] - now) if st is not None else 0.0)
        return out


# The bodies of the frames the hub takes, decoded once each into their final types.
_ROUTE = msgspec.msgpack.Decoder(RouteIn)
_UNROUTE = msgspec.msgpack.Decoder(UnrouteIn)
_POLICY = msgspec.msgpack.Decoder(PolicyIn)
_EVENT = msgspec.msgpack.Decoder(EventOut)
_NOTICE = msgspec.msgpack.Decoder(NoticeOut)
_REVOKE = msgspec.msgpack.Decoder(Revoke)
_PRESENCE = msgspec.msgpack.Decoder(PresenceIn)
_PRESENCE_READ = msgspec.msgpack.Decoder(PresenceReadIn)
_DEVICE = msgspec.msgpack.Decoder(DeviceIn)
_AGENT = msgspec.msgpack.Decoder(Agent)
_DEBIT = msgspec.msgpack.Decoder(DebitIn)
_TAKE = msgspec.msgpack.Decoder(TakeIn)
_BACKOFF = msgspec.msgpack.Decoder(list[BackoffOp])
_INT = msgspec.msgpack.Decoder(int)
_CONNS = msgspec.msgpack.Decoder(ConnCounts)


class WorkerHub:
    """Answers the workers' ``hub.*`` calls and casts from :class:`HubState` and sends them
    ``worker.*`` casts. It owns no socket: the process that spawns the workers gives it each
    worker's channel (:meth:`attach`) and routes ``hub.*`` frames of that channel to
    :meth:`on_call` / :meth:`on_cast` with the worker's number.

    Forwarding: ``hub.ev`` / ``hub.no`` from one worker go on to every other worker holding
    a device of a recipient, one cast per publish per target worker, in the order they came
    (one loop, frames handled in arrival order, one FIFO channel per worker). The ``message``
    events of timeline entries never come that way: :meth:`entries_routed` sends them from
    the store's answer itself."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] | None = None,
        may_be_agent: Callable[[int], bool] | None = None,
    ) -> None:
        self.state = HubState.from_settings(settings, may_be_agent)
        self._clock = clock or time.monotonic
        self._channels: dict[int, Channel] = {}
        self._watchers: dict[int, asyncio.Task[None]] = {}
        #: users a dead worker's devices counted, for the next live worker to sync again
        self._resync: dict[int, None] = {}
        self.forwarded = 0  # worker.ev / worker.no casts sent

    # --- workers -------------------------------------------------------------------------
    def attach(self, worker: int, channel: Channel) -> None:
        """A worker's channel, before the worker sends anything. Its first frame is the
        snapshot of routes and agents (its replica is complete before any change it hears of)."""
        old = self._channels.get(worker)
        if old is not None and old is not channel:
            self.detach(worker)
        self._channels[worker] = channel
        channel.cast("worker.snapshot", self.state.snapshot())
        if self.state.conns:  # the other workers' connections per IP, before it admits any
            channel.cast("worker.conns", self.state.others_connected(worker, list(self.state.conns)))
        self._watchers[worker] = asyncio.get_running_loop().create_task(
            self._watch(worker, channel), name=f"yim-hub-watch-{worker}"
        )
        self._flush_resync()

    async def _watch(self, worker: int, channel: Channel) -> None:
        await channel.closed.wait()
        if self._channels.get(worker) is channel:
            self.detach(worker)

    def detach(self, worker: int) -> None:
        """The worker is gone (its channel closed): its routes go at once, every other
        worker hears of the users it held, and its users' presence is synced again."""
        self._channels.pop(worker, None)
        watcher = self._watchers.pop(worker, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        changes, stale = self.state.drop_worker(worker)
        if changes:
            for ch in self._channels.values():
                ch.cast("worker.routes", changes)
        if stale:
            log.warning("worker %d gone: %d users' routes and presence dropped", worker, len(stale))
        self._resync.update(dict.fromkeys(stale))
        self._flush_resync()
        self._connections_changed(worker, self.state.drop_connections(worker))

    def _connections_changed(self, worker: int, ips: list[str]) -> None:
        """Each worker but ``worker`` hears what the others hold now of the IPs whose count
        ``worker`` changed: one cast each, per report (every sync period at most)."""
        if ips:
            for w, ch in self._channels.items():
                if w != worker:
                    ch.cast("worker.conns", self.state.others_connected(w, ips))

    def _flush_resync(self) -> None:
        """A live worker publishes what a dead one's users look like now (it syncs their
        presence: its own devices of them, with the dead worker's fields gone)."""
        if not self._resync or not self._channels:
            return
        users, self._resync = list(self._resync), {}
        self._channels[min(self._channels)].cast("worker.resync", users)

    @property
    def workers(self) -> list[int]:
        return sorted(self._channels)

    def is_connected(self, user_id: int) -> bool:
        """Has the user a device connected to some worker (the store's ServiceCtx asks, from
        its writer thread too: one dict lookup, atomic under the GIL)."""
        return user_id in self.state.routes

    async def stop(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._watchers.clear()

    # --- committed entries ---------------------------------------------------------------
    def entries_routed(self, worker: int, op: str, reply: Any) -> Any:
        """``reply`` (what the StoreServer gave for worker ``worker``'s call ``op``: a Future,
        a coroutine or a value), with the timeline entries it holds routed once the store has
        committed them and before the call's reply is written.

        Why this keeps one user's pushes in commit order on every worker: the writer resolves
        the futures of a commit batch in commit order, in one loop callback, and each
        future's callbacks run in the order they were added — this routing first, the
        channel's reply second. So on each worker's FIFO channel the entries it is sent and
        the replies to its own sends stand in commit order; the worker pushes the first as
        they are read, behind the pushes its earlier replies scheduled (WorkerBus.on_cast),
        and the second when their future's callback runs. An op answered by a coroutine (a
        recall, a group change) is routed when that coroutine returns, which may be a loop
        turn after a send committed later: such a device sees a seq jump and syncs
        (docs/protocol.md §12.1)."""
        if isinstance(reply, asyncio.Future):
            # Also when it is done already (an idle writer ran the send inline): a callback
            # added then is scheduled behind those of the futures resolved before it, whose
            # replies and entries are not written yet; routing it at once would overtake them.
            reply.add_done_callback(lambda fut: self._committed(worker, op, fut))
            return reply
        if asyncio.iscoroutine(reply):
            return self._routed_when_done(worker, op, reply)
        self._route_entries(worker, entries_in(op, reply))
        return reply

    async def _routed_when_done(self, worker: int, op: str, call: Awaitable[Any]) -> Any:
        reply = await call
        self._route_entries(worker, entries_in(op, reply))
        return reply

    def _committed(self, worker: int, op: str, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._route_entries(worker, entries_in(op, fut.result()))

    def _route_entries(self, worker: int, entries: list[SendResult]) -> None:
        """Each entry to every worker but ``worker`` (whose own publish pushes it to its
        devices) holding a device of a recipient: one ``worker.entry`` cast per entry per
        target worker, which makes the event's JSON itself."""
        workers_of = self.state.workers_of
        for entry in entries:
            if entry.duplicate or not entry.deliveries:
                continue  # a resend is pushed nowhere (its first send was)
            per: dict[int, list[tuple[int, int]]] = {}
            for d in entry.deliveries:
                for w in workers_of(d[0]):
                    if w != worker:
                        per.setdefault(w, []).append(d)
            for w, ds in per.items():
                channel = self._channels.get(w)
                if channel is not None:
                    channel.cast("worker.entry", EntryOut(entry.message, ds))
            self.forwarded += len(per)

    # --- frames --------------------------------------------------------------------------
    def _routes_changed(self, user_id: int, workers: list[int] | None) -> None:
        if workers is None:
            return
        change = [(user_id, workers)]
        for ch in self._channels.values():
            ch.cast("worker.routes", change)

    def _kick(self, kicks: list[Kick], user_id: int) -> None:
        for k in kicks:
            ch = self._channels.get(k.worker)
            if ch is not None:
                ch.cast("worker.close", Close(user_id, k.device_id, k.code, k.reason, k.before_ms, k.serial))

    def _others(self, worker: int) -> Iterable[Channel]:
        return (ch for w, ch in self._channels.items() if w != worker)

    def on_call(self, worker: int, op: str, body: msgspec.Raw) -> Any:
        if worker not in self._channels:
            raise YimError("unavailable", f"worker {worker} is not attached")
        state = self.state
        if op == "hub.route":
            r = _ROUTE.decode(body)
            kicks, workers, policy_due = state.register(worker, r)
            # Other workers hear of the route before this reply leaves: see WorkerBus.
            self._routes_changed(r.user_id, workers)
            self._kick(kicks, r.user_id)
            return policy_due
        if op == "hub.presence_sync":
            return state.presence_sync(worker, _PRESENCE.decode(body))
        if op == "hub.presence_read":
            return state.presence_read(worker, _PRESENCE_READ.decode(body))
        if op == "hub.device_present":
            dv = _DEVICE.decode(body)
            return state.device_present(dv.user_id, dv.device_id)
        if op == "hub.agent":
            ag = _AGENT.decode(body)
            if ag.online:
                state.agents.add(ag.user_id)
            else:
                state.agents.discard(ag.user_id)
            for other in self._others(worker):
                other.cast("worker.agent", ag)
            return None
        if op == "hub.debit":
            spent = _DEBIT.decode(body).spent
            levels = state.debit(spent, self._clock())
            # Every other worker sets its own copy of these buckets too: one that never
            # spent for a key would otherwise allow a full burst of it on top.
            told = Levels([(name, key, level) for (name, key, *_), level in zip(spent, levels, strict=True)])
            for other in self._others(worker):
                other.cast("worker.levels", told)
            return levels
        if op == "hub.take":
            return state.take(_TAKE.decode(body), self._clock())
        if op == "hub.backoff":
            return state.backoff(_BACKOFF.decode(body), self._clock())
        if op == "hub.ping":
            return None
        if op == "hub.metrics":
            return self._metrics_of_others(worker)
        raise YimError("bad_request", f"unknown hub call {op!r}")

    async def _metrics_of_others(self, worker: int) -> list[msgspec.Raw]:
        """``hub.metrics``: every other worker's snapshot of its metrics (``worker.metrics``,
        asked of all at once), passed on as each sent it: the asking worker decodes and sums
        them, not the store process, the one process every message crosses."""
        asks: list[Awaitable[msgspec.Raw]] = [
            bounded(ch.call("worker.metrics", None, msgspec.Raw), METRICS_WAIT_S)
            for w, ch in sorted(self._channels.items())
            if w != worker
        ]
        got = await asyncio.gather(*asks, return_exceptions=True)
        return [snap for snap in got if isinstance(snap, msgspec.Raw)]

    def on_cast(self, worker: int, op: str, body: msgspec.Raw) -> None:
        if worker not in self._channels:
            return  # a late frame of a worker already dropped
        state = self.state
        if op == "hub.ev":
            ev = _EVENT.decode(body)
            per: dict[int, list[tuple[int, int]]] = {}
            for d in ev.deliveries:
                for w in state.workers_of(d[0]):
                    if w != worker:
                        per.setdefault(w, []).append(d)
            for w, ds in per.items():
                # all of it for one worker (the common case): the body goes on as it came
                out = body if len(ds) == len(ev.deliveries) else EventOut(ev.type, ev.payload, ds)
                self._channels[w].cast("worker.ev", out)
            self.forwarded += len(per)
        elif op == "hub.no":
            no = _NOTICE.decode(body)
            per_u: dict[int, list[int]] = {}
            for u in no.users:
                for w in state.workers_of(u):
                    if w != worker:
                        per_u.setdefault(w, []).append(u)
            for w, us in per_u.items():
                out_no = body if len(us) == len(no.users) else NoticeOut(no.type, no.payload, us)
                self._channels[w].cast("worker.no", out_no)
            self.forwarded += len(per_u)
        elif op == "hub.policy":
            p = _POLICY.decode(body)
            kicks, workers = state.apply_policy(worker, p)
            self._routes_changed(p.user_id, workers)
            self._kick(kicks, p.user_id)
        elif op == "hub.unroute":
            gone = _UNROUTE.decode(body)
            if gone.back is None:
                self._routes_changed(gone.user_id, state.unregister(worker, gone))
            else:
                before = state.workers_of(gone.user_id)
                kicks = state.hand_back(worker, gone)
                after = state.workers_of(gone.user_id)  # changed only if the policy closed it
                self._routes_changed(gone.user_id, list(after) if after != before else None)
                self._kick(kicks, gone.user_id)
        elif op == "hub.revoke":
            rv = _REVOKE.decode(body)
            for other in self._others(worker):
                other.cast("worker.revoke", rv)
        elif op == "hub.conns":
            self._connections_changed(worker, state.count_connections(worker, _CONNS.decode(body)))
        elif op == "hub.roster":
            conv_id = _INT.decode(body)
            for other in self._others(worker):
                other.cast("worker.roster", conv_id)
        else:
            log.warning("worker %d: unknown hub cast %r dropped", worker, op)
