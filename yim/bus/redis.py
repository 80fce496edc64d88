"""The cluster bus: cross-node push, device routing and node-id leases on Redis.

Push stays a shortcut (see :mod:`yim.bus.local`): every event is committed to the shared
store before it is published, and a device that misses a push finds it by ``sync``. So
this bus may drop; it never reorders one user's events.

Routing. ``yim:r:{<user>}`` is a hash: device id -> ``<node>|<serial>|<connected_ms>|
<platform>|<expires_ms>``, the node that holds the device's live connection; both times
are wall-clock ms since the epoch (``connected_ms`` converted from the connection's
monotonic time each time the field is written, :mod:`yim.services.clock`: nodes on other
hosts compare it). A node writes the field when a device authenticates — before the auth
reply, so that any event committed after the device's first sync is routed to it — and
refreshes it (and the key's TTL) every third of ``cluster_route_ttl_s`` while the
connection lives: the heartbeat keeps the connection alive, the connection keeps the route
alive. A node that dies (SIGKILL) leaves routes that expire on their own; a device that
reconnects elsewhere overwrites its field at once.

Delivery. Each node reads one channel of its own, ``yim:n:{<node>}`` (sharded pub/sub on
Redis Cluster: the channel lives on one shard, so one reader per node; plain pub/sub on a
single Redis). To publish, a node delivers to its own connections at once, then one task
sends each node that needs some of a batch ONE message with that batch's items for it, in
order. An event or notice to few users (at most 4, or no more than there are other
nodes) goes to the nodes that hold their routes (one pipelined round trip of lookups for
a whole batch); one to more users goes to every live node, payload and delivery list
once, and each node pushes to its own connections among them — a lookup per recipient
costs more than that. One task, one batch at a time: one user's events reach a node in
commit order.

Newest connection wins everywhere: registering a device returns the user's routes; an
older connection of the same device on another node is closed there (4002), and the
multi-device policy (e.g. one mobile device at a time) is applied over the devices of
every node (4006) once the connect has passed its checks (:meth:`RedisBus.registered`): a
connect that fails them signs no one out. A kick names the route's serial
(:meth:`RedisBus._close`). A reconnect
that fails its checks on the node holding the device's registered connection hands its
route to that one (:meth:`RedisBus.disconnected`).

Node ids. ``--node-id auto`` leases ``yim:nodeid:{<n>}`` with SET NX PX; the lease is
renewed every third of its TTL with a compare-and-set. A fresh lease is not used before
one renewal period has passed, and a node whose lease has not been renewed in time
issues no id (sends answer ``unavailable``), so two live nodes never issue ids with one
node id — also when Redis restarts empty (see :class:`LeasedSnowflake`). A node whose
lease is someone else's, or expired unrenewed, *fences* itself (:meth:`Node.fence`:
503 on its probes, connections closed with 1001, new ones refused), leases a fresh id
and serves again — or exits if none can be had.

Redis restarts. A node notices one when its subscription breaks (or Redis's ``run_id``
changes) and, once Redis answers, heals at once: renews its lease, registers every
route of its devices again, and pushes each device its newest inbox event and the
newest entry of each of its read-fan-out groups (a ``group_message`` notice), so that one
that missed a push (it found no route, or this node was not subscribed) sees a gap and
syncs or pulls. Pooled connections that died with Redis are retried once on a fresh connection.

Seams left for presence (built per node elsewhere): :meth:`RedisBus.devices_anywhere`
answers "which devices of this user are online, on which node, on which platform" from
the routes, and :meth:`connected` / :meth:`disconnected` are where a cluster-wide
presence would publish changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import os
import random
import secrets
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from yim.bus.bounded import bounded, finish
from yim.bus.local import LocalBus
from yim.ids.snowflake import MAX_NODE, Snowflake
from yim.logs import BurstLog
from yim.protocol.close import CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.protocol.platforms import signed_out
from yim.services.clock import Clock
from yim.services.wire import event_payload, message_json

if TYPE_CHECKING:
    from yim.bus.local import NodeHooks
    from yim.config import Settings
    from yim.metrics import Metrics
    from yim.services.context import Device as Connection
    from yim.services.context import Devices
    from yim.storage.base import Store
    from yim.storage.records import GroupHead, MessageRec

log = logging.getLogger("yim.bus.redis")

#: events and notices to at most this many users (or to as many as there are other nodes,
#: if more) are routed by their recipients' routes; bigger ones go to every live node
ROUTED_MAX = 4
#: the route lookups and publishes of at most this many queued items go in one round
BATCH_MAX = 1024

_REGISTER = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {old or '', redis.call('HGETALL', KEYS[1])}
"""
# Refresh a route only while it is still ours (a newer connection elsewhere wins), or
# re-create it if Redis lost it (2: pushes to the device may have found no route). Ours is
# this node's (ARGV[3] = "<node>|"), whatever its serial: the node holds one connection per
# device (RedisBus._local), so a field of this node naming another serial is one a register
# left behind (its script failed while Redis was away, or two connects' scripts crossed),
# and kept, it would lapse unrenewed while kicks naming it found no connection.
_REFRESH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or string.sub(cur, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
  if not cur then return 2 end
  return 1
end
return 0
"""
_UNREGISTER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Route(msgspec.Struct, frozen=True):
    """One online device of a user, somewhere in the cluster."""

    device_id: str
    node: str
    serial: int
    #: wall-clock ms since the epoch (a node of the previous release wrote its host's
    #: monotonic ms: far smaller, so such a route sorts as the oldest)
    connected_ms: int
    platform: str
    expires_ms: int


def _parse_route(device_id: str, value: str) -> Route | None:
    parts = value.split("|")
    if len(parts) != 5:
        return None
    return Route(device_id, parts[0], int(parts[1]), int(parts[2]), parts[3], int(parts[4]))


# Wire messages between nodes: a list of items, msgpack-encoded once per target node.
class _Ev(msgspec.Struct, tag="ev", tag_field="k", array_like=True):
    type: str
    payload: bytes
    deliveries: list[tuple[int, int]]


class _Notice(msgspec.Struct, tag="no", tag_field="k", array_like=True):
    type: str
    payload: bytes
    users: list[int]


class _Close(msgspec.Struct, tag="cl", tag_field="k", array_like=True):
    user_id: int
    device_id: str
    code: int
    reason: str
    before_ms: int  # wall-clock ms: close only connections made before (a node of the previous release)
    # The serial of the route to close (RedisBus._close). Last and defaulted: a node of the
    # previous release ignores it, and one sent by such a node (0) is applied as it meant.
    serial: int = 0


class _Revoke(msgspec.Struct, tag="rv", tag_field="k", array_like=True):
    user_id: int
    session_ids: list[str]
    reason: str
    # Last and defaulted: a node of the previous release ignores it, and one sent by such a
    # node decodes here as the revocation it meant.
    code: int = CLOSE_REVOKED


class _Roster(msgspec.Struct, tag="ro", tag_field="k", array_like=True):
    conv_id: int


Item = _Ev | _Notice | _Close | _Revoke | _Roster


_PLATFORM = operator.attrgetter("platform")
_MADE = operator.attrgetter("connected_ms")


class _PolicyKick(NamedTuple):
    """A device the multi-device policy signs out, and the node that holds it."""

    node: str
    close: _Close


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Item])


#: refused sends are logged at most this often, as one line with their count
REFUSED_LOG_INTERVAL_S = 5.0


class LeasedSnowflake(Snowflake):
    """A Snowflake generator that issues ids only while its node id lease is known valid."""

    __slots__ = ("_refusals", "valid_until")

    def __init__(self, node_id: int, *, floor: int = 0, valid_until: float = 0.0) -> None:
        super().__init__(node_id, floor=floor)
        self.valid_until = valid_until  # time.monotonic() deadline
        self._refusals = BurstLog(log, REFUSED_LOG_INTERVAL_S)

    def next_id(self) -> int:
        if time.monotonic() >= self.valid_until:
            # A Redis outage refuses every send: one line per burst, not one per send.
            self._refusals.note(
                "refusing sends (`unavailable`): node id %d lease not confirmed; %d refused since the last line",
                self.node_id,
            )
            raise YimError("unavailable", "this node's id lease is not confirmed; retry", retry_after=1.0)
        return super().next_id()


#: connections to one Redis server per node; commands beyond them wait for one to be free
REDIS_CONNECTIONS = 128
REDIS_POOL_WAIT_S = 10.0
REDIS_CLUSTER_CONNECTIONS = 4096  # per shard
REDIS_CONNECT_TIMEOUT_S = 2.0
#: failures of these are Redis being away (restart, network): one log line, no traceback
EXPECTED_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
#: routes re-registered (and devices caught up) this many at a time, each chunk on its own
HEAL_CHUNK = 200
#: members asked in turn for a group's newest entry in a catch-up, should the first have hidden it
GROUP_HEAD_VIEWERS = 3


def _text(value: bytes | str) -> str:
    """A reply of this bus's connections (``decode_responses=False``: bytes), as text. redis-py
    types replies as bytes or str whatever the connection's setting."""
    return value.decode() if isinstance(value, bytes) else value


def connect_redis(url: str) -> aioredis.Redis | RedisCluster:
    """``redis://host:port/db`` (one server) or ``redis+cluster://host:port,host:port``."""
    if url.startswith("redis+cluster://"):
        nodes = []
        for hostport in url.removeprefix("redis+cluster://").strip("/").split(","):
            host, _, port = hostport.rpartition(":")
            nodes.append(ClusterNode(host, int(port)))
        # No blocking pool exists for a cluster: allow enough connections per shard that a
        # reconnect storm (every device of a dead node authenticating here) stays under it.
        return RedisCluster(startup_nodes=nodes, decode_responses=False, max_connections=REDIS_CLUSTER_CONNECTIONS)
    # redis-py's default pool raises MaxConnectionsError ("Too many connections") past 100
    # commands in flight, which a burst of logins reaches; a blocking pool makes them queue.
    # A pooled connection that died with a Redis restart is still handed out once the
    # server is back (the pool's liveness check does not see the close in time): one retry,
    # on a fresh connection, makes that invisible to the caller.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
        retry=Retry(NoBackoff(), 1),
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
    )
    return aioredis.Redis.from_pool(pool)


