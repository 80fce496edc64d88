"""Rate limits and abuse defences of one node (docs/security.md).

Everything here is in memory and per node: token buckets keyed by user id or client IP,
exponential back-off after failed logins, and a cap on TCP connections per IP. A check is
one dict lookup plus a few float operations (a few hundred ns), so the send hot path pays
no task, lock or timer per message. Tables are bounded: when one reaches ``max_keys``
entries, entries that are back to their resting state are dropped first, then the oldest.
Dropping an entry only ever *forgets* a debt, so memory stays bounded and the worst an
attacker gains by churning keys is a fresh bucket.

Per-IP limits skip clients in ``limits_exempt_networks`` (by default loopback: load
generators and tools on the node's own host). Behind a load balancer that rewrites source
addresses every client shares the balancer's address; see docs/security.md.

In cluster mode (``redis_url``) the limits users could multiply by spreading over nodes
are shared through Redis (:mod:`yim.bus.cluster_state`): login attempts, failed-login
back-off and registrations with one round trip per check (each login costs an argon2
verify anyway), sends, reactions and uploads through in-memory buckets kept in step with
shared ones in batches. The per-request and typing limits stay per node there (see
:meth:`Limits.share`), and so does the cap on connections per IP: it guards one node's
sockets. When Redis is away every check falls back to this node's own tables.

A node of several worker processes (``--workers N``) shares all of them through its store
process (:mod:`yim.bus.workers`): the same batched buckets, per-request and typing
included, and the connections per IP counted for the whole node (:class:`ConnectionCounts`).

Settings (yim/config.py): a rate of 0 turns that limit off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

from yim.protocol.errors import YimError
from yim.services.lockout import locked_until

if TYPE_CHECKING:
    from yim.config import Settings

log = logging.getLogger("yim.gateway.limits")

_monotonic = time.monotonic


class SharedBuckets(Protocol):
    """Cluster mode: the rate-limit buckets every node shares (the bus's cluster state, in
    Redis); ``healthy`` False means Redis is away and each node counts alone."""

    healthy: bool

    def unavailable(self, exc: BaseException) -> None: ...

    def share_buckets(self, name: str, buckets: TokenBuckets) -> None: ...

    def spent(self, name: str, key: Any, cost: float) -> None: ...

    async def take(self, name: str, key: Any, rate: float, burst: float, cost: float = 1.0) -> float: ...

    async def backoff(self, ops: list[tuple[str, Any, str, Any]]) -> list[float]: ...


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens per second, at most ``burst`` saved up.

    State per key is a two-item list ``[tokens, last_refill]``; ``take`` refills lazily.
    Shared buckets (:meth:`record_to`) also record each successful take for the next flush
    (yim/bus/shared_limits.py), so no check has to remember to.
    """

    __slots__ = ("_max_keys", "_name", "_shared", "_state", "burst", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 200_000) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._max_keys = max(16, max_keys)
        self._state: dict[Hashable, list[float]] = {}
        self._shared: SharedBuckets | None = None
        self._name = ""

    def record_to(self, shared: SharedBuckets, name: str) -> None:
        """Every take from now on is also recorded as spent from the shared bucket ``name``."""
        self._shared = shared
        self._name = name

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: Hashable, cost: float = 1.0, now: float = 0.0) -> float:
        """Spend ``cost`` tokens: 0.0 if allowed, else the seconds until it would be.
        ``now`` (time.monotonic()) may be passed by a caller checking several buckets."""
        rate = self.rate
        if rate <= 0.0:
            return 0.0
        if not now:
            now = _monotonic()
        st = self._state.get(key)
        if st is None:
            if len(self._state) >= self._max_keys:
                self._prune(now)
            self._state[key] = [self.burst - cost, now]
            if self._shared is not None:
                self._shared.spent(self._name, key, cost)
            return 0.0
        tokens = st[0] + (now - st[1]) * rate
        if tokens > self.burst:
            tokens = self.burst
        st[1] = now
        if tokens >= cost:
            st[0] = tokens - cost
            if self._shared is not None:
                self._shared.spent(self._name, key, cost)
            return 0.0
        st[0] = tokens
        return (cost - tokens) / rate

    def set_level(self, key: Hashable, tokens: float) -> None:
        """Set a key's tokens as of now (cluster mode: the shared bucket's level)."""
        if tokens >= self.burst:
            self._state.pop(key, None)  # a full bucket is the same as no entry
        elif key in self._state or len(self._state) < self._max_keys:
            self._state[key] = [tokens, _monotonic()]

    def _prune(self, now: float) -> None:
        rate, burst, state = self.rate, self.burst, self._state
        for key in [k for k, (tokens, t) in state.items() if tokens + (now - t) * rate >= burst]:
            del state[key]  # a full bucket is the same as no entry
        if len(state) >= self._max_keys * 0.9:
            for key in list(state)[: len(state) // 2]:
                del state[key]


class Backoff:
    """Exponential back-off after failures, per key (a username or an IP).

    The first ``free`` failures cost nothing; each further one locks the key for
    ``base_s * 2**k`` seconds (k = 0, 1, 2, ...), at most ``max_s``. Failures are forgotten
    ``window_s`` after the last one; a success forgives (``succeeded``).
    """

    __slots__ = ("_max_keys", "_state", "base_s", "free", "max_s", "window_s")

    def __init__(self, free: int, base_s: float, max_s: float, window_s: float, max_keys: int = 200_000) -> None:
        self.free = max(0, free)
        self.base_s = base_s
        self.max_s = max_s
        self.window_s = window_s
        self._max_keys = max(16, max_keys)
        #: key -> [failures, locked_until, last_failure]
        self._state: dict[Hashable, list[float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def locked_for(self, key: Hashable) -> float:
        """Seconds until ``key`` may try again (0.0: now)."""
        if self.base_s <= 0:
            return 0.0
        st = self._state.get(key)
        if st is None:
            return 0.0
        now = _monotonic()
        if now - st[2] > self.window_s:
            del self._state[key]
            return 0.0
        return max(0.0, st[1] - now)

    def failed(self, key: Hashable) -> None:
        if self.base_s <= 0:
            return
        now = _monotonic()
        st = self._state.get(key)
        if st is None or now - st[2] > self.window_s:
            if st is None and len(self._state) >= self._max_keys:
                self._prune(now)
            st = self._state[key] = [0, 0.0, now]
        st[0] += 1
        st[2] = now
        until = locked_until(int(st[0]), self.free, self.base_s, self.max_s, now)
        if until is not None:
            st[1] = until

    def succeeded(self, key: Hashable, *, forget: bool = True) -> None:
        """A success: forget the key's failures (``forget``) or forgive one of them."""
        if forget:
            self._state.pop(key, None)
            return
        st = self._state.get(key)
        if st is not None and st[0] > 0:
            st[0] -= 1

    def _prune(self, now: float) -> None:
        state = self._state
        for key in [k for k, st in state.items() if now - st[2] > self.window_s or st[0] <= self.free]:
            del state[key]
        if len(state) >= self._max_keys * 0.9:
            for key in list(state)[: len(state) // 2]:
                del state[key]


#: (user, conversation) pairs the typing limiter remembers at most (~250 bytes each: ~25 MB)
TYPING_MAX_KEYS = 100_000


class TypingLimiter:
    """At most one forwarded typing signal per (user, conversation) per ``interval_s``.

    A token bucket of rate 1/interval and burst 1 per pair: the same rule as "not within
    ``interval_s`` of the last one let through" (a refused signal costs nothing), kept as a
    bucket so that the workers of one node share it like the other limits (by
    :meth:`Limits.share`; the key is ``"<user>:<conversation>"``, what the shared tables
    take). Pairs quiet for an interval are full buckets, the first dropped when the table
    reaches TYPING_MAX_KEYS.
    """

    __slots__ = ("buckets",)

    def __init__(self, interval_s: float) -> None:
        self.buckets = TokenBuckets(1.0 / interval_s if interval_s > 0 else 0.0, 1.0, TYPING_MAX_KEYS)

    def allow(self, user_id: int, conv_id: int) -> bool:
        return not self.buckets.take(f"{user_id}:{conv_id}")


class ConnectionCounts:
    """Open TCP connections per client IP, for the cap ``max_connections_per_ip``.

    One process counts its own (``mine``). The workers of one node (``changed`` set by
    yim/bus/workers.py ``WorkerState.count_connections``) each still decide at once from
    memory, no round trip per connect, from their own counts plus the other workers'
    (``others``) as the store process last told them: every sync period
    (``cluster_limits_sync_s``) a worker sends its count of each IP that changed (the
    count, not the change: a lost or repeated report is healed by the next) and the store
    process tells the other workers their new sum (yim/bus/workers_hub.py
    ``HubState.count_connections``). The bound on over-admission: the node holds at most
    the cap plus what the other workers admitted from that IP within the last sync period
    (and the flight time of their reports), the connections this worker had not heard of
    yet. A dead worker's connections are gone, and so are its counts.

    Memory: an IP is kept only while it has connections — in ``mine`` while this process
    holds some, in ``others`` while another worker does — and in ``changed`` until the
    next report: about 100 bytes per (IP, table), so per worker about 100 bytes times the
    distinct client addresses connected to the node (the store process about 300 per
    address, measured with tracemalloc). Addresses exempt from per-IP limits
    (``limits_exempt_networks``) are never counted.
    """

    __slots__ = ("cap", "changed", "mine", "others")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.mine: dict[str, int] = {}
        self.others: dict[str, int] = {}
        #: IPs whose count here changed since the last report; None: nothing is shared
        self.changed: set[str] | None = None

    def opened(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False if the node is at the cap (refuse it)."""
        count = self.mine.get(ip, 0)
        if count + self.others.get(ip, 0) >= self.cap:
            return False
        self.mine[ip] = count + 1
        if self.changed is not None:
            self.changed.add(ip)
        return True

    def closed(self, ip: str) -> None:
        count = self.mine.get(ip, 0) - 1
        if count > 0:
            self.mine[ip] = count
        else:
            self.mine.pop(ip, None)
        if self.changed is not None:
            self.changed.add(ip)

    def changes(self) -> list[tuple[str, int]]:
        """The report: this process's count of each IP that changed since the last one
        (0: none left here)."""
        if not self.changed:
            return []
        changed, self.changed = self.changed, set()
        mine = self.mine
        return [(ip, mine.get(ip, 0)) for ip in changed]

    def unreported(self, counts: list[tuple[str, int]]) -> None:
        """A report that did not leave: its IPs go into the next."""
        if self.changed is not None:
            self.changed.update(ip for ip, _ in counts)

    def set_others(self, counts: list[tuple[str, int]]) -> None:
        """What the other workers hold of each IP now (0: nothing)."""
        others = self.others
        for ip, count in counts:
            if count > 0:
                others[ip] = count
            else:
                others.pop(ip, None)


def _retry(wait: float) -> float:
    return round(max(wait, 0.001), 3)


class Limits:
    """The limits of one node, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        s = settings
        n = s.limits_max_keys
        self._exempt = [ipaddress.ip_network(x.strip(), strict=False) for x in s.limits_exempt_networks.split(",") if x]
        self._ip_keys: dict[str, str | None] = {}
        self.send_user = TokenBuckets(s.rate_send_per_user_s, s.rate_send_burst, n)
        self.send_ip = TokenBuckets(s.rate_send_per_ip_s, s.rate_send_ip_burst, n)
        self.requests_user = TokenBuckets(s.rate_requests_per_user_s, s.rate_requests_burst, n)
        self.register_ip = TokenBuckets(s.rate_register_per_ip_s, s.rate_register_ip_burst, n)
        self.login_attempts_ip = TokenBuckets(s.rate_login_per_ip_s, s.rate_login_ip_burst, n)
        self.upload_user = TokenBuckets(s.rate_upload_per_user_s, s.rate_upload_burst, n)
        self.react_user = TokenBuckets(s.rate_react_per_user_s, s.rate_react_burst, n)
        self.login_user = Backoff(
            s.login_free_failures, s.login_backoff_base_s, s.login_backoff_max_s, s.login_failure_window_s, n
        )
        self.login_ip = Backoff(
            s.login_ip_free_failures, s.login_backoff_base_s, s.login_backoff_max_s, s.login_failure_window_s, n
        )
        self.typing = TypingLimiter(s.typing_interval_s)
        self.max_connections_per_ip = s.max_connections_per_ip
        self.connections = ConnectionCounts(s.max_connections_per_ip)
        self.refused_connections = 0
        self.shared: SharedBuckets | None = None

    @property
    def connections_ip(self) -> dict[str, int]:
        """Open TCP connections per IP held by this process."""
        return self.connections.mine

    def share(self, state: SharedBuckets, *, every_request: bool = False) -> None:
        """Share the limits a user could multiply by spreading devices over processes:
        logins and registrations (a call per check), and in batches (yim/bus/shared_limits.py)
        sends, reactions and uploads; with ``every_request`` the per-request and typing
        limits too.

        ``every_request`` is for the workers of one node (their shared buckets are a dict in
        the store process, and connections per IP are counted for the node by the caller,
        yim/bus/workers.py). A cluster leaves it off: nearly every active user makes a
        request in a sync period where few send, so sharing them through Redis would cost
        one more Lua script per active user per period (5-20 µs of Redis CPU each; at
        docs/operations.md §3's 10 M users online, a request each per 30 s is ~330,000
        scripts a second, on the order of the route refreshes, Redis's largest load) to
        take away a multiplier no larger than the number of nodes a user's devices are on
        (1.3 devices per user there)."""
        self.shared = state
        state.share_buckets("send_user", self.send_user)
        state.share_buckets("send_ip", self.send_ip)
        state.share_buckets("react_user", self.react_user)
        state.share_buckets("upload_user", self.upload_user)
        if every_request:
            state.share_buckets("requests_user", self.requests_user)
            state.share_buckets("typing", self.typing.buckets)

    def _use_shared(self) -> SharedBuckets | None:
        shared = self.shared
        return shared if shared is not None and shared.healthy else None

    # -- who counts as an IP -------------------------------------------------------------
    def ip_key(self, remote: str | None) -> str | None:
        """The key per-IP limits use for a peer address, or None when they do not apply."""
        if not remote:
            return None
        cached = self._ip_keys.get(remote, "")
        if cached != "":
            return cached
        try:
            addr = ipaddress.ip_address(remote)
        except ValueError:
            key: str | None = None
        else:
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            key = None if any(addr in net for net in self._exempt) else str(addr)
        if len(self._ip_keys) >= 100_000:
            self._ip_keys.clear()
        self._ip_keys[remote] = key
        return key

    # -- checks (each raises YimError("rate_limited") with retry_after) -----------------------
    def check_send(self, user_id: int, ip: str | None, messages: int = 1) -> None:
        """``messages``: how many messages the request sends (a ``forward`` sends many)."""
        now = _monotonic()
        cost = float(messages)
        wait = self.send_user.take(user_id, cost, now)
        if not wait and ip is not None:
            wait = self.send_ip.take(ip, cost, now)
        if wait:
            raise YimError("rate_limited", "sending too fast; slow down", retry_after=_retry(wait))

    def check_request(self, user_id: int) -> None:
        wait = self.requests_user.take(user_id)
        if wait:
            raise YimError("rate_limited", "too many requests; slow down", retry_after=_retry(wait))

    async def check_register(self, ip: str | None) -> None:
        if ip is None:
            return
        wait = None
        shared = self._use_shared()
        if shared is not None and self.register_ip.rate > 0:
            b = self.register_ip
            try:
                wait = await shared.take("register_ip", ip, b.rate, b.burst)
            except Exception as exc:  # Redis away: this node's own bucket
                shared.unavailable(exc)
        if wait is None:
            wait = self.register_ip.take(ip)
        if wait:
            raise YimError("rate_limited", "too many registrations from this address", retry_after=_retry(wait))

    def check_upload(self, user_id: int) -> None:
        """Media uploads per user (``POST /api/v1/media``)."""
        wait = self.upload_user.take(user_id)
        if wait:
            raise YimError("rate_limited", "uploading too fast; slow down", retry_after=_retry(wait))

    def check_react(self, user_id: int) -> None:
        """Reactions per user (``react``), on top of the request limit: each one is pushed
        to every member's devices."""
        wait = self.react_user.take(user_id)
        if wait:
            raise YimError("rate_limited", "reacting too fast; slow down", retry_after=_retry(wait))

    async def check_login(self, username: str, ip: str | None) -> None:
        """Before verifying a password: refuse while the username or the IP is locked out,
        and pace attempts per IP (each costs an argon2 verify, ~170 ms of CPU)."""
        shared = self._use_shared()
        if shared is not None:
            try:
                wait = await self._check_login_shared(shared, username.lower(), ip)
            except Exception as exc:  # Redis away: this node's own tables
                shared.unavailable(exc)
            else:
                if wait:
                    raise YimError("rate_limited", "too many login attempts; try again later", retry_after=_retry(wait))
                return
        wait = self.login_user.locked_for(username.lower())
        if ip is not None:
            wait = max(wait, self.login_ip.locked_for(ip))
            if not wait:
                wait = self.login_attempts_ip.take(ip)
        if wait:
            raise YimError("rate_limited", "too many login attempts; try again later", retry_after=_retry(wait))

    async def _check_login_shared(self, shared: SharedBuckets, username: str, ip: str | None) -> float:
        ops = self._backoff_ops(username, ip, "check", "check")
        wait = max(await shared.backoff(ops), default=0.0) if ops else 0.0
        b = self.login_attempts_ip
        if not wait and ip is not None and b.rate > 0:
            wait = await shared.take("login_attempts_ip", ip, b.rate, b.burst)
        return wait

    def _backoff_ops(self, username: str, ip: str | None, user_op: str, ip_op: str) -> list[tuple[str, Any, str, Any]]:
        ops: list[tuple[str, Any, str, Any]] = []
        if self.login_user.base_s > 0:
            ops.append(("login_user", username, user_op, self.login_user))
        if ip is not None and self.login_ip.base_s > 0:
            ops.append(("login_ip", ip, ip_op, self.login_ip))
        return ops

    async def login_failed(self, username: str, ip: str | None) -> None:
        shared = self._use_shared()
        if shared is not None:
            try:
                await shared.backoff(self._backoff_ops(username.lower(), ip, "fail", "fail"))
                return
            except Exception as exc:
                shared.unavailable(exc)
        self.login_user.failed(username.lower())
        if ip is not None:
            self.login_ip.failed(ip)

    async def login_succeeded(self, username: str, ip: str | None) -> None:
        shared = self._use_shared()
        if shared is not None:
            try:
                await shared.backoff(self._backoff_ops(username.lower(), ip, "forget", "forgive"))
                return
            except Exception as exc:
                shared.unavailable(exc)
        self.login_user.succeeded(username.lower())
        if ip is not None:
            self.login_ip.succeeded(ip, forget=False)

    # -- TCP connections per IP ------------------------------------------------------------
    def connection_opened(self, ip: str | None) -> bool:
        """Count a new TCP connection; False if its IP is at the cap (close it)."""
        if ip is None or self.max_connections_per_ip <= 0:
            return True
        return self.connections.opened(ip)

    def connection_closed(self, ip: str) -> None:
        self.connections.closed(ip)


def install_connection_guard(server: Any, limits: Limits) -> None:
    """Count TCP connections per client IP on an aiohttp low-level ``web.Server`` and abort
    those beyond ``max_connections_per_ip`` before a byte of them is parsed. Counting at the
    TCP level (not per WebSocket) also covers sockets that never finish their HTTP request
    (slowloris); ``http_idle_timeout_s`` bounds how long such a socket lives."""
    made = server.connection_made
    lost = server.connection_lost
    counted: dict[Any, str] = {}

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = limits.ip_key(peer[0] if isinstance(peer, tuple) and peer else None)
        if limits.connection_opened(ip):
            if ip is not None and limits.max_connections_per_ip > 0:
                counted[handler] = ip
        else:
            limits.refused_connections += 1
            if limits.refused_connections % 1000 == 1:  # a flood must not flood the log too
                log.warning("refusing connections from %s: %d open (cap)", ip, limits.max_connections_per_ip)
            transport.abort()

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        ip = counted.pop(handler, None)
        if ip is not None:
            limits.connection_closed(ip)
        lost(handler, exc)

    server.connection_made = connection_made
    server.connection_lost = connection_lost


class LogThrottle(logging.Filter):
    """Pass at most ``burst`` records, then ``rate`` per second: malformed requests from a
    flood (aiohttp logs each with a traceback) must not fill the disk."""

    def __init__(self, rate: float = 1.0, burst: int = 20) -> None:
        super().__init__()
        self._bucket = TokenBuckets(rate, burst, 16)
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self._bucket.take(0):
            self.suppressed += 1
            return False
        return True


def throttle_logger(name: str, rate: float = 1.0, burst: int = 20) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, LogThrottle) for f in logger.filters):
        logger.addFilter(LogThrottle(rate, burst))
