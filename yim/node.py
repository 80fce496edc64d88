"""A node: one process holding the store, the id generator, the connection table and the
services, with its lifecycle (start, graceful stop), and ``NodeServer``, which serves it over
HTTP/WS through the gateway's app.

This is the composition root: the only module that imports every layer (storage, services,
gateway, bus) and wires them together. Each layer below sees the node only through the
Protocol it declares (``yim.services.context.Context``, ``yim.gateway.keys.ServedNode``,
``yim.bus.local.NodeHooks``); docs/architecture.md "Layers" has the map."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

import msgspec
from aiohttp import web

from yim.bus.local import LocalBus
from yim.config import Settings
from yim.gateway.app import build_app, tune_gc
from yim.gateway.hub import Hub
from yim.gateway.limits import Limits, TypingLimiter, install_connection_guard, throttle_logger
from yim.ids.snowflake import Snowflake
from yim.metrics import Metrics, StoreCollector
from yim.protocol.close import CLOSE_GOING_AWAY
from yim.protocol.errors import YimError
from yim.services.accounts import Accounts
from yim.services.clock import Clock
from yim.services.erase import ErasureSweeper
from yim.services.hooks import Webhooks
from yim.services.media import MediaService
from yim.services.presence import Presence
from yim.services.push import PushWorker
from yim.services.rosters import Rosters
from yim.services.service import CustomerService
from yim.services.sync import ReadAhead
from yim.services.words import WordFilter
from yim.storage import open_store
from yim.storage.base import Store

if TYPE_CHECKING:
    from yim.bus.cluster_state import ClusterState
    from yim.bus.workers import WorkerState
    from yim.ipc.channel import Channel
    from yim.push.providers import PushProviders

log = logging.getLogger("yim.node")
#: the serving lines ("serving on", "shutting down") keep the logger name operators know
_serve_log = logging.getLogger("yim.gateway")

#: the exit code of a node that stopped because it can never serve again (e.g. fenced and no
#: node id to lease): its supervisor should restart it
EXIT_FAILED = 3

_SEEN_FLUSH_S = 5.0
#: /readyz asks the store and Redis at most this often; callers in between get the last answer
READY_PROBE_CACHE_S = 1.0
#: /readyz gives the store and Redis this long to answer
READY_PROBE_TIMEOUT_S = 2.0
#: A connected device whose cursor did not move has its last-seen time written this often.
_SEEN_COARSE_MS = 300_000


def redact_url(url: str) -> str:
    """A store or Redis URL fit for logs: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _read_key(path: Path) -> bytes:
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise RuntimeError(f"{path} holds a key shorter than 32 bytes")
    return key


async def signing_key(data_dir: Path, store: Store) -> bytes:
    """The token-signing key. A store shared by several nodes (PostgreSQL) holds it, so that
    a token issued by one node is valid on every other: the first node stores its candidate
    (the data folder's ``secret.key`` if there is one, else 32 fresh random bytes) and all
    read back the same key. One node on SQLite keeps it in ``<data>/secret.key``."""
    path = data_dir / "secret.key"
    local = _read_key(path) if path.exists() else None
    shared = await store.shared_signing_key(local or secrets.token_bytes(32))
    if shared is None:
        return load_or_create_secret(data_dir)
    if local is not None and local != shared:
        log.warning("%s differs from the signing key in the shared store; the store's key is used", path)
    return shared


#: the lock file of a data folder (never removed: a node that unlinked it on exit could let
#: the next two nodes lock two different files of the same name)
LOCK_FILE = "yim.lock"


def store_of(settings: Settings) -> Store:
    """The store the settings name, opened as a node uses it (the one-process node, and the
    store process of a node of workers)."""
    return open_store(
        settings.store,
        settings.data_dir,
        pool_min=settings.pg_pool_min,
        pool_max=settings.pg_pool_max,
        sqlite_synchronous=settings.sqlite_synchronous,
        batch_max=settings.commit_batch_max,
        indexer_process=settings.indexer_in_process,
    )


class DataFolderError(OSError):
    """A data folder this node cannot use: the message names it and says why, in one line."""


