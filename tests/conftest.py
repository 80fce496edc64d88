"""Shared fixtures: real nodes on free loopback ports, each with its own data folder."""

from __future__ import annotations

import asyncio
import faulthandler
import io
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop

from yim.config import Settings, load_settings
from yim.node import NodeServer

ROOT = Path(__file__).resolve().parent.parent
# Throwaway PostgreSQL / Redis servers and the store-backend parameter (sqlite, postgres).
pytest_plugins = ["tests.services"]


#: The event loops tests run on, for the time limit below to reach from its timer thread.
LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop()
    LOOPS.add(loop)
    return loop


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    return {"uvloop": _new_loop}


#: Every test (set-up, call and tear-down) must end within this many seconds; the slowest
#: take ~20 s on two cores. ``YIM_TEST_TIME_LIMIT_S=0`` lifts it (e.g. for long stress runs).
TEST_TIME_LIMIT_S = float(os.environ.get("YIM_TEST_TIME_LIMIT_S", "240"))
#: after the limit, how long a cancelled test has to unwind before the run is ended
UNWIND_S = min(60.0, TEST_TIME_LIMIT_S)


class TimeLimit:
    """A hung test fails instead of stalling the run. At the limit, the stacks of the
    event loop's tasks are printed and the task the loop is running the test in (its
    set-up, call or tear-down) is cancelled: the test fails with a traceback that shows
    what it awaited, and the run goes on. If that cannot end it within ``UNWIND_S`` (the
    loop itself is blocked, or the test swallows the cancellation), every thread's stack
    is dumped and the process exits: the run fails, naming the test, instead of waiting
    forever."""

    def __init__(self, nodeid: str, limit_s: float) -> None:
        self.nodeid = nodeid
        self.limit_s = limit_s
        self._timer = threading.Timer(limit_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> TimeLimit:
        self._timer.start()
        faulthandler.dump_traceback_later(self.limit_s + UNWIND_S, exit=True, file=STDERR_FD)
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    def _expire(self) -> None:
        _say(f"\n{self.nodeid} is still running after {self.limit_s:.0f} s: cancelling it\n")
        for loop in list(LOOPS):
            if loop.is_running():
                loop.call_soon_threadsafe(self._cancel_test, loop)

    @staticmethod
    def _cancel_test(loop: asyncio.AbstractEventLoop) -> None:
        stacks = io.StringIO()
        for task in asyncio.all_tasks(loop):
            task.print_stack(limit=12, file=stacks)
        _say(stacks.getvalue())
        for task in asyncio.all_tasks(loop):
            # the task run_until_complete waits for: the test's own coroutine (or fixture's)
            callbacks = getattr(task, "_callbacks", None) or []
            if any("run_until_complete" in getattr(cb, "__qualname__", "") for cb, *_ in callbacks):
                task.cancel(f"the test ran past its time limit ({TEST_TIME_LIMIT_S:.0f} s)")


#: the terminal's stderr, taken before tests run: fd 2 is then captured per test, and what
#: a process writes there just before it exits would be lost with the capture
STDERR_FD = 2


def _say(text: str) -> None:
    """Write to the terminal, past the capture (the process may not live to report it)."""
    os.write(STDERR_FD, text.encode(errors="replace"))


def pytest_configure(config: pytest.Config) -> None:
    global STDERR_FD
    STDERR_FD = os.dup(sys.stderr.fileno())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if TEST_TIME_LIMIT_S <= 0:
        return (yield)
    with TimeLimit(item.nodeid, TEST_TIME_LIMIT_S):
        return (yield)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Print what the reliability and security tests counted (tests/report.py)."""
    from tests.report import LINES

    if LINES:
        terminalreporter.section("reliability and security counts")
        for line in LINES:
            terminalreporter.write_line(line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": str(data_dir),
        "password_hashing": "cheapest",
    }
    values.update(overrides)
    return load_settings(None, **values)


MakeServer = Callable[..., Awaitable[NodeServer]]


@pytest_asyncio.fixture
async def make_server(tmp_path: Path, store_url: str) -> AsyncIterator[MakeServer]:
    """Start in-process nodes: ``server = await make_server(idle_timeout_s=2)``. Runs once
    per store backend (``store_url``, from tests/services.py)."""
    servers: list[NodeServer] = []

    async def start(data_dir: Path | None = None, **overrides: Any) -> NodeServer:
        folder = data_dir or tmp_path / f"node{len(servers)}"
        server = NodeServer(test_settings(folder, **{"store": store_url, **overrides}))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest_asyncio.fixture
async def server(make_server: MakeServer) -> NodeServer:
    return await make_server()


class ServerProcess:
    """``yim serve`` in a subprocess, for tests that kill the process."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, "YIM_PASSWORD_HASHING": "cheapest", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "yim", "serve", "--port", str(self.port), "--data", str(self.data_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"yim serve exited with {self.proc.returncode}: {self.log_path.read_text()}")
            # the listening line, not an open port: with workers (the default of `yim serve`
            # on a machine of several cores) the port opens with the first worker
            with open(self.log_path, "rb") as out:
                out.seek(mark)
                if b"listening on" in out.read():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"yim serve did not listen within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def server_process(tmp_path: Path) -> Any:
    procs: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        p = ServerProcess(tmp_path / f"proc{len(procs)}", **env)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.stop()
