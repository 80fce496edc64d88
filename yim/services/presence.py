"""Presence (用户状态): online / away / offline, aggregated over a user's devices.

A device is online while its connection lives; the client says ``away`` (挂起: app in
the background) or ``online`` with ``presence_set``. Liveness is the heartbeat: a device
whose frames stop is closed by the idle sweep after ``idle_timeout_s`` even when no close
ever arrives ("pseudo-online"), and that closing is what turns it offline.

Aggregate: any device online -> online; else any away -> away; else offline, with the
platforms that have a device connected.

Changes go only to those allowed to see them (friends, unless the user hides presence;
never blocked users) and only to their online devices — presence fan-out is the largest
steady load of big chat services, so nothing is sent to offline watchers. A change is
published after ``presence_debounce_s`` of quiet: a connection that flaps and comes back
within that window publishes nothing.

Cluster mode (``redis_url``): the aggregate is over the user's devices on every node
(:mod:`yim.bus.cluster_state`). When a debounce ends, the node writes its own devices of
the user to Redis and learns the new aggregate in the same round trip; the one node that
changed it publishes it, and ``presence_query`` on any node reads the same state, so
queries and pushes agree everywhere. A dead node's users go offline once its liveness
lapses (``cluster_route_ttl_s``). With Redis away, presence is this node's own view, as
on one node.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import PresenceOut, PresencePage, PresenceQuery, PresenceSet
from yim.protocol.ids import parse_id
from yim.services.context import LocalDevices, State
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from yim.services.context import Context, Device, SharedState

log = logging.getLogger("yim.presence")
_enc = msgspec.json.Encoder()
OFFLINE: State = ("offline", ())


#: Every State handed out so far: a user's state is kept as long as the user is online (the
#: published state of every process, the hub's), and a shared tuple costs that user nothing,
#: where one of its own is two tuples (~100 bytes). Statuses and platforms are a handful
#: (protocol literals), so the table stays small; past its bound states are made afresh.
_STATES: dict[State, State] = {OFFLINE: OFFLINE}
_STATES_MAX = 256


def shared_state(status: str, platforms: tuple[str, ...]) -> State:
    """The State (status, platforms), the same object every time the table has room for it."""
    state = (status, platforms)
    got = _STATES.get(state)
    if got is not None:
        return got
    if len(_STATES) < _STATES_MAX:
        state = (sys.intern(status), tuple(sys.intern(p) for p in platforms))
        _STATES[state] = state
    return state


def aggregate_presence(devices: Iterable[tuple[str, str]]) -> State:
    """A user's presence from their connected devices' (status, platform), wherever they
    are connected (this node, the workers of a node, the nodes of a cluster): online if any
    device is online, away if every one is away, offline with none; the platforms sorted."""
    status = "offline"
    platforms: set[str] = set()
    for st, platform in devices:
        if st == "online":
            status = "online"
        elif status != "online":
            status = "away"
        platforms.add(platform)
    return shared_state(status, tuple(sorted(platforms)))


#: Changes whose debounce has ended are published together on ticks at most this far
#: apart, so a burst of connects reaches the store threads as a few batches of reads and
#: agent checks, not one thread wake-up per user.
FLUSH_TICK_S = 0.05


class Presence:
    def __init__(self, node: Context, debounce_s: float) -> None:
        self._node = node
        self._debounce = debounce_s
        self._published: dict[int, State] = {}  # users not offline, as last told to watchers
        # user -> loop time its debounce ends; insertion order is deadline order, since
        # every deadline is the change's time plus the same debounce
        self._pending: dict[int, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_seen: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: cluster mode: the shared state (set by the node)
        self.cluster: SharedState | None = None
        # Cluster syncs run one at a time, each reading the hub when its turn comes, so a
        # later change is never overwritten in Redis by an earlier one; users whose debounce
        # ended meanwhile wait in _dirty (one entry per user: bounded, however slow Redis is).
        self._sync_lock = asyncio.Lock()
        self._dirty: dict[int, None] = {}
        self._syncer: asyncio.Task[None] | None = None
        #: users whose change could not be written to Redis (away): written when it is back
        self._unsynced: set[int] = set()

    def state(self, user_id: int) -> State:
        devices = self._node.hub.devices_of(user_id)
        if not devices:
            return OFFLINE
        return aggregate_presence((conn.presence, conn.platform) for conn in devices.values())

    def changed(self, user_id: int) -> None:
        """A device of the user connected, disconnected or changed status."""
        if not self._node.hub.devices_of(user_id):
            self._last_seen[user_id] = int(time.time() * 1000)
        if user_id not in self._pending:
            loop = asyncio.get_running_loop()
            self._pending[user_id] = loop.time() + self._debounce
            if self._timer is None:
                self._timer = loop.call_later(self._debounce, self._flush_due)

    def _flush_due(self) -> None:
        """Publish every user whose debounce has ended; wait for the next one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self._pending
        due = []
        for user_id, deadline in pending.items():
            if deadline > now:
                break
            due.append(user_id)
        changes = []
        for user_id in due:
            del pending[user_id]
            if self.cluster is None:
                state = self._settle(user_id)
                if state is not None:
                    changes.append((user_id, state))
        if due and self.cluster is not None:
            self._dirty.update(dict.fromkeys(due))
            if self._syncer is None or self._syncer.done():
                self._syncer = loop.create_task(self._sync_dirty())
        if changes:
            self._spawn(self._publish(changes))
        self._timer = None
        if pending:
            first = next(iter(pending.values()))
            # After a batch, let the next one gather for a tick; woken a hair before the
            # first deadline (timers are ms-grained), come back exactly at it.
            self._timer = loop.call_at(max(first, now + FLUSH_TICK_S) if due else first, self._flush_due)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def local_devices(self, user_id: int) -> LocalDevices:
        return {
            device_id: (conn.presence, conn.platform, int(conn.connected_at * 1000))
            for device_id, conn in self._node.hub.devices_of(user_id).items()
        }

    async def _sync_dirty(self) -> None:
        while self._dirty:
            users = list(self._dirty)
            self._dirty.clear()
            try:
                await self.resync(users, set())
            except Exception:
                log.exception("presence sync of %d users failed", len(users))

    async def resync(self, user_ids: Iterable[int], swept: set[str]) -> bool:
        """Cluster mode: write this node's devices of these users to the shared state and
        publish every aggregate that changed (``swept``: lapsed nodes whose fields to drop).
        False if Redis could not be written (this node's own view was published instead)."""
        cluster = self.cluster
        assert cluster is not None
        async with self._sync_lock:
            ids = dict.fromkeys(user_ids)
            ids.update(dict.fromkeys(self._unsynced))
            self._unsynced.clear()
            users = {u: self.local_devices(u) for u in ids}
            try:
                if not cluster.healthy:  # no wait for a timeout: known to be away
                    raise ConnectionError("Redis is unavailable")
                found = await cluster.presence_sync(users, swept)
            except Exception as exc:  # Redis away: publish this node's own view, as on one node
                cluster.unavailable(exc)
                self._unsynced.update(users)
                changes = [(u, st) for u in users if (st := self._settle(u)) is not None]
                if changes:
                    await self._publish(changes)
                return False
            changes = []
            for ch in found:
                if not ch.changed:
                    continue
                offline = ch.state[0] == "offline"
                if offline and ch.last_seen is not None:
                    self._last_seen[ch.user_id] = ch.last_seen
                # came online, or went offline, anywhere; the agent check only for users the
                # shared state does not know to be no agent (a burst of connects costs no
                # store round trip per user)
                if (ch.before[0] == "offline") != offline and ch.may_be_agent:
                    self._node.service.presence_changed(ch.user_id, not offline)
                # what watchers were told, should Redis go away and this node publish alone
                if offline:
                    self._published.pop(ch.user_id, None)
                else:
                    self._published[ch.user_id] = ch.state
                changes.append((ch.user_id, ch.state))
        if changes:
            await self._publish(changes)
        return True

    async def view(self, user_ids: list[int], fresh: bool = False) -> dict[int, tuple[State, int | None]]:
        """Users' presence and last-seen as every node sees it (cluster mode: from Redis;
        ``fresh``: this node's devices as they are now, before their debounce ends)."""
        cluster = self.cluster
        if cluster is not None and cluster.healthy:  # Redis away: no wait for it to time out
            try:
                return await cluster.presence_read(user_ids, self.local_devices if fresh else None)
            except Exception as exc:
                cluster.unavailable(exc)
        return {u: (st := self.state(u), self._last_seen.get(u) if st == OFFLINE else None) for u in user_ids}

    def _settle(self, user_id: int) -> State | None:
        """The user's state to publish now, or None if watchers already know it."""
        state = self.state(user_id)
        if state == self._published.get(user_id, OFFLINE):
            return None  # flapped back within the window: nothing to tell
        was_offline = user_id not in self._published
        if state == OFFLINE:
            self._published.pop(user_id, None)
        else:
            self._published[user_id] = state
        if was_offline != (state == OFFLINE):  # came online, or went offline
            self._node.service.presence_changed(user_id, state != OFFLINE)
        return state

    def last_seen(self, user_id: int) -> int | None:
        return self._last_seen.get(user_id)

    def payload(self, user_id: int, state: State) -> bytes:
        status, platforms = state
        return _enc.encode(
            PresenceOut(
                user_id=str(user_id),
                status=status,
                platforms=list(platforms),
                last_seen=self._last_seen.get(user_id) if status == "offline" else None,
            )
        )

    async def _publish(self, changes: list[tuple[int, State]]) -> None:
        """Tell each changed user's audience, all audiences read in one store round trip."""
        try:
            audiences = await self._node.store.relations.presence_audiences([user_id for user_id, _ in changes])
        except Exception:
            log.exception("presence audiences of %d users failed", len(changes))
            return
        for user_id, state in changes:
            # The user's own other devices see it too (a "my devices" view).
            audience = audiences.get(user_id, [])
            self._node.bus.publish_notice([*audience, user_id], "presence", self.payload(user_id, state))

    def share(self, a: int, b: int) -> None:
        """Two users just became friends: show each the other's current presence."""
        for user, watcher in ((a, b), (b, a)):
            if self.cluster is not None:
                self._spawn(self._share(user, watcher, None))
                continue
            state = self.state(user)
            if state != OFFLINE:
                self._spawn(self._share(user, watcher, state))

    async def _share(self, user_id: int, watcher: int, state: State | None) -> None:
        if state is None:  # cluster mode: the aggregate over every node
            state = (await self.view([user_id]))[user_id][0]
            if state == OFFLINE:
                return
        if watcher in await self._node.store.relations.presence_audience(user_id):
            self._node.bus.publish_notice([watcher], "presence", self.payload(user_id, state))

    async def stop(self) -> None:
        """No more changes: the timer, the Redis sync and the pushes in flight end here,
        before the node closes the cluster state and the store under them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._dirty.clear()
        tasks = [*self._tasks, *([self._syncer] if self._syncer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._syncer = None


async def presence_set(
    node: Context, session: SessionRec, req: PresenceSet, origin: Device | None = None
) -> PresenceOut:
    if origin is None:
        raise YimError("bad_request", "presence is a property of a live connection: send it over the WebSocket")
    origin.presence = req.status
    node.presence.changed(session.user_id)
    status, platforms = (await node.presence.view([session.user_id], fresh=True))[session.user_id][0]
    return PresenceOut(user_id=str(session.user_id), status=status, platforms=list(platforms))


async def presence_query(
    node: Context, session: SessionRec, req: PresenceQuery, origin: Device | None = None
) -> PresencePage:
    """Many users at once; those who do not let the viewer see them read as offline."""
    ids = list(dict.fromkeys(parse_id(u, "user") for u in req.user_ids))
    visible = await node.store.relations.presence_visible(session.user_id, ids)
    seen = await node.presence.view([uid for uid in ids if uid in visible])
    out = []
    for uid in ids:
        (status, platforms), last_seen = seen.get(uid, (OFFLINE, None))
        out.append(PresenceOut(user_id=str(uid), status=status, platforms=list(platforms), last_seen=last_seen))
    return PresencePage(presence=out)
