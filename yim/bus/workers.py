"""The worker's side of a multi-process node: its bus and its view of the shared state.

A node started with ``--workers N`` runs N worker processes, each a Node with its own event
loop, around one store process that holds the store and the :class:`~yim.bus.workers_hub.
WorkerHub` (routes, presence, online agents, shared rate limits). A worker talks to the
store process over one :class:`~yim.ipc.channel.Channel`; this module's ops on it are
``hub.*`` (worker -> hub) and ``worker.*`` (hub -> worker, routed here by :meth:`WorkerBus.
on_cast`).

Push stays a shortcut (see :mod:`yim.bus.local`): an event is committed before it is
published, and a device that misses a push finds it by ``sync``.

Timeline entries (messages, recalls, edits, group changes: every ``message`` event, the hot
path) are routed by the store process, not by the worker that sent them: when the store
answers a call whose reply holds a committed entry, the hub casts ``worker.entry`` (the entry
itself: the worker makes the event's JSON) to every other worker holding a recipient's device, before the reply leaves
(:meth:`~yim.bus.workers_hub.WorkerHub.entries_routed`); the sending worker pushes to its own
devices only (:meth:`WorkerBus.publish_entry`). One hop from the store to the device's
worker, and in commit order:

- the store's writer resolves a batch's futures in commit order, and each future routes its
  entry before its reply is written, so on every worker's FIFO channel the entries sent to
  it and the replies to its own sends stand in commit order;
- a worker reads its channel in order; a reply schedules its push (the send's future
  callback), and an entry read after it is pushed behind it (``worker.entry`` is handled
  with ``call_soon``, not at once). So a device sees its inbox seqs one by one, whichever workers
  the senders are on — except when a send's publish waits one more turn (a body the word
  filter masked, echoed through a second future) or the entry came from a coroutine's
  reply (a recall, a group change, routed when the coroutine returns): then a later entry
  may come first, the device sees the jump and syncs (docs/protocol.md §12.1).

Other events (read markers, receipts, reactions, customer-service events, notices) are
forwarded without a round trip. Each worker keeps a replica of "which users have devices on
which workers" (``remote``: user -> the *other* workers holding some). The hub casts every
change of a user's set of workers to every worker, and a worker's first frame is a snapshot
of the whole table, so the replica is complete from the start. To publish, a worker pushes
to its own connections at once (LocalBus), then casts ``hub.ev`` / ``hub.no`` with just the
recipients found in the replica — nothing at all when none is elsewhere, the common case —
and the hub sends each worker that holds some of them one cast with its part. These keep
the order of one sending worker (its casts leave in order on its one channel, the hub handles
a channel's frames in arrival order and casts on at once, each target channel is FIFO); one
user's events through two workers may interleave, and a device that sees a seq jump syncs.

Why a device connected elsewhere never misses an event committed after its first sync:
``connected`` registers the route with a *call* (``hub.route``) before the auth reply. The
hub casts the change to every other worker before it answers that call, each on that
worker's one FIFO channel, and from then on routes entries to it. The device syncs only after
the auth reply, and an event committed after that sync is answered to the sending worker on
the same channel as the route change, later — so the sending worker has applied the change
before it publishes. (Its replica only decides whether to cast at all; the hub targets by its
own exact routes.)

Kicks, revocations and roster invalidations go through the hub to every worker concerned,
with the same effects as the cluster bus's (:mod:`yim.bus.redis`): 4002 for an older
connection of the same device on another worker, 4006 for the multi-device policy counted
over every worker, revoked sessions closed and dropped from every worker's cache, stale
rosters dropped. The policy's 4006 waits for the connect to pass its checks, as on one node,
where the Hub applies it at registration: ``hub.route`` answers whether it has devices to
sign out, and ``registered`` then casts ``hub.policy``; a connect that fails signs no one
out.

A route names one connection (its serial, :func:`_serial`), and so does a kick
(``worker.close``): a device may have two connections on one worker at once — the
registered one and a reconnect still in its auth checks, whose ``hub.route`` replaced the
other's route — and a kick closes the one it names, never the other. Every connect routed
from here ends registered or unrouted: ``connected`` that raises (cancelled, or its channel
failing) unroutes what its call may still have routed, and a connect that fails after it
(the revocation re-check of :mod:`yim.gateway.ws`) is unrouted there by ``disconnected``.
When such a failed connect had replaced the route of an older connection of the device still
registered here, the hub hands the route back to that one in the same step that drops the
failed one's (``UnrouteIn.back``, ``HubState.hand_back``): the device keeps the connection it
had, as on one node, and its route never leaves this worker, so nothing committed meanwhile
misses it. If a newer connection elsewhere or the multi-device policy took the route in
between, the kick that took it named the failed connect, and the hub closes the older one
in its place.

:class:`WorkerState` is the worker's ``SharedState`` (presence, online agents) and the
``SharedBuckets`` of ``Limits.share``, answered by the hub. Sends are checked against the
worker's own buckets in memory (the hot path makes no call); what it spent goes to the hub
in one call every ``cluster_limits_sync_s`` and the worker's buckets are set to the shared
levels, so N workers give the budget of one over any period longer than that (within it a
user spending through several workers at once can overdraw by what they spend in it, which
the shared bucket carries as debt). Login and registration checks are one call each, exact.
The per-request, upload and typing buckets are shared the same way. Connections per IP are
counted for the node: a worker admits or refuses a connection at once from its own counts
plus the other workers' as the hub last told it (``worker.conns``), and reports its changed
counts to the hub (``hub.conns``) in the same beat as its spending, so the node holds at
most the cap plus what the other workers admit from that IP within one sync period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from yim.bus.bounded import bounded
from yim.bus.local import LocalBus
from yim.bus.shared_limits import SharedSpending, Spending
from yim.bus.workers_hub import (
    METRICS_WAIT_S,
    Agent,
    BackoffOp,
    Close,
    DebitIn,
    DeviceIn,
    EntryOut,
    EventOut,
    Levels,
    NoticeOut,
    PolicyIn,
    PresenceIn,
    PresenceOut,
    PresenceReadIn,
    PresenceReadOut,
    Revoke,
    RouteIn,
    Snapshot,
    TakeIn,
    UnrouteIn,
    shared_set,
)
from yim.ids.snowflake import MAX_NODE, Snowflake
from yim.metrics import Family, node_exposition, snapshot
from yim.protocol.close import CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.services.context import LocalDevices, PresenceChange, State
from yim.services.presence import shared_state
from yim.services.wire import message_json

if TYPE_CHECKING:
    from yim.bus.local import NodeHooks
    from yim.config import Settings
    from yim.ipc.channel import Channel
    from yim.metrics import Metrics
    from yim.services.context import Device as Connection
    from yim.services.context import Devices, SharedState

log = logging.getLogger("yim.bus.workers")

#: notices to more users than this walk the replica instead of the recipients
NOTICE_SCAN_MAX = 256

# The bodies of the casts a worker takes, decoded once each into their final types.
_EVENT = msgspec.msgpack.Decoder(EventOut)
_ENTRY = msgspec.msgpack.Decoder(EntryOut)
_NOTICE = msgspec.msgpack.Decoder(NoticeOut)
_CLOSE = msgspec.msgpack.Decoder(Close)
_REVOKE = msgspec.msgpack.Decoder(Revoke)
_AGENT = msgspec.msgpack.Decoder(Agent)
_SNAPSHOT = msgspec.msgpack.Decoder(Snapshot)
_LEVELS = msgspec.msgpack.Decoder(Levels)
_ROUTES = msgspec.msgpack.Decoder(list[tuple[int, list[int]]])
_USERS = msgspec.msgpack.Decoder(list[int])
_INT = msgspec.msgpack.Decoder(int)
_CONNS = msgspec.msgpack.Decoder(list[tuple[str, int]])
_SNAPSHOT_OF_WORKER = msgspec.msgpack.Decoder(list[Family])


def _serial(conn: Connection) -> int:
    """The number that names a connection's route to the hub (``RouteIn.serial``, and
    ``Close.serial`` of a kick for it): its object id, so a worker keeps no table of its
    registered connections for it. Two connections of one device on this worker never share
    it: a connection's unroute is cast while it lives, before another object can take its
    id, and a later connection's route call leaves after that cast on the same FIFO channel,
    so the hub drops the older route first."""
    return id(conn)


def _route_in(conn: Connection) -> RouteIn:
    """The hub's record of the connection's route (its connect time in this host's
    monotonic ms: the workers of one node share the host)."""
    return RouteIn(conn.user_id, conn.device_id, conn.platform, int(conn.connected_at * 1000), _serial(conn))


class WorkerBus(LocalBus):
    """The bus of worker ``worker`` (0-based); see the module docstring.

    Built before its channel (the channel's handlers are this bus's :meth:`on_call` and
    :meth:`on_cast`), then given it with :meth:`bind`, before the store process writes a
    frame to it."""

    def __init__(
        self, hub: Devices, metrics: Metrics, settings: Settings, node: NodeHooks, worker: int, workers: int
    ) -> None:
        super().__init__(hub, metrics)
        self._metrics = metrics
        self._scrape: asyncio.Future[bytes] | None = None
        self._node = node
        self.worker = worker
        self.workers = workers
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop  # the loop the channel runs on (bind)
        #: serial -> the connection routed from here and not yet in the Hub (its auth checks
        #: still running): a kick naming it must find it, and its end must know it never was
        #: registered. Entries leave at ``registered`` or ``disconnected`` (or when
        #: ``connected`` raises), so this holds only connects in progress.
        self._routing: dict[int, Connection] = {}
        #: the serials of connects in progress whose ``hub.route`` answered that the
        #: multi-device policy has devices to sign out: ``registered`` asks the hub to apply
        #: it (``hub.policy``), a failed connect forgets it (HubState.register says why)
        self._policy_due: set[int] = set()
        #: user -> the other workers that hold a device of the user (the replica; the tuples
        #: shared through ``_sets``, see shared_set)
        self.remote: dict[int, tuple[int, ...]] = {}
        self._sets: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._snapshot = asyncio.Event()
        self.state = WorkerState(self, settings)
        self.remote_in = 0  # worker.entry / worker.ev / worker.no casts received
        self.remote_out = 0  # hub.ev / hub.no casts sent

    def bind(self, channel: Channel) -> None:
        self._channel = channel
        self._loop = asyncio.get_running_loop()

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise YimError("unavailable", "this worker has no channel to the store process yet")
        return self._channel

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Wait for the hub's snapshot (its first frame): until then the replica is empty."""
        try:
            await bounded(self._snapshot.wait(), 10)
        except TimeoutError:
            raise YimError("unavailable", "the store process sent no routes within 10 s") from None

    async def stop(self) -> None:
        """Nothing to flush: casts leave at the end of the loop turn that wrote them."""

    async def ping(self) -> None:
        await self.channel.call("hub.ping", None)

    def make_ids(self, node_id: int, floor: int) -> Snowflake:
        """Each worker issues ids with a node id of its own: the node's plus its number."""
        return Snowflake((node_id + self.worker) % (MAX_NODE + 1), floor=floor)

    # --- routes --------------------------------------------------------------------------
    async def connected(self, conn: Connection) -> None:
        """Register the device's route with the hub before its auth reply: once the call
        returns, every other worker routes to it (see the module docstring).

        Raising, it leaves no route: the call may have been written, and be served, before
        the caller gave up (cancelled, its channel failing), so the route is dropped as a
        failed connect's is (:meth:`disconnected`) — by its serial, which cannot name a
        newer connection's route."""
        serial = _serial(conn)
        self._routing[serial] = conn
        try:
            policy_due: bool = await self.channel.call("hub.route", _route_in(conn), bool)
        except BaseException:
            self.disconnected(conn)
            raise
        if policy_due:
            self._policy_due.add(serial)

    def registered(self, conn: Connection) -> None:
        serial = _serial(conn)
        self._routing.pop(serial, None)
        if serial in self._policy_due:
            self._policy_due.discard(serial)
            # One closed in its checks (replaced, kicked) signs no one out.
            if self._channel is not None and not conn.closing:
                self._channel.cast("hub.policy", PolicyIn(conn.user_id, conn.device_id, serial))

    def disconnected(self, conn: Connection) -> None:
        """Unroute the connection. The hub drops the route only if it is still this
        connection's (the serial names it), so a newer connection of the device stays.

        A connection that never was registered (its connect failed after :meth:`connected`:
        the revocation re-check, a cancel) may have taken over the route of an older
        connection of the device that is still registered here and live. That one keeps
        the device: the hub hands the route back to it in the same step that drops this
        one's (UnrouteIn.back, HubState.hand_back), or closes it if a newer connection or
        the multi-device policy took the route meanwhile."""
        back = None
        self._policy_due.discard(_serial(conn))  # a failed connect signs no one out
        if self._routing.pop(_serial(conn), None) is not None:
            held = self._hub.devices_of(conn.user_id).get(conn.device_id)
            if held is not None and held is not conn and not held.closing:
                back = _route_in(held)
        if self._channel is not None:
            self._channel.cast("hub.unroute", UnrouteIn(conn.user_id, conn.device_id, _serial(conn), back))

    # --- publishing ----------------------------------------------------------------------
    def publish_event(
        self,
        deliveries: list[tuple[int, int]],
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
    ) -> None:
        super().publish_event(deliveries, type_, payload_json, origin)
        remote = self.remote
        if remote and self._channel is not None:
            away = [d for d in deliveries if d[0] in remote]
            if away:
                self._channel.cast("hub.ev", EventOut(type_, payload_json, away))
                self.remote_out += 1

    def publish_entry(
        self, deliveries: list[tuple[int, int]], payload_json: bytes, origin: Connection | None = None
    ) -> None:
        """This worker's own devices only: the store process sent the entry's event to the
        other workers holding a recipient when it committed it (WorkerHub.entries_routed)."""
        LocalBus.publish_event(self, deliveries, "message", payload_json, origin)

    def publish_notice(
        self,
        user_ids: Iterable[int],
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
        skip: set[int] | None = None,
    ) -> None:
        remote = self.remote
        if not remote or self._channel is None:
            super().publish_notice(user_ids, type_, payload_json, origin, skip)
            return
        if isinstance(user_ids, set | frozenset) and len(user_ids) > NOTICE_SCAN_MAX and len(remote) < len(user_ids):
            away = [u for u in remote if u in user_ids and not (skip and u in skip)]  # a big group
        else:
            if not isinstance(user_ids, set | frozenset | list | tuple):
                user_ids = list(user_ids)  # walked twice
            away = [u for u in user_ids if u in remote and not (skip and u in skip)]
        super().publish_notice(user_ids, type_, payload_json, origin, skip)
        if away:
            self._channel.cast("hub.no", NoticeOut(type_, payload_json, away))
            self.remote_out += 1

    def sessions_revoked(self, user_id: int, session_ids: list[str], reason: str, code: int = CLOSE_REVOKED) -> None:
        if self._channel is not None:
            self._channel.cast("hub.revoke", Revoke(user_id, list(session_ids), reason, code))

    def roster_changed(self, conv_id: int) -> None:
        if self._channel is not None:
            self._channel.cast("hub.roster", conv_id)

    # --- metrics of the whole node -------------------------------------------------------
    async def node_metrics(self, store_stats: Callable[[], Awaitable[dict[str, int]]]) -> bytes:
        """What ``GET /metrics`` of this worker answers: every worker's metrics summed, the
        store's (``store_stats``) once; see yim/metrics.py. Scrapes that come while one is
        under way share its answer, so a flood of them asks the other workers no more."""
        if self._scrape is None:
            self._scrape = asyncio.ensure_future(self._gather_metrics(store_stats))
            self._scrape.add_done_callback(self._scraped)
        return await asyncio.shield(self._scrape)

    def _scraped(self, fut: asyncio.Future[bytes]) -> None:
        self._scrape = None

    async def _gather_metrics(self, store_stats: Callable[[], Awaitable[dict[str, int]]]) -> bytes:
        # The hub waits METRICS_WAIT_S for each worker; a hub that does not answer in time
        # leaves this worker's own metrics alone in the answer (and no store series).
        wait = METRICS_WAIT_S + 1.0
        others, stats = await asyncio.gather(
            bounded(self.channel.call("hub.metrics", None, list[msgspec.Raw]), wait),
            bounded(store_stats(), wait),
            return_exceptions=True,
        )
        snapshots = [snapshot(self._metrics.registry)]
        if isinstance(others, list):
            snapshots += [_SNAPSHOT_OF_WORKER.decode(raw) for raw in others]
        else:
            log.warning("metrics of the other workers unavailable: %s", str(others) or type(others).__name__)
        return node_exposition(snapshots, stats if isinstance(stats, dict) else None)

    # --- frames from the store process ---------------------------------------------------
    def on_call(self, op: str, body: msgspec.Raw) -> Any:
        if op == "worker.metrics":
            return snapshot(self._metrics.registry)
        raise YimError("bad_request", f"a worker answers no call {op!r}")

    def on_cast(self, op: str, body: msgspec.Raw) -> None:
        if op == "worker.entry":
            committed = _ENTRY.decode(body)
            self.remote_in += 1
            # Behind the pushes of the replies read before it (their futures' callbacks are
            # already scheduled): an entry committed earlier through this worker is pushed
            # first, as its reply came first (see the module docstring).
            self._loop.call_soon(self._push_entry, committed)
        elif op == "worker.ev":
            ev = _EVENT.decode(body)
            self.remote_in += 1
            self._loop.call_soon(LocalBus.publish_event, self, ev.deliveries, ev.type, ev.payload)  # as worker.entry
        elif op == "worker.no":
            no = _NOTICE.decode(body)
            self.remote_in += 1
            self._loop.call_soon(LocalBus.publish_notice, self, no.users, no.type, no.payload)  # as worker.entry
        elif op == "worker.routes":
            self._apply_routes(_ROUTES.decode(body))
        elif op == "worker.close":
            c = _CLOSE.decode(body)
            # Exactly the connection the serial names: registered, or still in its auth
            # checks. A device may have both here at once (a reconnect while the old
            # connection lives), and the kick is for one of them only: the other one is
            # settled by the named one's own end (it replaces it when registered, or hands
            # the route back to it, HubState.hand_back). before_ms guards against an id
            # taken again by a new connection while the kick of a gone one was on its way.
            conn = self._routing.get(c.serial)
            if conn is None:
                conn = self._hub.devices_of(c.user_id).get(c.device_id)
                if conn is not None and _serial(conn) != c.serial:
                    conn = None
            if (
                conn is not None
                and conn.user_id == c.user_id
                and conn.device_id == c.device_id
                and int(conn.connected_at * 1000) <= c.before_ms
            ):
                conn.close(c.code, c.reason)
        elif op == "worker.revoke":
            rv = _REVOKE.decode(body)
            self._node.forget_sessions(rv.session_ids)
            self._hub.close_sessions(rv.user_id, set(rv.session_ids), rv.code, f"session revoked: {rv.reason}")
        elif op == "worker.roster":
            self._node.forget_rosters(_INT.decode(body))
        elif op == "worker.agent":
            ag = _AGENT.decode(body)
            if ag.online:
                self.state.agents_online.add(ag.user_id)
            else:
                self.state.agents_online.discard(ag.user_id)
        elif op == "worker.levels":
            self.state.set_levels(_LEVELS.decode(body).levels)
        elif op == "worker.conns":
            self.state.others_connected(_CONNS.decode(body))
        elif op == "worker.resync":
            self.state.resync_soon(_USERS.decode(body))
        elif op == "worker.snapshot":
            snap = _SNAPSHOT.decode(body)
            self.remote = {}
            self._apply_routes(snap.routes)
            self.state.agents_online = set(snap.agents)
            self._snapshot.set()
        else:
            log.warning("unknown worker cast %r dropped", op)

    def _push_entry(self, entry: EntryOut) -> None:
        LocalBus.publish_event(self, entry.deliveries, "message", message_json(entry.message))

    def _apply_routes(self, changes: list[tuple[int, list[int]]]) -> None:
        me = self.worker
        remote = self.remote
        for user_id, workers in changes:
            others = tuple(w for w in workers if w != me)
            if others:
                remote[user_id] = shared_set(self._sets, others)
            else:
                remote.pop(user_id, None)


