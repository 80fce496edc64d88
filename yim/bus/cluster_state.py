"""Cluster-wide state in Redis: presence, rate-limit buckets, online agents.

On one node (no ``redis_url``) none of this exists and everything stays in memory. In
cluster mode a user's devices may sit on several nodes and a user may log in, register
or send through any of them, so the state users can tell apart lives in Redis:

Presence. ``yim:p:{<user>}`` is a hash: device id -> ``<node>|<status>|<platform>|
<connected_ms>`` for every online device on any node (``connected_ms``: wall-clock ms since
the epoch, converted from the connection's monotonic time when the field is written, as
nodes on other hosts compare it: :mod:`yim.services.clock`), plus ``~pub`` (the aggregate
last published to watchers, ``<status>|<platform,...>``) and ``~seen`` (ms the user last
went offline). A node rewrites its own fields of a user with one script when its debounced
presence of that user changes; the script aggregates every node's fields and says
whether the aggregate differs from ``~pub``. Exactly one node sees each change (the
script is atomic), and that node publishes it; ``presence_query`` on any node reads the
same fields, so queries agree with pushes everywhere. ``yim:pn:{<node>}`` is the set of
users with devices on a node.

Liveness. Each node renews its score in ``yim:pnodes`` (node -> expiry ms) every third of
``cluster_route_ttl_s``. A node whose score lapsed (killed, or paused for that long) is
dead: at its next refresh one surviving node (holding ``yim:psweep:{<node>}``) deletes
that node's fields, re-aggregates its users and publishes them offline. Until then its
fields still count, in queries as in the last pushes (they agree). A node that finds it
was swept (paused past its lease) or forgotten (Redis restarted empty) writes all its
users again at its next refresh.

Online agents. ``yim:ao`` is the set of customer-service agents online anywhere; every
node keeps a copy in memory (``agents_online``) because routing asks "is this agent
connected" synchronously inside a store transaction. Changes are published on the
``yim:ao`` channel and the whole set is re-read every refresh, so a lost message costs at
most one refresh period.

Rate limits. ``yim:rl:<name>:{<key>}`` hashes hold token buckets (``t`` tokens at ``at``
ms, Redis time so node clocks do not matter) and failure counters for login back-off. Rare,
expensive checks (login, registration) take one round trip each, exact across nodes. The
send check stays in memory on the hot path; what each node spent is added to the shared
buckets in one pipelined batch every ``cluster_limits_sync_s``, and each node's local
buckets are set to the shared level. A user spending from several nodes at once can
overdraw by what the nodes spend within one sync period, which the shared bucket then
carries as debt (down to ``-burst``): over any longer period N nodes give the same budget
as one.

Redis down. Nothing is refused because Redis is away: presence falls back to this node's
own devices (pushes and queries as on one node), the rate limits to the node's in-memory
buckets (N nodes then give up to N times the budget), agent availability to agents
connected to this node once the copy is older than ``cluster_route_ttl_s``. When Redis is
back, the next refresh writes this node's users again and the shared state heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from yim.bus.bounded import bounded, finish
from yim.bus.redis import connect_redis
from yim.bus.shared_limits import SharedSpending, Spending
from yim.services.clock import Clock
from yim.services.context import LocalDevices, PresenceChange, State
from yim.services.presence import aggregate_presence

if TYPE_CHECKING:
    from yim.config import Settings

log = logging.getLogger("yim.bus.cluster_state")

#: how long ``~seen`` (last seen) of an offline user is kept
SEEN_TTL_MS = 30 * 24 * 3600 * 1000
#: shared buckets debited by one script call (~5-20 µs of Redis CPU each)
DEBIT_CHUNK = 256
#: a lapsed node is remembered (in ``yim:pnodes``, and its sweep marker) this long
TOMBSTONE_MS = 3600 * 1000
#: the users whose presence one pipelined round trip writes
PRESENCE_CHUNK = 500
#: a shared bucket overdrawn by nodes spending at once (each from the level it last
#: heard) owes at most this many bursts, paid back before it allows anything again
DEBT_BURSTS = 8.0

_AGGREGATE = """
local function aggregate(key)
  local status, plats = 'offline', {}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) ~= 126 then
      local n, s, p = string.match(all[i + 1], '^(.-)|(.-)|(.-)|')
      if n then
        if s == 'online' then status = 'online' elseif status ~= 'online' then status = 'away' end
        plats[p] = true
      end
    end
  end
  local list = {}
  for p in pairs(plats) do list[#list + 1] = p end
  table.sort(list)
  return status, status .. '|' .. table.concat(list, ',')
end
"""

# KEYS[1] = yim:p:{user}; ARGV = node, now_ms, seen_ttl_ms, m, m swept nodes (their
# fields are deleted), then pairs of device id and "<status>|<platform>|<connected_ms>"
# for the user's devices on this node, connected_ms in wall-clock ms. A node of the previous
# release wrote its host's monotonic ms (far below any epoch ms): a field of this release
# wins over its field for the same device, and its script keeps a field of this release
# over its own, as it did a field of a host that booted earlier.
# Returns {changed (0/1), aggregate, previous aggregate, last seen ms or ''}.
_PRESENCE_SYNC = (
    _AGGREGATE
    + """
local key, node = KEYS[1], ARGV[1]
local i = 4
local drop = {}
for _ = 1, tonumber(ARGV[i]) do i = i + 1; drop[ARGV[i]] = true end
local mine = {}
for j = i + 1, #ARGV, 2 do mine[ARGV[j]] = ARGV[j + 1] end
local all = redis.call('HGETALL', key)
for j = 1, #all, 2 do
  local f = all[j]
  if string.byte(f, 1) ~= 126 then
    local n = string.match(all[j + 1], '^(.-)|')
    if (n == node and not mine[f]) or drop[n] then redis.call('HDEL', key, f) end
  end
end
for f, v in pairs(mine) do
  local cur = redis.call('HGET', key, f)
  local write = true
  if cur then
    -- the same device connected again elsewhere: the newest connection wins
    local n, cms = string.match(cur, '^(.-)|.-|.-|(%d+)$')
    local ours = tonumber(string.match(v, '(%d+)$'))
    if n and n ~= node and not drop[n] and tonumber(cms) > ours then write = false end
  end
  if write then redis.call('HSET', key, f, node .. '|' .. v) end
end
local status, agg = aggregate(key)
local pub = redis.call('HGET', key, '~pub') or 'offline|'
local seen = redis.call('HGET', key, '~seen') or ''
if agg == pub then return {0, agg, pub, seen} end
if status == 'offline' then
  seen = ARGV[2]
  redis.call('HDEL', key, '~pub')
  redis.call('HSET', key, '~seen', seen)
  redis.call('PEXPIRE', key, ARGV[3])
else
  redis.call('HSET', key, '~pub', agg)
  redis.call('PERSIST', key)
end
return {1, agg, pub, seen}
"""
)

# KEYS[1] = bucket; ARGV = rate/s, burst, cost, mode ('strict': refuse when short, returns
# the wait; 'debit': always take, down to -burst * DEBT_BURSTS). Returns {tokens, wait}.
_BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(v[1]) or burst
local at = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local wait = 0
if ARGV[4] == 'strict' then
  if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
else
  tokens = math.max(-burst * tonumber(ARGV[5]), tokens - cost)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {tostring(tokens), tostring(wait)}
"""

# What one node spent of many shared buckets, in one call (one Redis server; on Redis
# Cluster keys live on different shards, so each key goes as its own _BUCKET call).
# KEYS = buckets; ARGV = debt (in bursts), then rate, burst, cost per key. Returns each
# bucket's tokens after the debit.
_DEBIT_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local debt = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local rate, burst, cost = tonumber(ARGV[3 * k - 1]), tonumber(ARGV[3 * k]), tonumber(ARGV[3 * k + 1])
  local v = redis.call('HMGET', KEYS[k], 't', 'at')
  local tokens = tonumber(v[1]) or burst
  local at = tonumber(v[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
  tokens = math.max(-burst * debt, tokens - cost)
  redis.call('HSET', KEYS[k], 't', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[k], math.ceil((burst - tokens) / rate * 1000) + 1000)
  out[k] = tostring(tokens)
end
return out
"""

# Failed-login back-off. KEYS[1] = counter; ARGV = op ('check' | 'fail' | 'forget' |
# 'forgive'), free, base_ms, max_ms, window_ms. Returns ms until the key may try again.
_BACKOFF = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'forget' then redis.call('DEL', KEYS[1]) return 0 end
if op == 'forgive' then
  local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
  if n > 0 then redis.call('HSET', KEYS[1], 'n', n - 1) end
  return 0
end
if op == 'fail' then
  local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
  local over = n - tonumber(ARGV[2])
  if over > 0 then
    local lock = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(over - 1, 40))
    redis.call('HSET', KEYS[1], 'until', now + lock)
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
return math.max(0, u - now)
"""


def parse_state(agg: str) -> State:
    """``online|android,web`` -> ("online", ("android", "web"))."""
    status, _, platforms = agg.partition("|")
    return status, tuple(p for p in platforms.split(",") if p)


def aggregate_fields(
    fields: dict[bytes, bytes], local: tuple[str, LocalDevices] | None = None
) -> tuple[State, int | None]:
    """The same aggregate as the sync script, from a user's hash as read by HGETALL
    (``local``: this node's name and its devices as they are now, instead of its fields)."""
    seen: int | None = None
    entries: list[tuple[str, str]] = []
    for k, v in fields.items():
        if k.startswith(b"~"):
            if k == b"~seen":
                seen = int(v)
            continue
        parts = v.decode().split("|")
        if len(parts) != 4 or (local is not None and parts[0] == local[0]):
            continue
        entries.append((parts[1], parts[2]))
    if local is not None:
        entries += [(st, platform) for st, platform, _ in local[1].values()]
    state = aggregate_presence(entries)
    return state, (None if state[0] != "offline" else seen)


class _Batch:
    """Records pipeline-style calls (``p.zadd(...)``) to replay them one by one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kw: Any) -> None:
            self.calls.append((name, args, kw))

        return record


class ClusterState(SharedSpending):
    """One per node in cluster mode: its own Redis connections and background loops."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        node_name: str,
        online_user_ids: Callable[[], list[int]],
        clock: Clock | None = None,
    ) -> None:
        #: the users with a device on this node now (written again when Redis forgot them)
        self._online_user_ids = online_user_ids
        self.node_name = node_name
        #: the host's clocks: the presence fields' connect times are converted to wall time
        self._clock = clock or Clock()
        self._ttl_ms = int(settings.cluster_route_ttl_s * 1000)
        self._sync_s = settings.cluster_limits_sync_s
        self.timeout_s = settings.cluster_state_timeout_s
        self._redis: aioredis.Redis | RedisCluster = connect_redis(url)
        self._cluster = url.startswith("redis+cluster://")
        self._shas: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False  # this node's liveness entry was written at least once
        #: nodes whose liveness lapsed (swept, or to be swept)
        self.dead: set[str] = set()
        #: agents online on any node (a copy of yim:ao), and when it was last confirmed
        self.agents_online: set[int] = set()
        self._agents_at = 0.0
        #: False from a failed Redis call until the refresh loop reaches Redis again; while
        #: False, checks use this node's own state without waiting for Redis
        self.healthy = False
        self._down_logged = False
        # send-limit consumption not yet added to the shared buckets (yim/bus/shared_limits.py)
        self._init_spending()
        self._resync: Callable[[Iterable[int], set[str]], Awaitable[bool]] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self, resync: Callable[[Iterable[int], set[str]], Awaitable[bool]]) -> None:
        """``resync(users, swept)`` re-aggregates users' presence (the presence service);
        it answers whether the result is in Redis."""
        self._resync = resync
        try:
            await bounded(self._load_scripts(), self.timeout_s * 5)
            await self._refresh()
        except Exception as exc:  # the node still starts: everything degrades to per node
            self.unavailable(exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._refresh_forever(), name="yim-state-refresh"),
            loop.create_task(self._agents_forever(), name="yim-state-agents"),
            loop.create_task(self._limits_forever(), name="yim-state-limits"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await finish(self._tasks, 5, log)
        with contextlib.suppress(Exception):
            await bounded(self._flush_spent(), self.timeout_s)
        # Leaving: the next sweep of another node publishes this node's users offline
        # (those still connected here are being closed with 1001 and reconnect elsewhere).
        with contextlib.suppress(Exception):
            await bounded(self._redis.zadd("yim:pnodes", {self.node_name: 0}), self.timeout_s)
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def _load_scripts(self) -> None:
        for name, src in (
            ("presence", _PRESENCE_SYNC),
            ("bucket", _BUCKET),
            ("debit_many", _DEBIT_MANY),
            ("backoff", _BACKOFF),
        ):
            self._shas[name] = await self._redis.script_load(src)

    async def _run(self, build: Callable[[Any], object], ordered: bool = False) -> list[Any]:
        """One pipelined round trip; scripts are loaded again if Redis lost them (restart).
        On Redis Cluster (whose client pipelines no scripts) the commands go concurrently,
        each to its key's shard, or one after another when ``ordered``. ``build`` queues the
        commands on what it is given; what it returns is unused (a lambda queueing several
        returns their tuple)."""
        for attempt in (0, 1):
            try:
                if not self._cluster:
                    pipe = self._redis.pipeline(transaction=False)
                    build(pipe)
                    return await pipe.execute()
                batch = _Batch()
                build(batch)
                calls = [getattr(self._redis, name)(*args, **kw) for name, args, kw in batch.calls]
                if ordered:
                    return [await call for call in calls]
                return list(await asyncio.gather(*calls))
            except NoScriptError:
                if attempt:
                    raise
                await self._load_scripts()
        raise AssertionError("unreachable")

    def _evalsha(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self._shas[name], len(keys), *keys, *args)

    def unavailable(self, exc: BaseException) -> None:
        """A call to Redis failed: checks use this node's own state until a refresh succeeds."""
        if not self._down_logged:
            log.warning(
                "cluster state in Redis unavailable (%s): presence, limits and agents are per node",
                str(exc) or type(exc).__name__,
            )
            self._down_logged = True
        self.healthy = False

    def _came_back(self) -> None:
        if self._down_logged:
            log.warning("cluster state in Redis reachable again")
            self._down_logged = False
        self.healthy = True

    # --- liveness and the dead-node sweep --------------------------------------------------
    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self._refresh()  # each Redis call in it is bounded by timeout_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.unavailable(exc)

    async def _refresh(self) -> None:
        now_ms = int(time.time() * 1000)
        swept_key = f"yim:psweep:{{{self.node_name}}}"
        before, _, lapsed, _, agents, swept = await bounded(
            self._run(
                lambda p: (
                    p.zscore("yim:pnodes", self.node_name),
                    p.zadd("yim:pnodes", {self.node_name: now_ms + self._ttl_ms}),
                    p.zrangebyscore("yim:pnodes", "-inf", now_ms),
                    p.zremrangebyscore("yim:pnodes", "-inf", now_ms - TOMBSTONE_MS),
                    p.smembers("yim:ao"),
                    p.get(swept_key),
                ),
                ordered=True,
            ),
            self.timeout_s,
        )
        was_down = not self.healthy
        self._came_back()
        self.dead = {n.decode() for n in lapsed} - {self.node_name}
        self.agents_online = {int(a) for a in agents}
        self._agents_at = time.monotonic()
        # Redis restarted empty, or this node lapsed (a long pause) and was swept: its
        # users' fields are gone, write them again (a sweep still running: next time).
        forgotten = self._registered and (before is None or swept == b"done")
        assert self._resync is not None
        if forgotten:
            log.warning("cluster state lost this node's presence; writing its users' presence again")
        if forgotten or (was_down and self._registered):
            # also the users whose changes could not be written while Redis was away
            written = await self._resync(self._online_user_ids(), set())
            if written and swept is not None:  # else: found again next time, and retried
                await bounded(self._redis.delete(swept_key), self.timeout_s)
        self._registered = True
        for dead in sorted(self.dead):
            await self._sweep(dead)

    async def _sweep(self, dead: str) -> None:
        """Publish a dead node's users offline (one live node does it). The sweep marker
        lives TOMBSTONE_MS, so a node is swept once, and a node that was only paused
        learns from it that its users' fields are gone."""
        key = f"yim:psweep:{{{dead}}}"
        if not await bounded(self._redis.set(key, self.node_name, nx=True, px=self._ttl_ms), self.timeout_s):
            return  # another node sweeps it, or did (until the node comes back and says so)
        members = await bounded(self._redis.smembers(f"yim:pn:{{{dead}}}"), self.timeout_s)
        users = [int(u) for u in members]
        log.info("node %s lapsed; publishing the presence of its %d users", dead, len(users))
        assert self._resync is not None
        if not await self._resync(users, {dead}):
            return  # Redis failed meanwhile: the claim lapses and a node sweeps it again
        await bounded(
            self._run(lambda p: (p.delete(f"yim:pn:{{{dead}}}"), p.set(key, "done", px=TOMBSTONE_MS))),
            self.timeout_s,
        )

    # --- presence --------------------------------------------------------------------------
    async def presence_sync(self, users: dict[int, LocalDevices], swept: set[str]) -> list[PresenceChange]:
        """Write this node's devices of each user (none: remove them) and aggregate
        (``swept``: lapsed nodes whose fields to delete)."""
        now_ms = str(int(time.time() * 1000))
        head: list[Any] = [self.node_name, now_ms, SEEN_TTL_MS, len(swept), *sorted(swept)]
        # LocalDevices hold this host's monotonic ms; the script compares them with other
        # hosts' fields, so they go as wall-clock ms (error bound: Clock.offset)
        shift = round(self._clock.offset() * 1000)
        out: list[PresenceChange] = []
        items = list(users.items())
        for i in range(0, len(items), PRESENCE_CHUNK):
            chunk = items[i : i + PRESENCE_CHUNK]

            def build(p: Any, chunk: list[tuple[int, LocalDevices]] = chunk) -> None:
                here = [u for u, devices in chunk if devices]
                gone = [u for u, devices in chunk if not devices]
                for user_id, devices in chunk:
                    args = list(head)
                    for device_id, (status, platform, cms) in devices.items():
                        args += [device_id, f"{status}|{platform}|{cms + shift}"]
                    self._evalsha(p, "presence", [f"yim:p:{{{user_id}}}"], args)
                if here:
                    p.sadd(f"yim:pn:{{{self.node_name}}}", *here)
                if gone:
                    p.srem(f"yim:pn:{{{self.node_name}}}", *gone)

            results = await bounded(self._run(build), self.timeout_s)
            for (user_id, _), res in zip(chunk, results, strict=False):
                changed, agg, before, seen = res
                out.append(
                    PresenceChange(
                        user_id,
                        bool(changed),
                        parse_state(agg.decode()),
                        parse_state(before.decode()),
                        int(seen) if seen else None,
                    )
                )
        return out

    async def presence_read(
        self, user_ids: list[int], local: Callable[[int], LocalDevices] | None = None
    ) -> dict[int, tuple[State, int | None]]:
        """Every user's aggregate over all live nodes, and their last-seen time while
        offline (``local``: count this node's devices as they are now)."""
        if not user_ids:
            return {}
        results = await bounded(self._run(lambda p: [p.hgetall(f"yim:p:{{{u}}}") for u in user_ids]), self.timeout_s)
        return {
            u: aggregate_fields(fields, (self.node_name, local(u)) if local is not None else None)
            for u, fields in zip(user_ids, results, strict=False)
        }

    async def device_present(self, user_id: int, device_id: str) -> bool:
        """Is this device connected to some node, as the nodes last shared their devices
        (each node's presence sync, within ``presence_debounce_s`` of a change)?"""
        (found,) = await bounded(self._run(lambda p: [p.hexists(f"yim:p:{{{user_id}}}", device_id)]), self.timeout_s)
        return bool(found)

    # --- online agents ---------------------------------------------------------------------
    def agent_connected(self, user_id: int) -> bool:
        """Is this agent online on some node (the copy; stale copies count for nothing)."""
        if time.monotonic() - self._agents_at > self._ttl_ms / 1000:
            return False  # Redis has been away for a while: only this node's agents count
        return user_id in self.agents_online

    async def agent_online(self, user_id: int, online: bool) -> None:
        """An agent's cluster-wide presence changed: tell every node's copy."""
        if online:
            self.agents_online.add(user_id)
        else:
            self.agents_online.discard(user_id)
        op = "sadd" if online else "srem"
        await bounded(
            self._run(lambda p: (getattr(p, op)("yim:ao", user_id), p.publish("yim:ao", f"{user_id}|{int(online)}"))),
            self.timeout_s,
        )

    async def _agents_forever(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe("yim:ao")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") not in ("message", b"message"):
                        continue
                    uid, _, online = msg["data"].decode().partition("|")
                    if online == "1":
                        self.agents_online.add(int(uid))
                    else:
                        self.agents_online.discard(int(uid))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:  # the refresh re-reads the whole set; only latency is lost
                log.debug("agent channel lost (%s); resubscribing", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    # --- rate limits -----------------------------------------------------------------------
    async def take(self, name: str, key: Any, rate: float, burst: float, cost: float = 1.0) -> float:
        """Strict shared bucket: 0.0 if allowed, else the seconds until it would be."""
        [res] = await bounded(
            self._run(
                lambda p: self._evalsha(p, "bucket", [f"yim:rl:{name}:{{{key}}}"], [rate, burst, cost, "strict", 0])
            ),
            self.timeout_s,
        )
        return float(res[1])

    async def backoff(self, ops: list[tuple[str, Any, str, Any]]) -> list[float]:
        """Failed-login counters: (name, key, op, backoff) each -> seconds still locked."""

        def build(p: Any) -> None:
            for name, key, op, b in ops:
                args = [op, b.free, int(b.base_s * 1000), int(b.max_s * 1000), int(b.window_s * 1000)]
                self._evalsha(p, "backoff", [f"yim:rl:{name}:{{{key}}}"], args)

        results = await bounded(self._run(build), self.timeout_s)
        return [int(r) / 1000 for r in results]

    async def _debit(self, order: list[Spending]) -> list[float]:
        def build(p: Any) -> None:
            if self._cluster:
                for name, key, cost in order:
                    b = self._buckets[name]
                    one = [b.rate, b.burst, cost, "debit", DEBT_BURSTS]
                    self._evalsha(p, "bucket", [f"yim:rl:{name}:{{{key}}}"], one)
                return
            for i in range(0, len(order), DEBIT_CHUNK):  # no single script blocks Redis for long
                keys: list[str] = []
                args: list[Any] = [DEBT_BURSTS]
                for name, key, cost in order[i : i + DEBIT_CHUNK]:
                    b = self._buckets[name]
                    keys.append(f"yim:rl:{name}:{{{key}}}")
                    args += [b.rate, b.burst, cost]
                self._evalsha(p, "debit_many", keys, args)

        replies = await bounded(self._run(build), self.timeout_s)
        return [float(r[0]) for r in replies] if self._cluster else [float(x) for r in replies for x in r]
