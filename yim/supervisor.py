"""``yim serve --workers N``: one node on every core (docs/architecture.md, "Workers").

The ``yim serve`` process becomes the node's *store process*: it prepares and locks the data
folder, opens the SQLite store (its writer thread, readers and indexer) and makes the
signing key, exactly as a one-process node does, then runs no gateway of its own. It serves
the store (:class:`yim.storage.remote.StoreServer`) and the hub of the workers' shared state
(:class:`yim.bus.workers.WorkerHub`) to N *worker* processes, each a :class:`yim.node.Node`
in worker mode with its own event loop, listening on the same port (``SO_REUSEPORT``: the
kernel spreads new connections over the workers).

Each worker talks to the store process over one channel (yim/ipc/channel.py), a Unix
socketpair whose worker end it inherits. The ops are namespaced: ``store.*`` go to the
StoreServer, ``hub.*`` to the WorkerHub, ``supervisor.*`` to this module (a worker says it
accepts connections), and ``worker.*`` go the other way, to the worker's WorkerBus.

Life of the workers:

- start: the store process reserves the port (a socket bound with ``SO_REUSEPORT`` that
  never listens, so ``port = 0`` picks one for all), spawns the workers (``python -m
  yim.supervisor CHANNEL_FD SPEC_FD``: the settings travel as JSON in an inherited memfd,
  never in argv) and prints the "listening on" line once every worker accepts.
- a worker that dies is spawned again after a back-off (doubling from RESTART_MIN_S to
  RESTART_MAX_S; a worker that lived RESTART_RESET_S starts the count again), with one log
  line per restart. Its clients reconnect (to the other workers meanwhile) and catch up by
  sync: everything ACKed is in the store, which the dead worker never held.
- SIGTERM / SIGINT: every worker gets SIGTERM and stops as a node does (connections closed
  with 1001 after their queued frames, last-seen times flushed); then the store drains and
  closes. SIGHUP is forwarded (the workers reload their word lists).
- the store process killed (SIGKILL): each worker was started with ``PR_SET_PDEATHSIG`` and
  dies with it, so no worker serves without its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from yim.config import Settings
from yim.gateway.app import tune_gc
from yim.ipc.channel import Channel, connect
from yim.node import (
    EXIT_FAILED,
    NodeServer,
    WorkerRole,
    lock_store_folders,
    push_providers,
    signing_key,
    store_of,
)
from yim.protocol.errors import YimError
from yim.services.media import empty_uploads_folder, uploads_folder
from yim.services.service import DefaultRouting
from yim.services.words import WordFilter
from yim.storage.service import ServiceCtx

log = logging.getLogger("yim.supervisor")

#: the first wait before a dead worker is spawned again; doubled per death, up to RESTART_MAX_S
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
#: a worker that lived this long died of something new: its back-off starts again
RESTART_RESET_S = 60.0
#: how long the workers have to start (open nothing heavy: the store is already open)
START_TIMEOUT_S = 60.0
#: how long a stopping worker may take before it is killed (its clients resync anyway)
STOP_TIMEOUT_S = 30.0

_PR_SET_PDEATHSIG = 1


class WorkerSpec(msgspec.Struct, frozen=True):
    """What a worker is started with (JSON in an inherited memfd: settings may hold secrets)."""

    index: int
    #: the store process: a worker whose parent is already another exits at once
    parent: int
    log_level: int
    settings: Settings


class _Slot:
    """One worker number: the process that holds it now, its channel, its restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.started = 0.0
        self.deaths = 0
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()


