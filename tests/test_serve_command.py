"""``yim serve`` that cannot start says why in one line (exit status 2), never with a
traceback: settings that do not fit together, a port in use, a missing certificate."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, free_port


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "yim", "serve", "--data", str(tmp_path / "data"), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--store", "mysql://db/yim"], "yim serve: cannot start: unsupported store 'mysql://db/yim'"),
        (["--redis", "redis://127.0.0.1:1/0"], "yim serve: cannot start: cluster mode (redis_url) needs"),
        (
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            "yim serve: cannot use the TLS certificate /nonexistent/cert.pem and key /nonexistent/key.pem",
        ),
    ],
)
def test_a_node_that_cannot_start_says_why_in_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    done = _serve(tmp_path, "--port", str(free_port()), *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_port_in_use_is_said_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _serve(tmp_path, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2, done.stderr
    said = done.stderr
    assert "yim serve: cannot start:" in said and "in use" in said and "Traceback" not in said, said