class NoNodeIdError(RuntimeError):
    """Every node id is leased by a live node."""


class RedisBus(LocalBus):
    def __init__(
        self,
        hub: Devices,
        metrics: Metrics,
        settings: Settings,
        store: Store,
        node: NodeHooks,
        url: str,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(hub, metrics)
        self._node = node
        #: the host's clocks: its connections' connect times are readings of its monotonic one
        self._clock = clock or Clock()
        self._settings = settings
        self._store = store
        self._url = url
        self._cluster = url.startswith("redis+cluster://")
        self.node_name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.channel = f"yim:n:{{{self.node_name}}}"
        self._route_ttl_ms = int(settings.cluster_route_ttl_s * 1000)
        self._lease_ttl_ms = int(settings.node_lease_ttl_s * 1000)
        self._redis: aioredis.Redis | RedisCluster = connect_redis(url)
        self._scripts: dict[str, Any] = {}
        self._out: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._serials = itertools.count(1)
        #: (user, device) -> (connection, serial) of this node's registered connections
        self._local: dict[tuple[int, str], tuple[Connection, int]] = {}
        #: connects in progress -> the policy's kicks computed from the routes their
        #: registration read (4006), sent at ``registered``; a failed connect's are dropped
        #: (``disconnected``), so this holds only connects still in their checks
        self._policy_due: dict[Connection, list[_PolicyKick]] = {}
        #: connects in progress -> the serial of the route they took over from the device's
        #: connection registered here (the one ``disconnected`` hands it back to if they
        #: fail): a kick naming that serial is for that connection (_close)
        self._took_over: dict[Connection, int] = {}
        #: registered connections that got their route back from a failed connect -> the
        #: serial their route had before: a kick read before that connect names it (_close).
        #: Only such connections have one; it goes when they end.
        self._aliases: dict[Connection, int] = {}
        self._peers: list[str] = []  # other live nodes, refreshed periodically
        self.lease_id: int | None = None
        self._ids: LeasedSnowflake | None = None
        self._stopping = False
        self._subscribed = asyncio.Event()
        self._lease_expires = 0.0  # monotonic: the lease surely holds until then
        self._lease_lock = asyncio.Lock()
        self._down_since: float | None = None  # monotonic: Redis unreachable since
        self._run_id = ""  # Redis's INFO run_id: a change means it restarted (empty)
        self._heal_task: asyncio.Task[None] | None = None
        self._heal_again = ""
        self._relet_task: asyncio.Task[None] | None = None
        self.heals = 0  # times this node re-registered its routes after losing them
        self.caught_up = 0  # devices pushed their newest inbox event by a heal
        self.group_heads_caught_up = 0  # group_message notices pushed by a heal (read-fan-out heads)
        self.remote_in = 0  # items received from other nodes
        self.remote_out = 0  # messages sent to other nodes
        self.lookups_skipped = 0  # route lookups not made: no other node was alive (_send_batch)
        self.route_lookups = 0  # recipients whose routes were looked up (_send_batch)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        for name, src in (
            ("register", _REGISTER),
            ("refresh", _REFRESH),
            ("unregister", _UNREGISTER),
            ("renew", _RENEW),
            ("release", _RELEASE),
        ):
            self._scripts[name] = self._redis.register_script(src)
        await self._redis.ping()
        self._run_id = await self._read_run_id()
        if self._settings.node_id_lease:
            await self._acquire_lease()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._send_forever(), name="yim-bus-send"),
            loop.create_task(self._read_forever(), name="yim-bus-read"),
            loop.create_task(self._refresh_forever(), name="yim-bus-refresh"),
        ]
        # Listen before telling the others we exist: nothing sent to us is missed.
        await bounded(self._subscribed.wait(), 10)
        await self._announce()
        if self.lease_id is not None:
            self._tasks.append(loop.create_task(self._renew_forever(), name="yim-bus-lease"))

    async def stop(self) -> None:
        """Flush what is queued, leave the cluster (routes, node registry, id lease)."""
        self._stopping = True
        self._wake.set()
        sender, *others = self._tasks
        others += [t for t in (self._heal_task, self._relet_task) if t is not None]
        for task in others:
            task.cancel()
        await finish([sender, *others], 5, log)  # the sender flushes what is queued meanwhile
        with contextlib.suppress(Exception):
            await self._redis.zrem("yim:nodes", self.node_name)
            if self.lease_id is not None:
                await self._scripts["release"](keys=[self._lease_key(self.lease_id)], args=[self.node_name])
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    # --- node ids ------------------------------------------------------------------------------
    def _lease_key(self, n: int) -> str:
        return f"yim:nodeid:{{{n}}}"

    async def _acquire_lease(self) -> None:
        start = random.randrange(MAX_NODE + 1)
        for i in range(MAX_NODE + 1):
            n = (start + i) % (MAX_NODE + 1)
            asked = time.monotonic()
            if await self._redis.set(self._lease_key(n), self.node_name, nx=True, px=self._lease_ttl_ms):
                self.lease_id = n
                self._lease_expires = asked + self._lease_ttl_ms / 1000
                break
        else:
            raise NoNodeIdError(f"all {MAX_NODE + 1} node ids are leased by live nodes")
        # A previous holder that lost this id (Redis restarted empty while it ran) learns it
        # at its next renewal and stops issuing; wait that long before issuing ourselves.
        wait = self._lease_ttl_ms / 3000 + 0.2
        log.info(
            "leased node id %d as %s; waiting %.1f s (one renewal period) before issuing ids,"
            " so that a node that lost this id in a Redis restart has stopped",
            n,
            self.node_name,
            wait,
        )
        await asyncio.sleep(wait)

    def make_ids(self, node_id: int, floor: int) -> Snowflake:
        if self.lease_id is None:
            return Snowflake(node_id, floor=floor)
        valid = min(time.monotonic() + self._lease_ttl_ms / 1000 * 0.8, self._lease_expires)
        self._ids = LeasedSnowflake(self.lease_id, floor=floor, valid_until=valid)
        return self._ids

    async def _renew_forever(self) -> None:
        interval = self._lease_ttl_ms / 3000
        while self._node.fenced is None:
            await asyncio.sleep(interval)
            await self._renew_once()

    async def _renew_once(self) -> None:
        """Renew the lease; fence the node if it is someone else's, or if it expired
        before a renewal got through (someone else may hold it by now)."""
        async with self._lease_lock:
            if self.lease_id is None or self._node.fenced is not None:
                return
            key = self._lease_key(self.lease_id)
            asked = time.monotonic()
            try:
                got = await self._scripts["renew"](keys=[key], args=[self.node_name, self._lease_ttl_ms])
            except Exception as exc:  # Redis away: ids stop when the lease may have lapsed
                self._redis_failed("renewing the node id lease", exc)
                if time.monotonic() >= self._lease_expires:
                    self._fence(f"node id {self.lease_id} lease expired before it could be renewed")
                return
            self._redis_ok()
            if int(got) == 0:
                self._fence(f"node id {self.lease_id} is leased by another node")
                return
            self._lease_expires = asked + self._lease_ttl_ms / 1000
            if self._ids is not None:
                self._ids.valid_until = asked + self._lease_ttl_ms / 1000 * 0.8

    def _fence(self, reason: str) -> None:
        """This node can no longer guarantee its node id: stop serving, lease a fresh one."""
        if self._node.fenced is not None:
            return
        if self._ids is not None:
            self._ids.valid_until = 0.0
        self._node.fence(reason)
        self._relet_task = asyncio.get_running_loop().create_task(self._relet(), name="yim-bus-relet")

    async def _relet(self) -> None:
        """Lease a fresh node id (seeded above every id already issued, as at start-up) and
        serve again; give up — the process exits — if no id can be had in time."""
        old = self.lease_id
        deadline = time.monotonic() + self._settings.node_relet_timeout_s
        pause = 0.2
        while True:
            try:
                await self._acquire_lease()
                floor = await self._store.max_msg_id()
                break
            except NoNodeIdError as exc:
                self._node.fail(f"fenced and cannot lease a fresh node id: {exc}")
                return
            except Exception as exc:
                if isinstance(exc, EXPECTED_ERRORS):
                    self._redis_failed("leasing a fresh node id", exc)
                else:
                    log.warning("leasing a fresh node id failed: %s: %s", type(exc).__name__, exc)
                if time.monotonic() + pause >= deadline:
                    self._node.fail(
                        f"fenced and no fresh node id leased within {self._settings.node_relet_timeout_s} s"
                    )
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        self._node.ids = self.make_ids(0, floor)
        log.warning("re-leased: node id %d (was %d) as %s", self.lease_id, old, self.node_name)
        self._tasks.append(asyncio.get_running_loop().create_task(self._renew_forever(), name="yim-bus-lease"))
        self._node.unfence()

    # --- Redis availability ----------------------------------------------------------------------
    def _redis_failed(self, what: str, exc: BaseException) -> None:
        """One line when Redis goes away (no traceback: expected), one when it is back."""
        if not isinstance(exc, EXPECTED_ERRORS):
            log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("Redis unreachable (%s: %s); cross-node push paused", what, exc or type(exc).__name__)

    def _redis_ok(self) -> None:
        if self._down_since is not None:
            log.warning("Redis reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None

    async def ping(self) -> None:
        await self._redis.ping()

    async def _read_run_id(self) -> str:
        """Redis's run_id (new at every start): on a single server only — a cluster's shards
        restart one by one and are noticed by their lost connections."""
        if self._cluster:
            return ""
        info = await self._redis.info("server")
        return str(info.get("run_id", ""))

    # --- routes --------------------------------------------------------------------------------
    @staticmethod
    def route_key(user_id: int) -> str:
        return f"yim:r:{{{user_id}}}"

    def _route_value(self, serial: int, conn: Connection, expires_ms: int, offset: float) -> str:
        """``offset``: the host's :meth:`Clock.offset`, read once for a batch of routes. The
        connect time is wall-clock ms: every node's routes are compared with it (the
        multi-device policy), and a host's monotonic clock means nothing on another host."""
        connected_ms = self._clock.wall_ms(conn.connected_at, offset)
        return f"{self.node_name}|{serial}|{connected_ms}|{conn.platform}|{expires_ms}"

    async def connected(self, conn: Connection) -> None:
        if self._node.fenced is not None:  # fenced while this device authenticated
            conn.close(CLOSE_GOING_AWAY, "node fenced: reconnect to another node")
            return
        serial = next(self._serials)
        key = (conn.user_id, conn.device_id)
        prev = self._local.get(key)
        if prev is not None:
            # The route of the device's registered connection, taken over directly or from
            # another connect still in its checks that had taken it over.
            held = self._hub.devices_of(conn.user_id).get(conn.device_id)
            took = prev[1] if held is prev[0] else self._took_over.get(prev[0])
            if took is not None:
                self._took_over[conn] = took
        self._local[key] = (conn, serial)
        now_ms = int(time.time() * 1000)
        registering = asyncio.ensure_future(
            self._scripts["register"](
                keys=[self.route_key(conn.user_id)],
                args=[
                    conn.device_id,
                    self._route_value(serial, conn, now_ms + self._route_ttl_ms, self._clock.offset()),
                    self._route_ttl_ms,
                ],
            )
        )
        try:
            old, flat = await asyncio.shield(registering)
        except asyncio.CancelledError:
            # The connect is given up; its route may still be written. Once Redis has
            # answered, it goes as a failed connect's does (disconnected), not before: an
            # unroute sent first could find nothing and leave the route to be written after.
            registering.add_done_callback(lambda done: self._registered_for_nothing(conn, done))
            raise
        except Exception as exc:  # Redis away: this node still serves the device; pushes from
            self._redis_failed("registering a route", exc)  # other nodes wait for the heal
            return
        routes = [
            r
            for i in range(0, len(flat), 2)
            if (r := _parse_route(flat[i].decode(), flat[i + 1].decode())) is not None and r.expires_ms > now_ms
        ]
        self._replace_older(conn, old.decode() if old else "", now_ms)
        kicks = self._device_policy(conn, routes, now_ms)
        if kicks:
            self._policy_due[conn] = kicks

    def registered(self, conn: Connection) -> None:
        """The connect passed its checks: the policy's kicks go now. Not earlier, as on one
        node, where the Hub applies the policy at registration: a device signed out (4006
        ends a client) for a connect that then failed would be gone for nothing."""
        self._took_over.pop(conn, None)
        kicks = self._policy_due.pop(conn, ())
        if conn.closing:  # replaced or kicked during its checks: it signs no one out
            return
        for kick in kicks:
            if kick.node != self.node_name:
                self._send_to(kick.node, kick.close)
            else:
                # A victim here too: the hub's own policy counts only this node's devices,
                # and closes it only when they alone are over a limit.
                self._close(kick.close)

    def _replace_older(self, conn: Connection, old_value: str, now_ms: int) -> None:
        """The newest connection of a device wins across nodes: the older one on another
        node is replaced (4002) at once — the route is the device's, and this connect took
        it (a failed one hands it back only on this node: :meth:`disconnected`)."""
        old = _parse_route(conn.device_id, old_value) if old_value else None
        if old is not None and old.node != self.node_name:
            self._send_to(
                old.node,
                _Close(
                    conn.user_id,
                    conn.device_id,
                    CLOSE_REPLACED,
                    "replaced by a newer connection of this device",
                    now_ms,
                    old.serial,
                ),
            )

    def _device_policy(self, conn: Connection, routes: list[Route], now_ms: int) -> list[_PolicyKick]:
        """The platform-class and per-user limits, counted over every node's devices: the
        older devices ``conn`` signs out (4006)."""
        settings = self._settings
        # Oldest first, in wall-clock time over every node. A route of a node of the previous
        # release holds its host's monotonic ms (since boot: far below any epoch ms), so it
        # sorts first: its device counts as the oldest. Between two such nodes the order is
        # by boot time, as it was; between two of this release it is right.
        others = [r for r in routes if r.device_id != conn.device_id]
        victims = signed_out(
            conn.platform, others, settings.class_limits, settings.max_connections_per_user, _PLATFORM, _MADE
        )
        return [
            _PolicyKick(r.node, _Close(conn.user_id, r.device_id, CLOSE_POLICY, reason, now_ms, r.serial))
            for r, reason in victims
        ]

    def _registered_for_nothing(self, conn: Connection, done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved: a failure here is the heal's to repair, not news
        self.disconnected(conn)

    def disconnected(self, conn: Connection) -> None:
        """The connection's route goes, unless a newer connection of the device took it.

        A connection still holding the route here and not registered is a connect that
        failed after :meth:`connected` (the revocation re-check, a cancel); its route took
        over that of the device's older connection if one is still registered here. That
        one keeps the device, as on one node, where the failed connect never touched it:
        the route, this node's, now stands for it (the serial goes with it; the next
        refresh writes its time and platform), so it never leaves this node and nothing
        pushed meanwhile misses the device. A kick of that route closes it too (_close)."""
        self._policy_due.pop(conn, None)  # a failed connect signs no one out
        took_over = self._took_over.pop(conn, None)
        self._aliases.pop(conn, None)
        key = (conn.user_id, conn.device_id)
        entry = self._local.get(key)
        if entry is None or entry[0] is not conn:
            return
        held = self._hub.devices_of(conn.user_id).get(conn.device_id)
        if held is not None and held is not conn and not held.closing:
            self._local[key] = (held, entry[1])
            if took_over is not None:
                self._aliases[held] = took_over
            return
        del self._local[key]
        self._queue("unroute", (conn.user_id, conn.device_id, f"{self.node_name}|{entry[1]}|"))

    async def devices_anywhere(self, user_id: int) -> list[Route]:
        """Every online device of a user, on any node (the seam for cluster presence)."""
        flat = await self._redis.hgetall(self.route_key(user_id))
        now_ms = int(time.time() * 1000)
        routes = [_parse_route(_text(k), _text(v)) for k, v in flat.items()]
        return sorted((r for r in routes if r is not None and r.expires_ms > now_ms), key=lambda r: r.device_id)

    async def _refresh_forever(self) -> None:
        interval = self._route_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                run_id = await self._read_run_id()
                if run_id != self._run_id:
                    self._heal(f"Redis restarted (run_id {self._run_id[:8]} -> {run_id[:8]})")
                    continue
                await self._announce()
                _ok, failed, lost = await self._refresh_routes()
            except Exception as exc:
                self._redis_failed("refreshing routes", exc)
                continue
            self._redis_ok()
            if failed:
                log.warning("refreshing %d routes failed; retried at the next refresh", failed)
            if lost:  # Redis lost them without restarting (e.g. evicted, flushed)
                log.warning("%d routes were gone from Redis and are registered again", len(lost))
                await self._catch_up(lost)

    def _heal(self, why: str) -> None:
        """Routes or messages to this node may have been lost (Redis restarted, or this
        node's subscription was down): heal now rather than at the next refresh."""
        if self._stopping:
            return
        if self._heal_task is not None and not self._heal_task.done():
            self._heal_again = why  # it runs once more when done: it may have read the old state
            return
        self._heal_task = asyncio.get_running_loop().create_task(self._heal_forever(why), name="yim-bus-heal")

    async def _heal_forever(self, why: str) -> None:
        pause = 0.1
        while True:
            self._heal_again = ""
            try:
                await self._heal_once(why)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away again: retry until it answers
                self._redis_failed("restoring routes", exc)
                self._heal_again = self._heal_again or why
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
            if not self._heal_again or self._stopping:
                return
            why = self._heal_again

    async def _heal_once(self, why: str) -> None:
        await self._retire_idle_connections()
        self._run_id = await self._read_run_id()
        await self._renew_once()  # at once: sends are refused until the lease is confirmed
        await self._announce()
        ok, failed, _ = await self._refresh_routes()
        self._redis_ok()
        self.heals += 1
        # A push published while this device's route was missing, or while this node was
        # not subscribed, found no one: hand each device its newest inbox event and the head
        # of each of its read-fan-out groups, so that a client missing anything before sees a
        # gap and syncs or pulls (docs/protocol.md §4.3).
        conns = [conn for conn, _serial in self._local.values()]
        caught_up, group_heads = await self._catch_up(conns)
        log.warning(
            "%s: %d of %d routes registered again (%d failed, retried at the next refresh); "
            "%d devices handed their newest event, %d group heads pushed",
            why,
            ok,
            ok + failed,
            failed,
            caught_up,
            group_heads,
        )

    async def _retire_idle_connections(self) -> None:
        """Drop pooled connections that may have died with Redis: they reconnect when next used."""
        if isinstance(self._redis, aioredis.Redis):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    async def _announce(self) -> None:
        """This node is alive (the registry broadcasts go to), and who else is."""
        now_ms = int(time.time() * 1000)
        await self._redis.zadd("yim:nodes", {self.node_name: now_ms + self._route_ttl_ms})
        await self._redis.zremrangebyscore("yim:nodes", 0, now_ms)
        self._set_peers(await self._redis.zrangebyscore("yim:nodes", now_ms, "+inf"))

    def _set_peers(self, names: list[Any]) -> None:
        self._peers = [name for name in map(_text, names) if name != self.node_name]

    async def _refresh_routes(self) -> tuple[int, int, list[Connection]]:
        """Refresh (or re-create) the route of every device connected here, in chunks that
        succeed or fail on their own. Returns (refreshed, failed, the re-created ones'
        connections); raises only if none got through."""
        expires = int(time.time() * 1000) + self._route_ttl_ms
        offset = self._clock.offset()
        script = self._scripts["refresh"]
        entries = list(self._local.items())
        ok = 0
        first_error: BaseException | None = None
        lost: list[Connection] = []
        for i in range(0, len(entries), HEAL_CHUNK):  # scripts run concurrently over the client's pool
            chunk = entries[i : i + HEAL_CHUNK]
            results = await asyncio.gather(
                *(
                    script(
                        keys=[self.route_key(user_id)],
                        args=[
                            device_id,
                            self._route_value(serial, conn, expires, offset),
                            f"{self.node_name}|",
                            self._route_ttl_ms,
                        ],
                    )
                    for (user_id, device_id), (conn, serial) in chunk
                ),
                return_exceptions=True,
            )
            for (_key, (conn, _serial)), got in zip(chunk, results, strict=True):
                if isinstance(got, BaseException):
                    first_error = first_error or got
                    continue
                ok += 1
                if int(got) == 2:
                    lost.append(conn)
        if first_error is not None and ok == 0:
            raise first_error
        return ok, len(entries) - ok, lost

    async def _catch_up(self, conns: list[Connection]) -> tuple[int, int]:
        """Push each device its user's newest inbox event, unless it acknowledged it: one
        that missed earlier events sees a gap and syncs. Push it too a ``group_message``
        notice with the newest entry of each read-fan-out group its user is in: one that
        missed entries sees a hole and pulls them. Repeats are harmless (§12.1, §12.3).
        Returns (events pushed, notices pushed)."""
        by_user: dict[int, list[Connection]] = {}
        for conn in conns:
            by_user.setdefault(conn.user_id, []).append(conn)
        users = list(by_user)
        store = self._store
        pushed = 0
        notices = 0

        async def inbox(user_id: int) -> int:
            head = await store.inbox_head(user_id)
            behind = [c for c in by_user[user_id] if not c.closing and c.acked_seq < head]
            if not behind:
                return 0
            events, _ = await store.sync(user_id, head - 1, 1)
            if not events:
                return 0
            ev = events[0]
            payload = event_payload(ev)
            for conn in behind:
                self.push_event(conn, ev.seq, ev.type, payload)
            return len(behind)

        async def one(user_id: int) -> tuple[int, list[GroupHead]]:
            got, heads = await asyncio.gather(inbox(user_id), store.read_groups(user_id))
            return got, heads

        failed = 0
        error: BaseException | None = None
        for i in range(0, len(users), HEAL_CHUNK):
            chunk = users[i : i + HEAL_CHUNK]
            results = await asyncio.gather(*(one(u) for u in chunk), return_exceptions=True)
            # group -> (its head seq, the users of this chunk who may pull up to it)
            groups: dict[int, tuple[int, list[int]]] = {}
            for user_id, got in zip(chunk, results, strict=True):
                if isinstance(got, BaseException):
                    failed += 1
                    error = got
                    continue
                pushed += got[0]
                for g in got[1]:
                    # A group left is closed by an entry that came by the inbox; one with no
                    # entry since the user joined has nothing to pull.
                    if not g.left and g.last_seq > g.from_seq:
                        groups.setdefault(g.conv_id, (g.last_seq, []))[1].append(user_id)
            listed = list(groups.items())
            for j in range(0, len(listed), HEAL_CHUNK):  # as many reads at a time as for the users
                part = listed[j : j + HEAL_CHUNK]
                heads = await asyncio.gather(
                    *(self._group_head(conv_id, seq, members) for conv_id, (seq, members) in part),
                    return_exceptions=True,
                )
                for (_conv_id, (_seq, members)), head in zip(part, heads, strict=True):
                    if isinstance(head, BaseException):
                        failed += 1
                        error = head
                    elif head is not None:
                        # Local devices only: the notice is this node's own catch-up, not a fan-out.
                        LocalBus.publish_notice(self, members, "group_message", message_json(head))
                        notices += sum(len(self._hub.devices_of(u)) for u in members)
        if error is not None:  # their devices catch up at their next gap or reconnect
            log.warning("catching up %d users or groups failed (%s: %s)", failed, type(error).__name__, error)
        self.caught_up += pushed
        self.group_heads_caught_up += notices
        return pushed, notices

    async def _group_head(self, conv_id: int, seq: int, members: list[int]) -> MessageRec | None:
        """The entry ``seq`` of a read-fan-out group, read as one of ``members`` sees it: a
        member who hid it reads an older one, so the next member is asked (rarely needed)."""
        for viewer in members[:GROUP_HEAD_VIEWERS]:
            msgs, _ = await self._store.history(viewer, conv_id, None, seq - 1, 1)
            if msgs and msgs[0].seq == seq:
                return msgs[0]
        return None

    # --- publishing ----------------------------------------------------------------------------
    def publish_event(
        self,
        deliveries: list[tuple[int, int]],
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
    ) -> None:
        super().publish_event(deliveries, type_, payload_json, origin)
        if deliveries:
            self._queue("event", (type_, payload_json, deliveries))

    def publish_notice(
        self,
        user_ids: Any,
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
        skip: set[int] | None = None,
    ) -> None:
        users = [u for u in user_ids if not skip or u not in skip]
        super().publish_notice(users, type_, payload_json, origin)
        if users:
            self._queue("notice", (type_, payload_json, users))

    def sessions_revoked(self, user_id: int, session_ids: list[str], reason: str, code: int = CLOSE_REVOKED) -> None:
        self._queue("all", _Revoke(user_id, list(session_ids), reason, code))

    def roster_changed(self, conv_id: int) -> None:
        self._queue("all", _Roster(conv_id))

    def _send_to(self, node_name: str, item: Item) -> None:
        self._queue("to", (node_name, item))

    def _queue(self, kind: str, what: Any) -> None:
        if self._stopping and kind != "unroute":
            return
        self._out.append((kind, what))
        self._wake.set()

    async def _send_forever(self) -> None:
        while True:
            if not self._out:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._out.popleft() for _ in range(min(len(self._out), BATCH_MAX))]
            try:
                await self._send_batch(batch)
            except Exception as exc:  # the bus may drop: receiving nodes heal (see _heal)
                self._redis_failed(f"cross-node publish of {len(batch)} items", exc)
                if self._stopping:
                    return
                await asyncio.sleep(0.1)

    def _routed(self, users: int) -> bool:
        """Whether an event or notice to this many users is routed by looking up their routes
        (one ``HGETALL`` each) rather than sent to every live node, which filters by its own
        connections: a lookup costs more than a node's share of a message that is on its way
        to that node anyway, so only pushes to few users — at most ``ROUTED_MAX``, or no more
        than there are other nodes — are routed."""
        return users <= max(ROUTED_MAX, len(self._peers))

    async def _send_batch(self, batch: list[tuple[str, Any]]) -> None:
        # What goes to every node goes to the nodes alive *after* its items were committed:
        # a node announces itself before it takes any device, so one not listed then has no
        # device yet, and each device it takes later syncs from a store that holds them. So
        # every batch with such items reads the registry in one of its round trips: with the
        # route lookups, or else with the publishes — then a node listed only by that read
        # gets the batch's broadcast items in one more round trip (rare: it has just joined).
        # 1. one pipelined round trip: the routes of the few recipients of routed items; route
        #    removals before that, ordered with everything else this node published.
        lookups: dict[int, list[str]] = {}
        broadcast = False
        routed: list[bool] = []  # per item, decided once: the peer list may change below
        for kind, what in batch:
            this = False
            if kind in ("event", "notice"):
                recipients = what[2]
                this = self._routed(len(recipients))
                if this:
                    for r in recipients:
                        lookups[r[0] if kind == "event" else r] = []
                else:
                    broadcast = True
            elif kind == "all":
                broadcast = True
            routed.append(this)
        unroutes = [what for kind, what in batch if kind == "unroute"]
        if unroutes:
            script = self._scripts["unregister"]
            await asyncio.gather(
                *(script(keys=[self.route_key(u)], args=[device, prefix]) for u, device, prefix in unroutes)
            )
        users = list(lookups)
        fresh = not broadcast  # the registry read after this batch's items, where it matters
        if users and not self._peers:
            # Alone at the last look: every recipient's device is on this node, and the local
            # bus pushed to it already. The registry is read again now (the reasoning above),
            # so a node that joined since is never missed; one command per batch instead of
            # one route lookup per recipient.
            self._set_peers(await self._redis.zrangebyscore("yim:nodes", int(time.time() * 1000), "+inf"))
            fresh = True
            if not self._peers:
                self.lookups_skipped += len(users)
                users = []
        # A cluster's publishes are separate commands (one shard each): the registry is read here.
        if users or (self._cluster and not fresh):
            pipe = self._redis.pipeline(transaction=False)
            for user_id in users:
                pipe.hgetall(self.route_key(user_id))
            if not fresh:
                pipe.zrangebyscore("yim:nodes", int(time.time() * 1000), "+inf")
            results = await pipe.execute()
            if not fresh:
                self._set_peers(results.pop())
                fresh = True
            self.route_lookups += len(users)
            now_ms = int(time.time() * 1000)
            me = self.node_name
            for user_id, flat in zip(users, results, strict=True):
                nodes = lookups[user_id]
                for k, v in flat.items():
                    r = _parse_route(k.decode(), v.decode())
                    if r is not None and r.expires_ms > now_ms and r.node != me and r.node not in nodes:
                        nodes.append(r.node)
        # 2. per target node, its items in order; one message per node, all in one round trip.
        known = self._peers
        per_node = self._per_node(batch, routed, lookups, known)
        if self._cluster:
            for node_name, items in per_node.items():
                await self._redis.spublish(f"yim:n:{{{node_name}}}", _encoder.encode(items))
            self.remote_out += len(per_node)
            return
        if fresh and not per_node:
            return
        pipe = self._redis.pipeline(transaction=False)
        if not fresh:
            pipe.zrangebyscore("yim:nodes", int(time.time() * 1000), "+inf")
        for node_name, items in per_node.items():
            pipe.publish(f"yim:n:{{{node_name}}}", _encoder.encode(items))
        results = await pipe.execute()
        self.remote_out += len(per_node)
        if fresh:
            return
        self._set_peers(results[0])
        joined = [name for name in self._peers if name not in known]
        if joined:
            per_node = self._per_node(batch, routed, {}, joined, broadcast_only=True)
            pipe = self._redis.pipeline(transaction=False)
            for node_name, items in per_node.items():
                pipe.publish(f"yim:n:{{{node_name}}}", _encoder.encode(items))
            await pipe.execute()
            self.remote_out += len(per_node)

    @staticmethod
    def _per_node(
        batch: list[tuple[str, Any]],
        routed: list[bool],
        lookups: dict[int, list[str]],
        peers: list[str],
        broadcast_only: bool = False,
    ) -> dict[str, list[Item]]:
        """The items of ``batch`` for each node, in order: a routed item to the nodes that hold
        its recipients (``lookups``: user -> node names), any other to each of ``peers``."""
        per_node: dict[str, list[Item]] = {}
        for (kind, what), by_route in zip(batch, routed, strict=True):
            if kind == "event":
                type_, payload, deliveries = what
                if not by_route:
                    # The payload and the delivery list once, shared by every node's message.
                    ev = _Ev(type_, payload, deliveries)
                    for node_name in peers:
                        per_node.setdefault(node_name, []).append(ev)
                elif not broadcast_only:
                    by_node: dict[str, list[tuple[int, int]]] = {}
                    for d in deliveries:
                        for node_name in lookups[d[0]]:
                            by_node.setdefault(node_name, []).append(d)
                    for node_name, ds in by_node.items():
                        per_node.setdefault(node_name, []).append(_Ev(type_, payload, ds))
            elif kind == "notice":
                type_, payload, users = what
                if not by_route:
                    notice = _Notice(type_, payload, users)
                    for node_name in peers:
                        per_node.setdefault(node_name, []).append(notice)
                elif not broadcast_only:
                    by_node_u: dict[str, list[int]] = {}
                    for user_id in users:
                        for node_name in lookups[user_id]:
                            by_node_u.setdefault(node_name, []).append(user_id)
                    for node_name, us in by_node_u.items():
                        per_node.setdefault(node_name, []).append(_Notice(type_, payload, us))
            elif kind == "all":
                for node_name in peers:
                    per_node.setdefault(node_name, []).append(what)
            elif kind == "to" and not broadcast_only:
                node_name, item = what
                per_node.setdefault(node_name, []).append(item)
        return per_node

    # --- receiving -----------------------------------------------------------------------------
    async def _read_forever(self) -> None:
        pause = 0.05
        while True:
            pubsub = self._redis.pubsub()
            try:
                if self._cluster:
                    assert isinstance(self._redis, RedisCluster)
                    await pubsub.ssubscribe(self.channel)
                    target = self._redis.get_node_from_key(self.channel)
                    self._resubscribed()
                    pause = 0.05
                    while True:
                        # redis-py's stubs lack the cluster PubSub's method (it is there at run time)
                        msg = await pubsub.get_sharded_message(  # type: ignore[attr-defined]
                            ignore_subscribe_messages=True, timeout=1.0, target_node=target
                        )
                        if msg is not None:
                            self._receive(msg["data"])
                else:
                    await pubsub.subscribe(self.channel)
                    self._resubscribed()
                    pause = 0.05
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg is not None and msg.get("type") in ("message", b"message"):
                            self._receive(msg["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                self._redis_failed("cross-node subscription", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                # retry soon: a restarted Redis is noticed here first, and every moment
                # without a subscription is pushes lost
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _resubscribed(self) -> None:
        if self._subscribed.is_set():
            # Messages sent while the subscription was down are lost: pushes are caught up
            # by the heal, invalidations are not — drop what they would have invalidated.
            self._node.forget_rosters()
            self._node.forget_sessions()
            self._heal("cross-node subscription restored")
        self._subscribed.set()

    def _receive(self, data: bytes) -> None:
        try:
            items = _decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("undecodable cross-node message of %d bytes", len(data))
            return
        for item in items:
            self.remote_in += 1
            try:
                self._apply(item)
            except Exception:
                log.exception("applying a cross-node %s failed", type(item).__name__)

    def _close(self, item: _Close) -> None:
        """Close the connection whose route the kick names (its serial), registered or still
        in its auth checks, and the device's older connection registered here that this
        route took over, if any: the route stood for both, and the newer connection or the
        multi-device policy that took it wins over both. Unlike the workers' hub, a node
        cannot learn later whether the route was taken (a policy victim's field stays until
        its own node drops it), so the older one is settled now rather than when the named
        one's connect ends. A kick naming a route this node has replaced since closes
        nothing, its newer connection's register settling the other side, unless the
        route replaced was the device's registered connection's and its replacer is still
        in its checks: that connection is the one the kick is for."""
        held = self._hub.devices_of(item.user_id).get(item.device_id)
        if not item.serial:  # from a node of the previous release: before_ms is its wall clock's
            if held is not None and self._clock.wall_ms(held.connected_at) < item.before_ms:
                held.close(item.code, item.reason)
            return
        entry = self._local.get((item.user_id, item.device_id))
        if entry is None:
            return
        if entry[1] != item.serial:
            # The route it names was the device's registered connection's, taken over since
            # by a connect still in its checks: the kick is for that connection. Were it
            # left, a failing connect would hand the route back to it (disconnected), and the
            # device that sent the kick has already applied its policy.
            if self._aliases.get(entry[0]) == item.serial:  # its route before a failed connect's
                entry[0].close(item.code, item.reason)
            elif self._took_over.get(entry[0]) == item.serial and held is not None and held is not entry[0]:
                held.close(item.code, item.reason)
            return
        entry[0].close(item.code, item.reason)
        if held is not None and held is not entry[0]:
            held.close(item.code, item.reason)

    def _apply(self, item: Item) -> None:
        match item:
            case _Ev():
                LocalBus.publish_event(self, item.deliveries, item.type, item.payload)
            case _Notice():
                LocalBus.publish_notice(self, item.users, item.type, item.payload)
            case _Close():
                self._close(item)
            case _Revoke():
                self._node.forget_sessions(item.session_ids)
                self._hub.close_sessions(
                    item.user_id, set(item.session_ids), item.code, f"session revoked: {item.reason}"
                )
            case _Roster():
                self._node.forget_rosters(item.conv_id)
