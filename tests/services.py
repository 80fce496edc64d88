"""Throwaway PostgreSQL and Redis servers for the test suite (a pytest plugin module).

Each server starts ONCE per test session on a free loopback port, in a temporary folder,
and is stopped (and the folder removed) at the end. PostgreSQL isolates tests by
database: the schema is migrated once into a template and every test gets a fresh
``CREATE DATABASE tN TEMPLATE yim_template`` (~30 ms). A missing binary fails the run
with the Debian package to install: these tests never skip.

Also usable outside pytest (``python -m tests.services`` starts both and prints DSNs).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

PG_BIN = Path(os.environ.get("YIM_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("YIM_REDIS_SERVER", "/usr/bin/redis-server")
REDIS_CLI = os.environ.get("YIM_REDIS_CLI", "/usr/bin/redis-cli")
TEMPLATE_DB = "yim_template"


class MissingBinary(RuntimeError):
    pass


def _free_port(below: int = 65536) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def _require(path: str | Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        raise MissingBinary(f"{path} not found: install the Debian package `{package}` (apt-get install -y {package})")


_pristine: list[Path] = []


def _pristine_data_dir(run_as: dict[str, Any]) -> Path:
    """A data folder fresh from initdb, never started, made once per process and removed at
    its exit; every server's data folder is a copy of it (``cp -a`` keeps the owner)."""
    if not _pristine:
        base = Path(tempfile.mkdtemp(prefix="yim-pg-initdb-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        if "user" in run_as:
            os.chown(base, run_as["user"], run_as["group"])
        out = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "-N"],
            capture_output=True, check=False, timeout=60, **{**run_as, "cwd": base},
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
        _pristine.append(base / "data")
    return _pristine[0]


class PostgresServer:
    """A private PostgreSQL cluster: initdb + pg_ctl in a temp dir, as the ``postgres``
    user when running as root (initdb refuses root), fsync off (tests only)."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            _require(PG_BIN / tool, "postgresql")
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="yim-pg-"))
        self._as: dict[str, Any] = {"cwd": self.base}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._as.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.running = False

    def _run(self, *args: str) -> None:
        out = subprocess.run(args, capture_output=True, check=False, timeout=60, **self._as)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr.decode()[-2000:]}")

    def start(self) -> None:
        data = self.base / "data"
        # A copy of one initdb made per process (~0.1 s) instead of an initdb per server
        # (~1.3 s): the fault tests start a server of their own for each test.
        self._run("cp", "-a", str(_pristine_data_dir(self._as)), str(data))
        opts = (
            f"-h 127.0.0.1 -p {self.port} -k {self.base} -F -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB"
            # lock waits longer than deadlock_timeout are logged: the cluster tests read the log
            " -c log_lock_waits=on"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.log_path), "-w", "-t", "30",
            "-o", opts, "start",
        )  # fmt: skip
        self.running = True

    @property
    def log_path(self) -> Path:
        """The server log (stderr of the postmaster): errors, deadlocks, lock waits."""
        return self.base / "log"

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: open sessions are cut, the server is back on the same
        port with the same options, still logging to :attr:`log_path`."""
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-l", str(self.log_path), "-m", "fast",
            "-w", "-t", "30", "restart",
        )  # fmt: skip

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(Exception):
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