class StoreProcess:
    """The store process of ``yim serve --workers N``: see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.worker_count
        self.store = store_of(settings)
        # Imported here: only a node with workers loads them (and `--workers 1` never does).
        from yim.bus.workers_hub import WorkerHub
        from yim.storage.remote import StoreServer

        self.hub = WorkerHub(settings, may_be_agent=self.store.service.may_be_agent)
        self.server = StoreServer(self.store)
        self.slots = [_Slot(i) for i in range(self.count)]
        self.stopping = False
        self.port = settings.port
        self._reserved: socket.socket | None = None
        self._locks: list[int] = []
        self._loop = asyncio.get_running_loop()
        self._watch: dict[int, int] = {}  # worker index -> its pidfd, watched by the loop
        self._respawns: set[asyncio.Task[None]] = set()
        self._opened = False
        #: every worker accepted once: from now on a dead worker is started again
        self._serving = False

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_cert else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        self._locks = lock_store_folders(self.settings, self.store)
        if self.settings.push_enabled:  # bad push settings stop the start here, once, not per worker
            await push_providers(self.settings).close()
        # Word lists too: a list that cannot be loaded is said once, in the words of the
        # one-process node, not by every worker and then as "worker 0 exited". The workers
        # load their own filters (the store process keeps none).
        WordFilter.from_settings(self.settings)
        await self.store.open()
        self._opened = True
        await signing_key(self.settings.data_path, self.store)  # made here, read by every worker
        # Customer-service routing runs in the store's writer: "is this agent connected" is
        # answered by the hub, which knows every worker's connections.
        self.store.service.ctx = ServiceCtx(is_connected=self.hub.is_connected, policy=DefaultRouting())
        self._reserve_port()
        # Uploads a crash cut short, the one-process node's too: no worker writes there yet.
        await asyncio.to_thread(empty_uploads_folder, uploads_folder(self.settings))
        for slot in self.slots:
            await self._spawn(slot)
        # every worker accepts, or one dies first
        watch: list[asyncio.Future[Any]] = [asyncio.ensure_future(slot.exited.wait()) for slot in self.slots]
        watch.append(asyncio.ensure_future(asyncio.gather(*(slot.ready.wait() for slot in self.slots))))
        try:
            _, pending = await asyncio.wait(watch, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in watch:
                fut.cancel()
            # awaited once cancelled: a cancelled gather holds its CancelledError as an
            # exception, which asyncio would otherwise log with a traceback at collection
            await asyncio.gather(*watch, return_exceptions=True)
        if len(pending) == len(watch):
            raise OSError(f"the workers did not all accept within {START_TIMEOUT_S:.0f} s")
        dead = [slot for slot in self.slots if slot.exited.is_set()]
        if dead:  # a worker that cannot start (a TLS file it cannot read ...) will not on a retry
            code = dead[0].proc.returncode if dead[0].proc is not None else None
            raise OSError(f"worker {dead[0].index} exited with code {code} while starting (its log says why)")
        self._serving = True

    def _reserve_port(self) -> None:
        host = self.settings.host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        # Bound, never listening: the port is this node's (port 0 picks one) while the
        # workers come and go; only listening sockets get connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, self.settings.port))
        except OSError:
            sock.close()
            raise
        self._reserved = sock
        self.port = sock.getsockname()[1]

    async def _spawn(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        slot.ready.clear()
        slot.exited.clear()
        slot.channel = await connect(
            ours, on_call=self._call_handler(slot), on_cast=self._cast_handler(slot), name=f"worker {slot.index}"
        )
        self.hub.attach(slot.index, slot.channel)
        spec = WorkerSpec(
            index=slot.index,
            parent=os.getpid(),
            log_level=logging.getLogger().getEffectiveLevel(),
            settings=msgspec.structs.replace(self.settings, port=self.port),
        )
        try:
            slot.proc = _start_worker(theirs, msgspec.json.encode(spec))
        finally:
            theirs.close()
        slot.started = time.monotonic()
        pidfd = os.pidfd_open(slot.proc.pid)
        self._watch[slot.index] = pidfd
        self._loop.add_reader(pidfd, self._exited, slot)

    def _call_handler(self, slot: _Slot) -> Callable[[str, msgspec.Raw], Any]:
        from yim.storage.remote import ENTRY_OPS as entry_ops

        server, hub = self.server, self.hub

        def on_call(op: str, body: msgspec.Raw) -> Any:
            if op.startswith("store."):
                reply = server.handle(op, body, slot.channel)
                if op in entry_ops:  # its committed entries go to the workers of their recipients
                    return hub.entries_routed(slot.index, op, reply)
                return reply
            if op.startswith("hub."):
                return hub.on_call(slot.index, op, body)
            raise YimError("bad_request", f"no such op {op!r}")

        return on_call

    def _cast_handler(self, slot: _Slot) -> Callable[[str, msgspec.Raw], None]:
        server, hub = self.server, self.hub

        def on_cast(op: str, body: msgspec.Raw) -> None:
            if op.startswith("hub."):
                hub.on_cast(slot.index, op, body)
            elif op.startswith("store."):
                server.handle_cast(op, body)
            elif op == "supervisor.ready":
                slot.ready.set()
                if slot.deaths and slot.proc is not None:
                    log.info("worker %d (pid %d) serves again", slot.index, slot.proc.pid)
            else:
                log.warning("worker %d: unknown cast %r dropped", slot.index, op)

        return on_cast

    def _exited(self, slot: _Slot) -> None:
        pidfd = self._watch.pop(slot.index)
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        proc = slot.proc
        assert proc is not None
        code = proc.wait()
        if slot.channel is not None:
            slot.channel.close()  # the hub forgets the worker's routes and presence at once
        slot.exited.set()
        if self.stopping or not self._serving:
            return  # stopped on purpose, or the node is starting (start() fails and says why)
        lived = time.monotonic() - slot.started
        if lived >= RESTART_RESET_S:
            slot.deaths = 0
        wait = min(RESTART_MIN_S * 2**slot.deaths, RESTART_MAX_S)
        slot.deaths += 1
        log.warning(
            "worker %d (pid %d) exited with %s after %.1f s; starting it again in %.1f s",
            slot.index,
            proc.pid,
            _describe(code),
            lived,
            wait,
        )
        task = self._loop.create_task(self._respawn(slot, wait))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, slot: _Slot, wait: float) -> None:
        await asyncio.sleep(wait)
        if self.stopping:
            return
        try:
            await self._spawn(slot)
        except OSError:  # out of processes or memory: the next death or stop will tell
            log.exception("worker %d could not be started again", slot.index)

    def reload(self) -> None:
        """SIGHUP: each worker reloads what it reloads on SIGHUP (the word lists)."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        """Graceful stop: the workers close their connections (1001) and flush, then the
        store drains and closes, then the folder is free."""
        self.stopping = True
        for task in list(self._respawns):
            task.cancel()
        running = [s for s in self.slots if s.proc is not None and not s.exited.is_set()]
        for slot in running:
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
        if running:
            _, late = await asyncio.wait(
                [asyncio.ensure_future(s.exited.wait()) for s in running], timeout=STOP_TIMEOUT_S
            )
            for slot in running:
                if not slot.exited.is_set() and slot.proc is not None:
                    log.error("worker %d did not stop within %.0f s: killed", slot.index, STOP_TIMEOUT_S)
                    slot.proc.kill()
            for fut in late:
                fut.cancel()
        for index, pidfd in list(self._watch.items()):
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            del self._watch[index]
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.wait()
            if slot.channel is not None:
                slot.channel.close()
        await self.hub.stop()
        if self._reserved is not None:
            self._reserved.close()
        if self._opened:
            await self.store.close()
        while self._locks:  # last: the folder is free once nothing writes to it
            os.close(self._locks.pop())


def _start_worker(channel_end: socket.socket, spec: bytes) -> subprocess.Popen[bytes]:
    """Start a worker process with its end of the channel and its spec (fork + exec: a few
    milliseconds, so the loop does not wait for it in a thread). The spec travels in a memfd,
    not argv, where every user of the host could read its secrets."""
    spec_fd = os.memfd_create("yim-worker-spec", os.MFD_CLOEXEC)
    try:
        os.write(spec_fd, spec)
        return subprocess.Popen(
            [sys.executable, "-m", "yim.supervisor", str(channel_end.fileno()), str(spec_fd)],
            pass_fds=(channel_end.fileno(), spec_fd),
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(spec_fd)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


async def serve_workers(settings: Settings) -> None:
    """Run the store process of ``yim serve --workers N`` until SIGTERM or SIGINT."""
    node = StoreProcess(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    # Worker k issues ids as node node_id + k (yim.bus.workers.WorkerBus.make_ids).
    print(
        f"yim node {settings.node_id} listening on {node.url} with {node.count} workers  (data: {settings.data_dir})",
        flush=True,
    )
    await stop.wait()
    logging.getLogger("yim.gateway").info("shutting down")
    await node.stop()


# --- the worker process -------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the store process ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it ended before the line above: nobody would kill us later
        raise SystemExit(EXIT_FAILED)


def _store_gone(index: int) -> None:
    """The store process is gone (killed, crashed) while this worker serves: end now, as if
    killed with it (which the kernel is about to do: PR_SET_PDEATHSIG), before any call
    waiting on it is answered. A send in flight may have been committed before the store
    died; failing it with ``unavailable`` would tell its client it was not, and the client
    would not resend it. Cut off instead, the client reconnects and resends it with its
    ``client_msg_id``, which the restarted node stores or answers as a duplicate
    (docs/protocol.md §12.4). Nothing a graceful stop would do here can reach the store."""
    sys.stderr.write(f"yim: worker {index}: the store process is gone; ending at once\n")
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


async def _serve_worker(spec: WorkerSpec, channel_fd: int) -> int:
    settings = spec.settings
    role = WorkerRole(spec.index)
    sock = socket.socket(fileno=channel_fd)
    role.channel = await connect(sock, on_call=role.on_call, on_cast=role.on_cast, name="store process")
    role.channel.on_lost = functools.partial(_store_gone, spec.index)
    ssl_context = None
    if settings.tls_cert or settings.tls_key:
        from yim.gateway.tls import server_ssl_context

        ssl_context = server_ssl_context(settings.tls_cert, settings.tls_key)
    server = NodeServer(settings, ssl_context=ssl_context, worker=role)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await server.start()
    tune_gc()
    role.channel.cast("supervisor.ready", [spec.index, server.node.ids.node_id, os.getpid()])
    waits = {
        loop.create_task(stop.wait()),
        loop.create_task(role.channel.closed.wait()),
        loop.create_task(server.node.failed.wait()),
    }
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if role.channel.closed.is_set() and not stop.is_set():
        log.error("worker %d: the store process is gone; stopping", spec.index)
    await server.stop()
    return EXIT_FAILED if server.node.failed.is_set() else 0


def worker_main(argv: list[str]) -> int:
    """The entry point of a worker process: ``python -m yim.supervisor CHANNEL_FD SPEC_FD``."""
    channel_fd, spec_fd = int(argv[0]), int(argv[1])
    raw = bytearray()
    while chunk := os.pread(spec_fd, 1 << 16, len(raw)):
        raw += chunk
    os.close(spec_fd)
    spec = msgspec.json.decode(raw, type=WorkerSpec)
    _die_with(spec.parent)
    # The store process stops the workers (SIGTERM) on Ctrl-C: a terminal's SIGINT, sent to
    # the whole process group, must not stop them behind its back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGHUP is forwarded to reload what reloads (the word lists install their handler); a
    # worker with nothing to reload must not die of it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s [worker {spec.index}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import uvloop

    try:
        return uvloop.run(_serve_worker(spec, channel_fd))
    except (ValueError, OSError) as exc:
        log.debug("worker start-up failed", exc_info=True)
        print(f"yim serve: worker {spec.index} cannot start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