def prepare_data_folder(folder: Path) -> None:
    """Make the data folder (0700: the store holds password hashes) or say why not."""
    where = os.path.abspath(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise DataFolderError(f"data folder {where}: {os.path.abspath(blocker)} is a file, not a folder") from None
    except OSError as exc:  # no permission, a read-only file system ...
        at = "" if exc.filename in (None, str(folder)) else f" (at {exc.filename})"
        raise DataFolderError(f"data folder {where} cannot be created: {exc.strerror}{at}") from None


def lock_data_folder(folder: Path) -> int:
    """Take the data folder for this process, or raise :class:`DataFolderError` naming the
    node that holds it. Two nodes on one folder would both issue ids as the same node and
    never see each other's pushes. The lock is an exclusive ``flock`` on ``<folder>/yim.lock``,
    held while the returned descriptor is open: the kernel drops it when the process ends,
    however it ends, so a crashed node never leaves a stale lock behind. The file holds the
    holder's pid, for the message of the next one."""
    where = os.path.abspath(folder)
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DataFolderError(f"data folder {where} is not writable: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "not written yet"
        os.close(fd)
        raise DataFolderError(
            f"data folder {where} is in use by another yim node (pid {holder}); one node per data folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_store_folders(settings: Settings, store: Store) -> list[int]:
    """Prepare and lock the data folder (and the folder of ``store = "sqlite:///PATH"`` when
    it lies elsewhere) before the store opens: a second node must not even migrate a folder
    in use. The locks hold while the returned descriptors are open."""
    # imported here: a worker (its store is a RemoteStore) never loads the SQLite backend's
    # ~20 modules, 2.7 MB of each worker's RSS
    from yim.storage.sqlite.store import SqliteStore

    data = settings.data_path
    folders = [data]
    if isinstance(store, SqliteStore):
        elsewhere = Path(store.path).parent
        if elsewhere.resolve() != data.resolve():
            folders.append(elsewhere)
    locks: list[int] = []
    try:
        for folder in folders:
            prepare_data_folder(folder)
            locks.append(lock_data_folder(folder))
    except BaseException:
        for fd in locks:
            os.close(fd)
        raise
    return locks


class WorkerRole:
    """What makes a Node a worker of a multi-process node (``yim serve --workers N``,
    yim/supervisor.py): its number, and its one channel to the store process, which carries
    the store's calls (``store.*``), the hub's (``hub.*``) and, the other way, the hub's
    casts and calls to this worker (``worker.*``, handed to the node's WorkerBus).

    The channel is made before the node (its handlers are these methods); the node names
    the bus that takes ``worker.*`` once it has built it."""

    #: casts that may come before the node has its bus (the hub's snapshot of routes, the
    #: route changes of a start-up): held for it; a store process that sent more is broken
    EARLY_CASTS_MAX = 100_000

    def __init__(self, index: int, channel: Channel | None = None) -> None:
        self.index = index
        self.channel: Channel | None = channel
        self._bus: WorkerEnd | None = None
        self._early: list[tuple[str, msgspec.Raw]] = []

    @property
    def bus(self) -> WorkerEnd | None:
        return self._bus

    @bus.setter
    def bus(self, bus: WorkerEnd) -> None:
        """The node's bus takes ``worker.*`` from now on, first what came before it."""
        self._bus = bus
        early, self._early = self._early, []
        for op, body in early:
            bus.on_cast(op, body)

    @property
    def primary(self) -> bool:
        """Worker 0 runs the node's singletons: push delivery, the erasure sweep, webhook delivery."""
        return self.index == 0

    def on_call(self, op: str, body: msgspec.Raw) -> object:
        if self._bus is None:
            raise YimError("unavailable", f"worker {self.index} is starting")
        return self._bus.on_call(op, body)

    def on_cast(self, op: str, body: msgspec.Raw) -> None:
        if self._bus is not None:
            self._bus.on_cast(op, body)
        elif len(self._early) < self.EARLY_CASTS_MAX:
            self._early.append((op, body))
        else:
            raise RuntimeError(f"worker {self.index}: over {self.EARLY_CASTS_MAX} casts before the node started")


class WorkerEnd(Protocol):
    """The worker's side of the hub's traffic (yim.bus.workers.WorkerBus)."""

    def on_call(self, op: str, body: msgspec.Raw) -> object: ...

    def on_cast(self, op: str, body: msgspec.Raw) -> None: ...


def load_or_create_secret(data_dir: Path) -> bytes:
    """The token-signing key: 32 random bytes made on first start, kept 0600 in the data dir."""
    path = data_dir / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def push_providers(settings: Settings) -> PushProviders:
    """The push providers the settings configure; a setting that cannot work is a ValueError
    naming it (one line at start, never an error per push)."""
    from yim.push.providers import PushProviders  # httpx and h2: loaded only with push enabled
    from yim.push.types import PushConfigError, PushSettings

    s = settings
    if not s.push_vapid_subject and not (s.push_apns_key_file or s.push_fcm_credentials_file or s.push_gateway_url):
        raise ValueError(
            "push_enabled needs a provider: push_vapid_subject (Web Push), push_apns_key_file,"
            " push_fcm_credentials_file or push_gateway_url"
        )
    try:
        return PushProviders(
            PushSettings(
                timeout=s.push_timeout_s,
                max_connections=s.push_max_connections,
                max_in_flight=s.push_max_in_flight,
                max_response_bytes=s.push_max_response_bytes,
                ca_file=s.push_ca_file or None,
                ttl=s.push_ttl_s,
                # Web Push is on whenever a contact for the push services is given
                vapid_dir=(s.push_vapid_dir or s.data_dir) if s.push_vapid_subject else None,
                vapid_subject=s.push_vapid_subject,
                webpush_allow_http=s.push_webpush_allow_http,
                apns_base_url=s.push_apns_base_url,
                apns_sandbox_base_url=s.push_apns_sandbox_base_url,
                apns_key_file=s.push_apns_key_file or None,
                apns_key_id=s.push_apns_key_id,
                apns_team_id=s.push_apns_team_id,
                apns_topic=s.push_apns_topic,
                fcm_base_url=s.push_fcm_base_url,
                fcm_token_url=s.push_fcm_token_url,
                fcm_credentials_file=s.push_fcm_credentials_file or None,
                gateway_url=s.push_gateway_url or None,
            )
        )
    except PushConfigError as exc:
        # the providers name their own fields (apns_key_file); the operator sets push_apns_key_file
        ours = {f.name for f in msgspec.structs.fields(PushSettings) if "_" in f.name}
        message = re.sub(r"\b[a-z0-9_]+\b", lambda m: f"push_{m[0]}" if m[0] in ours else m[0], str(exc))
        raise ValueError(f"push: {message}") from None


class Node:
    def __init__(self, settings: Settings, worker: WorkerRole | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        #: the host's clocks: connect times are read from it, and converted with it to the
        #: wall-clock times other nodes compare (yim/services/clock.py)
        self.clock = clock or Clock()
        #: set when this node is one worker of a multi-process node (yim/supervisor.py)
        self.worker = worker
        self.metrics = Metrics()
        self.store: Store
        if worker is not None:
            # Imported here, as RedisBus below: only a worker loads the channel's store.
            from yim.storage.remote import RemoteStore

            assert worker.channel is not None
            self.store = remote = RemoteStore(worker.channel)
        else:
            self.store = store_of(settings)
        if worker is None:  # a worker's scrape adds the store's series once for the node (WorkerBus)
            self.metrics.registry.register(StoreCollector(lambda: self.store.stats))
        self.hub = Hub(self.metrics, settings)
        self.bus: LocalBus
        if settings.redis_url:  # cluster mode: cross-node push, routing, node-id leases
            if not settings.store.startswith(("postgres://", "postgresql://")):
                raise ValueError("cluster mode (redis_url) needs a shared store: store = 'postgres://...'")
            # Imported here, not at the top, for no cycle: only so that a node on one machine
            # never loads redis-py (~80 modules, ~7 MB of RSS per process).
            from yim.bus.redis import RedisBus

            self.bus = RedisBus(self.hub, self.metrics, settings, self.store, self, settings.redis_url, self.clock)
        elif worker is not None:
            from yim.bus.workers import WorkerBus

            assert worker.channel is not None
            self.bus = WorkerBus(self.hub, self.metrics, settings, self, worker.index, settings.worker_count)
            self.bus.bind(worker.channel)
            worker.bus = self.bus  # it takes the hub's casts from now on, those held so far first
            bus = self.bus
            self.metrics.whole_node = lambda: bus.node_metrics(remote.refresh_stats)
        elif settings.node_id_lease:
            raise ValueError("node ids are leased from Redis: --node-id auto needs --redis (redis_url)")
        else:
            self.bus = LocalBus(self.hub, self.metrics)
        self.rosters = Rosters(self, settings.roster_cache_groups)
        self.read_ahead = ReadAhead()
        self.presence = Presence(self, settings.presence_debounce_s)
        self.service = CustomerService(self)
        self.media = MediaService(self)
        self.push = PushWorker(self, None)  # providers made at start, when push is enabled
        self.erasures = ErasureSweeper(self)
        self.ids: Snowflake = Snowflake(settings.node_id)  # the bus makes the real one at start
        self.limits = Limits(settings)
        self.typing: TypingLimiter = self.limits.typing
        #: sensitive-word lists; None when none are configured (one attribute check per text)
        self.words = WordFilter.from_settings(settings)
        #: the operator's webhooks; None when none are configured (one attribute check per send)
        self.hooks = Webhooks.from_settings(settings, self.metrics)
        #: cluster mode: presence, rate limits and online agents shared through Redis
        self.cluster: ClusterState | WorkerState | None = None
        if worker is not None:
            # The workers of one node share presence, online agents and rate limits through
            # the store process, as the nodes of a cluster do through Redis.
            assert isinstance(self.bus, WorkerBus)
            self.cluster = self.bus.state
            self.presence.cluster = self.cluster
            # every limit, and the connections per IP counted for the node (yim/bus/workers.py)
            self.limits.share(self.cluster, every_request=True)
            self.cluster.count_connections(self.limits.connections)
            # Each worker its own folder of uploads in progress: a worker that starts empties
            # its own, never one another worker is writing to.
            self.media.tmp_dir = self.media.tmp_dir / f"worker-{worker.index}"
        elif settings.redis_url:
            from yim.bus.cluster_state import ClusterState  # cluster mode only, as RedisBus above

            assert isinstance(self.bus, RedisBus)
            self.cluster = ClusterState(
                settings, settings.redis_url, self.bus.node_name, self.hub.online_user_ids, self.clock
            )
            self.presence.cluster = self.cluster
            self.limits.share(self.cluster)
        self.accounts: Accounts
        self.started_at = time.time()
        self.stopping = False
        #: why this node serves no one now (it cannot guarantee its node id), or None
        self.fenced: str | None = None
        self._probed: tuple[float, dict[str, str]] | None = None
        self._probing: asyncio.Task[dict[str, str]] | None = None
        #: set when the node can never serve again (e.g. no node id left to lease): the server exits
        self.failed = asyncio.Event()
        self.failed_reason = ""
        self._flusher: asyncio.Task[None] | None = None
        self._folder_locks: list[int] = []  # see lock_data_folder

    @property
    def primary(self) -> bool:
        """Runs the singletons (push delivery, erasure sweep, webhook delivery): every node,
        and of the workers of one node only worker 0."""
        return self.worker is None or self.worker.primary

    async def start(self) -> None:
        data = self.settings.data_path
        if self.worker is None:  # a worker's store process holds the folder and the store
            self._folder_locks = lock_store_folders(self.settings, self.store)
        if self.settings.push_enabled:  # before the store opens: bad push settings stop the start at once
            self.push.providers = push_providers(self.settings)
        await self.store.open()
        secret = await signing_key(data, self.store)
        await self.media.start()
        # Seed the generator above every id already issued, so a restart on a clock that
        # went backwards cannot reissue one.
        await self.bus.start()
        self.ids = self.bus.make_ids(self.settings.node_id, floor=await self.store.max_msg_id())
        self.accounts = Accounts(self, secret)
        self.service.start()
        if self.cluster is not None:  # after the service: a sweep at start may re-route agents
            await self.cluster.start(self.presence.resync)
        self.hub.start()
        if self.words is not None:
            self.words.start()  # reload on SIGHUP and when a list file changes
        if self.primary:
            self.push.start()
            self.erasures.start()
        if self.hooks is not None:  # before_send is called by every worker; delivery by one
            self.hooks.start(self.store, deliver=self.primary)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_seen_forever())
        log.info("node %d started, store %s", self.ids.node_id, redact_url(self.settings.store))

    def fence(self, reason: str) -> None:
        """Stop being a node until :meth:`unfence`: ids would no longer be unique, so every
        connection is closed with 1001 (its client moves to another node) and new ones are
        refused (``unavailable``). Readiness and liveness answer 503 meanwhile."""
        if self.fenced is not None:
            return
        self.fenced = reason
        self.metrics.fenced.set(1)
        self.metrics.fences.inc()
        conns = list(self.hub.connections())
        log.error(
            "fenced: %s; closing %d connections, refusing new ones until a fresh node id is leased", reason, len(conns)
        )
        for conn in conns:
            conn.close(CLOSE_GOING_AWAY, "node fenced: reconnect to another node")

    def unfence(self) -> None:
        if self.fenced is None:
            return
        self.fenced = None
        self.metrics.fenced.set(0)
        log.warning("ready: node %d serves again", self.ids.node_id)

    def forget_sessions(self, session_ids: list[str] | None = None) -> None:
        """Drop cached sessions (``None``: all), e.g. revoked on another node."""
        self.accounts.forget_cached(session_ids)

    def forget_rosters(self, conv_id: int | None = None) -> None:
        """Drop cached rosters (``None``: all), e.g. changed on another node."""
        self.rosters.forget(conv_id)

    def fail(self, reason: str) -> None:
        """The node cannot serve again: the server stops and the process exits non-zero."""
        log.critical("exiting: %s", reason)
        self.failed_reason = reason
        self.failed.set()

    async def readiness(self) -> dict[str, str]:
        """What keeps this node from taking users now: ``{"node"|"store"|"redis": problem}``,
        empty when ready. The node's own state is read every time; the store and Redis are
        asked one cheap question at most once per READY_PROBE_CACHE_S, whoever asks and
        however often (the endpoint needs no credentials)."""
        problems: dict[str, str] = {}
        if self.stopping:
            problems["node"] = "stopping"
        elif self.fenced is not None:
            problems["node"] = f"fenced: {self.fenced}"
        loop = asyncio.get_running_loop()
        if self._probed is None or loop.time() - self._probed[0] >= READY_PROBE_CACHE_S:
            if self._probing is None or self._probing.done():
                self._probing = loop.create_task(self._probe_dependencies())
            self._probed = (loop.time(), await asyncio.shield(self._probing))
        return {**problems, **self._probed[1]}

    async def _probe_dependencies(self) -> dict[str, str]:
        problems: dict[str, str] = {}

        async def check(name: str, probe: Awaitable[object]) -> None:
            try:
                async with asyncio.timeout(READY_PROBE_TIMEOUT_S):
                    await probe
            except TimeoutError:
                problems[name] = f"no answer within {READY_PROBE_TIMEOUT_S} s"
            except Exception as exc:
                problems[name] = f"{type(exc).__name__}: {exc}"[:200]

        # inbox_head of no user: one index lookup, the cheapest read every store has
        # A worker's store and bus are its channel to the store process: both answer only
        # while it is up.
        bus = "redis" if self.worker is None else "store process"
        await asyncio.gather(check("store", self.store.inbox_head(0)), check(bus, self.bus.ping()))
        return problems

    async def stop(self) -> None:
        """Graceful stop: refuse new work, close connections with 1001, flush, close store."""
        self.stopping = True
        for conn in list(self.hub.connections()):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.hub.stop()
        if self.words is not None:
            await self.words.stop()
        await self.push.stop()
        await self.erasures.stop()
        if self.hooks is not None:
            await self.hooks.stop()
        await self.presence.stop()
        await self.flush_seen()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.bus.stop()
        await self.read_ahead.close()
        await self.store.close()
        await self.media.close()
        while self._folder_locks:  # last: a folder is free once nothing writes to it
            os.close(self._folder_locks.pop())

    async def flush_seen(self) -> None:
        seen, self.hub.seen = self.hub.seen, {}
        if seen:
            await self.store.touch_devices([(uid, did, ts, acked) for (uid, did), (ts, acked) in seen.items()])

    async def _flush_seen_forever(self) -> None:
        # What was last written per connection is kept on it (Connection.seen_ms/seen_seq,
        # two slots, not a table entry of ~150 bytes each): an idle device's row is rewritten
        # only every _SEEN_COARSE_MS, not every turn — at 100,000 connections every turn would
        # be 20,000 row updates a second for nothing.
        while True:
            await asyncio.sleep(_SEEN_FLUSH_S)
            now = int(time.time() * 1000)
            for conn in self.hub.connections():
                if conn.seen_seq != conn.acked_seq or now - conn.seen_ms >= _SEEN_COARSE_MS:
                    self.hub.mark_seen(conn)
                    conn.seen_ms, conn.seen_seq = now, conn.acked_seq
            try:
                await self.flush_seen()
            except YimError as exc:  # the store is away (its own log line says so): advisory data
                log.info("device last-seen times not flushed: %s", exc.message)
            except Exception:  # best effort: last-seen times are advisory
                log.exception("flushing device last-seen times failed")


class NodeServer:
    """A node served on host:port. ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        settings: Settings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        worker: WorkerRole | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.node = Node(settings, worker, clock)
        self.app = build_app(self.node)
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        await self.node.start()
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=5.0,
            # also the deadline for a new connection's first complete request (slowloris)
            keepalive_timeout=self.settings.http_idle_timeout_s,
            # a request line fits the longest query the API takes (a 1,024-character media
            # name, percent-encoded); headers keep aiohttp's limits (8 KiB each, 128 of them)
            max_line_size=16 * 1024,
            # No SO_KEEPALIVE: a setsockopt per connect for probes after 2 h of silence, when
            # the idle sweep closes a silent WebSocket after idle_timeout_s and the deadline
            # above a silent HTTP connection.
            tcp_keepalive=False,
        )
        await self._runner.setup()
        install_connection_guard(self._runner.server, self.node.limits)
        throttle_logger("aiohttp.server")  # it logs every malformed request with a traceback
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.node.worker is not None:
            # The workers of one node each listen on the port the store process reserved
            # (yim/supervisor.py); the kernel spreads new connections over them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.settings.host, self.settings.port))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        # SockSite listens again on the socket: without backlog it would shrink to 128 and
        # drop connections in a reconnect storm.
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl, backlog=4096)
        await site.start()
        if self.node.worker is not None:  # the store process says it once, for all workers
            _serve_log.debug("worker %d serving on %s", self.node.worker.index, self.url)
            return
        _serve_log.info("serving on %s (WebSocket %s/ws)", self.url, self.url.replace("http", "ws", 1))

    async def stop(self) -> None:
        """Stop accepting, close every connection with 1001 after flushing, drain the store."""
        self.node.stopping = True
        for conn in list(self.node.hub.connections()):
            conn.close(1001, "server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        await self.node.stop()


async def serve_forever(settings: Settings, ssl_context: ssl.SSLContext | None = None) -> None:
    server = NodeServer(settings, ssl_context=ssl_context)
    await server.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"yim node {server.node.ids.node_id} listening on {server.url}  (data: {settings.data_dir})", flush=True)
    failed = loop.create_task(server.node.failed.wait())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    _serve_log.info("shutting down")
    await server.stop()
    if server.node.failed.is_set():
        raise SystemExit(EXIT_FAILED)