class RedisServer:
    """One redis-server on loopback, no persistence. ``kill()`` + ``start()`` restarts it
    empty on the same port (what a Redis crash looks like to the nodes)."""

    def __init__(self, port: int | None = None, *, cluster: bool = False, base: Path | None = None) -> None:
        _require(REDIS_SERVER, "redis-server")
        self._auto_port = port is None
        self.cluster = cluster
        self.port = port or self._pick_port()
        self.base = base or Path(tempfile.mkdtemp(prefix="yim-redis-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def _pick_port(self) -> int:
        """A free port; in cluster mode port + 10000 (the cluster bus) must be free too."""
        while True:
            port = _free_port(below=55536)
            if not self.cluster:
                return port
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port + 10000)) != 0:
                    return port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; a port taken by someone else between picking and binding (another
        process on this machine) costs a retry on a fresh port, not a failed run."""
        for attempt in range(5):
            try:
                self._start_once()
                return
            except RuntimeError:
                if not self._auto_port or attempt == 4:
                    raise
                self.port = self._pick_port()

    def _start_once(self) -> None:
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.base), "--daemonize", "no", "--logfile", str(self.base / "log"),
        ]  # fmt: skip
        if self.cluster:
            with contextlib.suppress(FileNotFoundError):
                (self.base / "nodes.conf").unlink()
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 10, self.proc, "redis-server")

    def restart(self) -> None:
        """Stop (SIGTERM; nothing is saved) and start again, empty, on the SAME port: what
        an operator's restart looks like to the nodes. The port is not given up for a new
        one, since the nodes only know this one."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self._start_once()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class RedisClusterServers:
    """A 3-master Redis Cluster (no replicas) on loopback."""

    def __init__(self, masters: int = 3) -> None:
        _require(REDIS_CLI, "redis-server")
        self.base = Path(tempfile.mkdtemp(prefix="yim-rcluster-"))
        self.nodes = [RedisServer(cluster=True, base=self.base / f"n{i}") for i in range(masters)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        out = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout.decode()[-2000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    [REDIS_CLI, "-p", str(n.port), "cluster", "info"], capture_output=True, timeout=10, check=False
                ).stdout
                for n in self.nodes
            ]
            if all(b"cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok within 30 s")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --- the backend parameter ---------------------------------------------------------------------

BACKENDS = ("sqlite", "postgres")
#: Tests that run on SQLite only, each with the reason: every entry is a gap of the
#: PostgreSQL store, listed here (not skipped) so that it stays visible. Keys are a test
#: file ("tests/test_x.py") or one test ("tests/test_x.py::test_name").
SQLITE_ONLY: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run this test only on these store backends (default: all of BACKENDS)"
    )


def _backends_for(metafunc: pytest.Metafunc) -> list[str]:
    marker = metafunc.definition.get_closest_marker("backends")
    chosen = list(marker.args) if marker else list(BACKENDS)
    path = Path(metafunc.definition.path).relative_to(Path(__file__).resolve().parent.parent).as_posix()
    if path in SQLITE_ONLY or f"{path}::{metafunc.definition.originalname}" in SQLITE_ONLY:
        chosen = [b for b in chosen if b == "sqlite"]
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that starts a node (through ``store_url``) runs once per store backend:
    ``test_x[sqlite]`` and ``test_x[postgres]``."""
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends_for(metafunc))


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The ``store`` setting for this test's nodes: ``sqlite`` (under each node's data
    folder) or a fresh PostgreSQL database shared by all nodes of the test."""
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgres":
        return request.getfixturevalue("postgres_dsn")
    raise ValueError(f"unknown backend {backend!r}")


# --- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session")
async def postgres_admin(postgres_server: PostgresServer) -> AsyncIterator[Any]:
    """A connection to the ``postgres`` database, with the migrated template created."""
    import asyncpg

    from yim.storage.postgres.store import migrate

    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        await migrate(postgres_server.dsn(TEMPLATE_DB))
        yield conn
    finally:
        await conn.close()


_db_numbers = itertools.count(1)


@pytest_asyncio.fixture
async def postgres_dsn(postgres_server: PostgresServer, postgres_admin: Any) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t{next(_db_numbers)}"
    await postgres_admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield postgres_server.dsn(name)
    await postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    try:
        cluster = RedisClusterServers()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":  # manual use: start both, print where, stop on Ctrl-C
    pg, rd = PostgresServer(), RedisServer()
    pg.start()
    rd.start()
    print(pg.dsn(), rd.url, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        rd.remove()
        pg.stop()
