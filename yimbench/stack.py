"""The cluster a bench run starts for itself: a throwaway PostgreSQL 15, one redis-server
and N ``yim serve`` nodes in cluster mode, all on loopback, all in one temporary folder,
and all stopped at the end by their own pids (PostgreSQL by ``pg_ctl`` on its data
folder, which signals the postmaster's pid).

PostgreSQL runs as an operator runs it: ``fsync`` and ``synchronous_commit`` on (the
defaults), so every group commit waits for its WAL flush. initdb refuses root, so as root
PostgreSQL runs as the ``postgres`` user. The nodes lease their node ids from Redis
(``--node-id auto``) and migrate the schema on start (under an advisory lock).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from yimbench.target import NODE_ENV, Target, free_port, raise_fd_limit

PG_BIN = Path(os.environ.get("YIM_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("YIM_REDIS_SERVER", "/usr/bin/redis-server")

#: What each node may hold: its pool (``pg_pool_max``, default 10) + the writer; headroom
#: for the bench's own statistics connection.
_PG_CONNECTIONS_PER_NODE = 12


def _need(path: str | Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} not found: the cluster bench needs the Debian package `{package}`")


def _wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes], what: str) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} in time")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class ClusterStack:
    """PostgreSQL + Redis + ``nodes`` yim nodes; a context manager yielding the Target.

    ``pg_stat_statements`` preloads that extension so a run can report where
    PostgreSQL's time goes (see :meth:`statements`)."""

    def __init__(
        self,
        nodes: int,
        *,
        env: dict[str, str] | None = None,
        pg_stat_statements: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            _need(PG_BIN / tool, "postgresql-15")
        _need(REDIS_SERVER, "redis-server")
        self.n = nodes
        self.extra_env = env or {}
        self.pg_stat_statements = pg_stat_statements
        self.startup_timeout = startup_timeout
        self.base = Path(tempfile.mkdtemp(prefix="yim-bench-cluster-"))
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.ports = [free_port() for _ in range(nodes)]
        self._as: dict[str, Any] = {"cwd": self.base}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._as.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.pg_running = False
        self.redis: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _pg(self, *args: str) -> None:
        out = subprocess.run(args, capture_output=True, check=False, timeout=120, **self._as)
        if out.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({out.returncode}): {out.stderr.decode()[-2000:]}")

    def _start_postgres(self) -> int:
        data = self.base / "pg"
        # -N: initdb's own files need no fsync (a throwaway cluster); the server below runs
        # with fsync and synchronous_commit on.
        self._pg(
            str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "-N",
        )  # fmt: skip
        opts = (
            f"-h 127.0.0.1 -p {self.pg_port} -k {self.base} -c fsync=on -c synchronous_commit=on"
            f" -c max_connections={self.n * _PG_CONNECTIONS_PER_NODE + 10}"
        )
        if self.pg_stat_statements:
            opts += " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
        self._pg(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.base / "pg.log"), "-w", "-t", "30",
            "-o", opts, "start",
        )  # fmt: skip
        self.pg_running = True
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])

    def _start_redis(self, deadline: float) -> int:
        rdir = self.base / "redis"
        rdir.mkdir()
        args = [
            REDIS_SERVER, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(rdir), "--daemonize", "no", "--logfile", str(rdir / "log"),
        ]  # fmt: skip
        self.redis = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.redis_port, deadline, self.redis, "redis-server")
        return self.redis.pid

    def _node_command(self, i: int) -> list[str]:
        serve = [
            "serve", "--host", "127.0.0.1", "--port", str(self.ports[i]), "--data", str(self.base / f"node{i}"),
            "--store", self.dsn, "--redis", self.redis_url, "--node-id", "auto",
        ]  # fmt: skip
        return [sys.executable, "-m", "yim", "--log-level", "WARNING", *serve]

    def _wait_healthy(self, i: int, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.ports[i]}/healthz"
        while True:
            if self.nodes[i].poll() is not None:
                raise RuntimeError(f"node {i} exited with {self.nodes[i].returncode}: {self.log_tail(i)}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i} did not answer /healthz in time: {self.log_tail(i)}")
            time.sleep(0.05)

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            return "\n".join((self.base / f"node{i}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Target:
        raise_fd_limit()
        deadline = time.monotonic() + self.startup_timeout
        try:
            postmaster = self._start_postgres()
            if self.pg_stat_statements:
                self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            redis_pid = self._start_redis(deadline)
            env = {**os.environ, **NODE_ENV, **self.extra_env}
            for i in range(self.n):
                (self.base / f"node{i}").mkdir()
                with open(self.base / f"node{i}.log", "wb") as log:
                    proc = subprocess.Popen(self._node_command(i), env=env, stdout=log, stderr=subprocess.STDOUT)
                self.nodes.append(proc)
            for i in range(self.n):
                self._wait_healthy(i, deadline)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        notes: dict[str, object] = {
            "started_by_bench": True,
            "password_hashing": NODE_ENV["YIM_PASSWORD_HASHING"],
            "rate_limits": "per-user limits off",
            "store": "postgres (fsync on, synchronous_commit on) + redis",
            "nodes": self.n,
        }
        notes.update({k.removeprefix("YIM_").lower(): v for k, v in self.extra_env.items()})
        return Target(
            url=urls[0],
            system="yim",
            pid=self.nodes[0].pid,
            notes=notes,
            urls=urls,
            groups={"node": [p.pid for p in self.nodes], "postgres": [postmaster], "redis": [redis_pid]},
            stack=self,
        )

    def log_counts(self) -> dict[str, int]:
        """``deadlock detected`` lines in PostgreSQL's log, and ERROR / CRITICAL / traceback
        lines in the nodes' logs, so far (every one is worth a look; none is expected)."""
        pg = _read(self.base / "pg.log")
        nodes = "".join(_read(self.base / f"node{i}.log") for i in range(self.n))
        return {
            "pg_deadlocks": pg.count("deadlock detected"),
            "node_log_errors": sum(
                1 for line in nodes.splitlines() if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
            ),
        }

    def sql(self, statement: str) -> str:
        """Run one statement with psql (the stack's own tool, not the nodes' pool);
        returns its unaligned output."""
        out = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", "postgres",
             "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", statement],
            capture_output=True, check=False, timeout=60, **self._as,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.decode()[-1000:]}")
        return out.stdout.decode()

    def reset_statements(self) -> None:
        self.sql("SELECT pg_stat_statements_reset()")

    def statements(self, top: int = 12) -> list[dict[str, Any]]:
        """The statements that took most of PostgreSQL's time since the last reset."""
        rows = self.sql(
            "SELECT calls, round(total_exec_time::numeric, 1), rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
            " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
            f" ORDER BY total_exec_time DESC LIMIT {int(top)}"
        )
        out = []
        for line in rows.splitlines():
            calls, ms, nrows, query = line.split("\t", 3)
            out.append({"calls": int(calls), "total_ms": float(ms), "rows": int(nrows), "query": query})
        return out

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.nodes:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    proc.terminate()
        for proc in self.nodes:
            _stop(proc)
        _stop(self.redis)
        if self.pg_running:
            self.pg_running = False
            with contextlib.suppress(Exception):
                self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.base / "pg"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)