class PerIpCounts(Protocol):
    """A worker's open connections per IP (yim.gateway.limits.ConnectionCounts)."""

    changed: set[str] | None

    def changes(self) -> list[tuple[str, int]]: ...

    def unreported(self, counts: list[tuple[str, int]]) -> None: ...

    def set_others(self, counts: list[tuple[str, int]]) -> None: ...


class WorkerState(SharedSpending):
    """The worker's view of what all workers share (``node.cluster``, ``presence.cluster``,
    and ``Limits.share``'s buckets), answered by the hub; see the module docstring."""

    def __init__(self, bus: WorkerBus, settings: Settings) -> None:
        self._bus = bus
        self._sync_s = settings.cluster_limits_sync_s
        self.timeout_s = settings.cluster_state_timeout_s
        #: False after a failed call until the hub answers again: checks use this worker's
        #: own state meanwhile
        self.healthy = True
        self._down_logged = False
        #: agents online on any worker (a copy the hub keeps current by casts)
        self.agents_online: set[int] = set()
        self._init_spending()  # yim/bus/shared_limits.py
        self._resync: Callable[[Iterable[int], set[str]], Awaitable[bool]] | None = None
        self._resync_pending: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._limits_task: asyncio.Task[None] | None = None
        self._recover_task: asyncio.Task[None] | None = None
        self._connections: PerIpCounts | None = None
        #: ``worker.conns`` come before the node counted its connections here (the hub's
        #: first frames are read while the node is being built): applied by count_connections
        self._others_early: list[tuple[str, int]] = []

    async def _call(self, op: str, body: Any, reply_type: Any) -> Any:
        return await bounded(self._bus.channel.call(op, body, reply_type), self.timeout_s)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, resync: Callable[[Iterable[int], set[str]], Awaitable[bool]]) -> None:
        """``resync(users, swept)`` syncs users' presence again (the presence service): the
        hub asks for it when a dead worker's devices counted in users' presence."""
        self._resync = resync
        if self._resync_pending:  # asked before this worker could
            self.resync_soon(self._resync_pending)
            self._resync_pending = []
        self._limits_task = asyncio.get_running_loop().create_task(self._limits_forever(), name="yim-worker-limits")

    async def stop(self) -> None:
        tasks = [t for t in (self._limits_task, self._recover_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush_spent()

    def unavailable(self, exc: BaseException) -> None:
        """A call to the hub failed: checks use this worker's own state until it answers."""
        if not self._down_logged:
            log.warning(
                "shared state of the workers unavailable (%s): presence, limits and agents are per worker",
                str(exc) or type(exc).__name__,
            )
            self._down_logged = True
        self.healthy = False
        if self._recover_task is None or self._recover_task.done():
            self._recover_task = asyncio.get_running_loop().create_task(self._recover(), name="yim-worker-recover")

    async def _recover(self) -> None:
        pause = 0.05
        while True:
            await asyncio.sleep(pause)
            if self._bus.channel.closed.is_set():
                return  # the store process is gone: this worker is being stopped
            try:
                await self._call("hub.ping", None, Any)
            except Exception:
                pause = min(pause * 2, 1.0)
                continue
            log.warning("shared state of the workers reachable again")
            self._down_logged = False
            self.healthy = True
            return

    def resync_soon(self, users: list[int]) -> None:
        """The hub asks this worker to publish these users' presence as it is now."""
        if self._resync is None:
            self._resync_pending += users  # once, at start(): bounded by the users of one worker
            return
        task = asyncio.get_running_loop().create_task(self._resync_users(self._resync, users))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _resync_users(resync: Callable[[Iterable[int], set[str]], Awaitable[bool]], users: list[int]) -> None:
        try:
            await resync(users, set())
        except Exception:
            log.exception("presence of %d users a dead worker held: sync failed", len(users))

    # --- presence ------------------------------------------------------------------------
    async def presence_sync(self, users: dict[int, LocalDevices], swept: set[str]) -> list[PresenceChange]:
        """Write this worker's devices of each user (none: remove them) and aggregate over
        every worker; the hub also says who may be a customer-service agent (the store
        process knows it in memory, this worker's store does not). ``swept`` is the
        cluster's (lapsed nodes): the hub drops a dead worker's devices itself."""
        body = PresenceIn(
            [(u, [(d, st, p, cms) for d, (st, p, cms) in devices.items()]) for u, devices in users.items()],
            int(time.time() * 1000),
        )
        got: PresenceOut = await self._call("hub.presence_sync", body, PresenceOut)
        return [
            # shared states: the presence service keeps the new one for every online user
            PresenceChange(u, changed, shared_state(st, tuple(ps)), shared_state(bst, tuple(bps)), seen, agent)
            for u, changed, st, ps, bst, bps, seen, agent in got
        ]

    async def presence_read(
        self, user_ids: list[int], local: Callable[[int], LocalDevices] | None = None
    ) -> dict[int, tuple[State, int | None]]:
        """Every user's aggregate over all workers, and last seen while offline (``local``:
        count this worker's devices as they are now)."""
        if not user_ids:
            return {}
        here = None
        if local is not None:
            here = {u: [(st, p) for st, p, _ in local(u).values()] for u in user_ids}
        got: PresenceReadOut = await self._call("hub.presence_read", PresenceReadIn(user_ids, here), PresenceReadOut)
        return {u: ((st, tuple(ps)), seen) for u, st, ps, seen in got}

    async def device_present(self, user_id: int, device_id: str) -> bool:
        """Is this device connected to some worker now."""
        found: bool = await self._call("hub.device_present", DeviceIn(user_id, device_id), bool)
        return found

    # --- online agents -------------------------------------------------------------------
    def agent_connected(self, user_id: int) -> bool:
        return user_id in self.agents_online

    async def agent_online(self, user_id: int, online: bool) -> None:
        if online:
            self.agents_online.add(user_id)
        else:
            self.agents_online.discard(user_id)
        await self._call("hub.agent", Agent(user_id, online), Any)

    # --- rate limits ---------------------------------------------------------------------
    async def take(self, name: str, key: Any, rate: float, burst: float, cost: float = 1.0) -> float:
        wait: float = await self._call("hub.take", TakeIn(name, key, rate, burst, cost), float)
        return wait

    async def backoff(self, ops: list[tuple[str, Any, str, Any]]) -> list[float]:
        body = [BackoffOp(name, key, op, b.free, b.base_s, b.max_s, b.window_s) for name, key, op, b in ops]
        waits: list[float] = await self._call("hub.backoff", body, list[float])
        return waits

    def set_levels(self, levels: list[tuple[str, int | str, float]]) -> None:
        """Another worker spent from these shared buckets: this worker's copies follow."""
        for name, key, level in levels:
            self.set_level(name, key, level)

    async def _flush_spent(self) -> None:
        self._report_connections()  # the same beat as the buckets: one sync period bounds both
        await super()._flush_spent()

    async def _debit(self, order: list[Spending]) -> list[float]:
        buckets = self._buckets
        body = DebitIn([(name, key, buckets[name].rate, buckets[name].burst, cost) for name, key, cost in order])
        levels: list[float] = await self._call("hub.debit", body, list[float])
        return levels

    # --- connections per IP, counted for the node -------------------------------------
    def count_connections(self, counts: PerIpCounts) -> None:
        """Count the node's connections per IP with the other workers': ``counts`` (this
        worker's) records its changes from now on, reported to the hub every sync period."""
        counts.changed = set()
        self._connections = counts
        counts.set_others(self._others_early)
        self._others_early = []

    def others_connected(self, counts: list[tuple[str, int]]) -> None:
        """``worker.conns``: what the other workers hold of these IPs now."""
        if self._connections is not None:
            self._connections.set_others(counts)
        else:  # once, at start: bounded by the IPs the node holds connections of
            self._others_early += counts

    def _report_connections(self) -> None:
        counts = self._connections
        if counts is None:
            return
        changes = counts.changes()
        if not changes:
            return
        channel = self._bus._channel
        if channel is None or channel.closed.is_set():
            counts.unreported(changes)  # the next report carries them
            return
        channel.cast("hub.conns", changes)


if TYPE_CHECKING:

    def _shared_state(state: WorkerState) -> SharedState:
        """mypy checks here that a worker's state is what the services take as the cluster's."""
        return state
