"""What a bench run drives: a node it starts itself (``yim serve`` or the bare relay, as a
subprocess on a free loopback port with a temporary data folder) or one given by ``--url``;
and the psutil probe that watches that server process's memory and CPU."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import psutil

#: Environment of a node the bench starts. Accounts are set up with the cheapest argon2
#: profile (set-up is not what is measured), and per-user rate limits are off: a benchmark
#: measures the server, not the abuse limits.
NODE_ENV = {
    "YIM_PASSWORD_HASHING": "cheapest",
    "YIM_RATE_SEND_PER_USER_S": "0",
    "YIM_RATE_REQUESTS_PER_USER_S": "0",
}


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> tuple[str, int]:
    """The bench only ever drives loopback targets: return (host, port) or raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise ValueError(f"--url must be http://127.x.y.z:PORT, not {url!r}")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError
    except ValueError:
        raise ValueError(f"--url must be a loopback address (127.0.0.0/8), not {parts.hostname!r}") from None
    return host, parts.port or 80


def find_listener_pid(host: str, port: int) -> int | None:
    """Best effort: the pid of the process listening on host:port (None if not visible)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            if c.laddr.ip in (host, "0.0.0.0", "::"):
                return c.pid
    return None


#: The node's counters of rows it has written: one ``messages`` row per stored message,
#: one ``inbox`` row per member under write fan-out (yim/metrics.py).
STORE_COUNTERS = ("yim_messages_in_total", "yim_deliveries_total")


def store_counters(url: str, timeout: float = 5.0) -> dict[str, float]:
    """The node's store-write counters from its Prometheus ``/metrics`` page."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in STORE_COUNTERS:
            found[name] = float(value)
    missing = set(STORE_COUNTERS) - found.keys()
    if missing:
        raise RuntimeError(f"{url}/metrics lacks {sorted(missing)}")
    return found


@dataclass
class Target:
    """A server under test: its base URL, the pid to watch (if known), and what it is."""

    url: str
    system: str  # "yim", "yim-wN" (yim serve --workers N) or "relay"
    pid: int | None
    notes: dict[str, object] = field(default_factory=dict)
    #: every node's base URL (a cluster has several; ``url`` is the first)
    urls: list[str] = field(default_factory=list)
    #: the processes whose CPU a run reports, by role ("node", "postgres", "redis"): root
    #: pids, their descendants included
    groups: dict[str, list[int]] = field(default_factory=dict)
    #: the cluster stack the bench started (yimbench/stack.py), if any
    stack: Any = None

    def __post_init__(self) -> None:
        if not self.urls:
            self.urls = [self.url]
        if not self.groups and self.pid:
            self.groups = {"node": [self.pid]}


def workers_of(system: str) -> int:
    """The worker processes of a system's node: ``yim-w2`` is ``yim serve --workers 2``."""
    return int(system.removeprefix("yim-w")) if system.startswith("yim-w") else 1


def is_yim(system: str) -> bool:
    return system == "yim" or system.startswith("yim-w")


