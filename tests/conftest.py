"""Shared fixtures: real nodes on free loopback ports, each with its own data folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    return {"uvloop": uvloop.new_event_loop}


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
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
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