class LocalServer:
    """``yim serve`` (or the relay) in a subprocess on a free port; stopped by its own pid."""

    def __init__(self, system: str, *, startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.system = system
        self.extra_env = env or {}
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix=f"yim-bench-{system}-"))
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.system == "relay":
            return [sys.executable, "-m", "yimbench.relay", "--host", "127.0.0.1", "--port", str(self.port)]
        data = str(self.tmp / "data")
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--data", data]
        serve += ["--workers", str(workers_of(self.system))]  # named always: `yim serve` defaults to auto
        return [sys.executable, "-m", "yim", "--log-level", "WARNING", *serve]

    def __enter__(self) -> Target:
        raise_fd_limit()
        env = {**os.environ, **NODE_ENV, **self.extra_env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{self.system} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{self.system} did not answer /healthz within {self.startup_timeout}s")
            time.sleep(0.05)
        notes: dict[str, object] = {"started_by_bench": True}
        if is_yim(self.system):
            notes["workers"] = workers_of(self.system)
            notes["password_hashing"] = NODE_ENV["YIM_PASSWORD_HASHING"]
            notes["rate_limits"] = "per-user limits off"
            notes["store"] = "sqlite (temporary data folder)"
            notes.update({k.removeprefix("YIM_").lower(): v for k, v in self.extra_env.items()})
            if "YIM_SEARCH_INDEXER" in os.environ:  # set for the node by whoever ran the bench
                notes["search_indexer"] = os.environ["YIM_SEARCH_INDEXER"]
        return Target(url=url, system=self.system, pid=self.proc.pid, notes=notes)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Snapshot:
    """CPU seconds and memory at one instant of a run."""

    t: float  # time.monotonic()
    server_cpu: float | None = None  # user+system seconds of the server process and its children
    server_procs: dict[str, float] = field(default_factory=dict)  # process label -> CPU seconds (see proc_label)
    server_loop_cpu: float | None = None  # ... of its main thread (the event loop)
    server_rss: int | None = None
    server_threads: dict[int, float] = field(default_factory=dict)  # thread id -> CPU seconds
    client_cpu: float = 0.0  # user+system seconds of all load-generator processes
    groups_cpu: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds of its processes
    machine_cpu: float = 0.0  # busy seconds of all CPUs (whoever used them)


class Probe:
    """Snapshots of the server and the load generator, plus a sampler for peak server RSS."""

    def __init__(
        self,
        server_pid: int | None,
        client_pids: list[int],
        interval: float = 0.1,
        groups: dict[str, list[int]] | None = None,
    ) -> None:
        self.server = psutil.Process(server_pid) if server_pid else None
        self.groups = {role: [psutil.Process(pid) for pid in pids] for role, pids in (groups or {}).items()}
        self.clients = [psutil.Process(pid) for pid in client_pids]
        self.clients.append(psutil.Process())  # the coordinating process counts as load generator too
        self.peak_rss = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._rss()
            if rss is not None and rss > self.peak_rss:
                self.peak_rss = rss

    def _rss(self) -> int | None:
        if self.server is None:
            return None
        try:
            rss = self.server.memory_info().rss
        except psutil.Error:
            return None
        for child in self.server.children(recursive=True):  # the workers of --workers N
            with contextlib.suppress(psutil.Error):
                rss += child.memory_info().rss
        return rss

    def snapshot(self) -> Snapshot:
        snap = Snapshot(t=time.monotonic())
        if self.server is not None:
            try:
                with self.server.oneshot():
                    ct = self.server.cpu_times()
                    # The node's child processes, if any, work for it: their CPU
                    # is part of the server's cost per message. Ones already reaped count too.
                    snap.server_procs["node"] = ct.user + ct.system
                    reaped = ct.children_user + ct.children_system
                    if reaped:
                        snap.server_procs["exited children"] = reaped
                    snap.server_rss = self.server.memory_info().rss
                    for th in self.server.threads():
                        snap.server_threads[th.id] = th.user_time + th.system_time
                    snap.server_loop_cpu = snap.server_threads.get(self.server.pid)
                for child in self.server.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        c = child.cpu_times()
                        # a node's memory is its processes' together (--workers N)
                        snap.server_rss = (snap.server_rss or 0) + child.memory_info().rss
                        label = proc_label(child)
                        snap.server_procs[label] = snap.server_procs.get(label, 0.0) + c.user + c.system
                snap.server_cpu = sum(snap.server_procs.values())
            except psutil.Error:
                pass
            if snap.server_rss is not None and snap.server_rss > self.peak_rss:
                self.peak_rss = snap.server_rss
        ct = psutil.cpu_times()
        snap.machine_cpu = sum(ct) - ct.idle - getattr(ct, "iowait", 0.0)
        for proc in self.clients:
            try:
                ct = proc.cpu_times()
                snap.client_cpu += ct.user + ct.system
            except psutil.Error:
                continue
        for role, procs in self.groups.items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += tree_cpu_s(proc)
            snap.groups_cpu[role] = total
        return snap


#: labels of the server's child processes by the module they run (``python -m MODULE``)
PROC_LABELS = {
    "yim.supervisor": "workers",  # the worker processes of yim serve --workers N
    "yim.storage.sqlite.indexer_process": "indexer",  # the SQLite search indexer (search_indexer)
}


def proc_label(proc: psutil.Process) -> str:
    """A server child's name in the per-process figures: ``workers`` for the worker processes
    of ``yim serve --workers N`` (whose own process, ``node``, is then the store process),
    ``indexer`` for the search indexer process, else the module it runs (``python -m
    pkg.worker`` is ``worker``), else its process name."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "child"
    if "-m" in cmd[:-1]:
        module = cmd[cmd.index("-m") + 1]
        return PROC_LABELS.get(module, module.rsplit(".", 1)[-1])
    return proc.name() or "child"


def tree_cpu_s(root: psutil.Process) -> float:
    """User + system CPU seconds of a process, its live descendants, and the children it
    has already reaped (a PostgreSQL backend that exited still counts, via the postmaster)."""
    ct = root.cpu_times()
    total = ct.user + ct.system + ct.children_user + ct.children_system
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total
