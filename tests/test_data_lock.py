"""One node per data folder: a second ``yim serve`` on a folder in use exits at once, in one
line naming the folder and the pid of the node that holds it (exit status 2); the lock dies
with its holder, however it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from .conftest import ROOT, ServerProcess, free_port


def _second(data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "yim", "serve", "--port", str(free_port()), "--data", str(data)]
    env = {**os.environ, "YIM_PASSWORD_HASHING": "cheapest", **env}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def _healthy(node: ServerProcess) -> bool:
    with urllib.request.urlopen(f"{node.url}/healthz", timeout=10) as r:
        return bool(r.status == 200)


def test_a_second_node_on_a_folder_in_use_exits_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data)
    first.start()
    try:
        assert first.proc is not None
        done = _second(data)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"yim serve: cannot start: data folder {data} is in use by another yim node (pid {first.proc.pid});"
            " one node per data folder"
        ], done.stderr
        assert "listening" not in done.stdout
        assert _healthy(first)  # the holder serves on, untouched
    finally:
        first.stop()
    # A node that stopped leaves the folder free for the next.
    again = ServerProcess(data)
    again.start()
    try:
        assert _healthy(again)
    finally:
        again.stop()


def test_a_killed_node_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data)
    first.start()
    first.kill()  # SIGKILL: no shutdown code runs, the kernel drops the lock
    assert (data / "yim.lock").exists()
    second = ServerProcess(data)
    second.start()
    try:
        assert _healthy(second)
        assert second.proc is not None and (data / "yim.lock").read_text().strip() == str(second.proc.pid)
    finally:
        second.stop()


def test_a_store_file_outside_the_data_folder_is_held_too(tmp_path: Path) -> None:
    """Two nodes with their own data folders on one ``sqlite:///PATH`` store would issue ids
    as the same node just the same."""
    shared = tmp_path / "shared"
    store = f"sqlite:///{shared / 'yim.db'}"
    first = ServerProcess(tmp_path / "one", YIM_STORE=store)
    first.start()
    try:
        assert first.proc is not None
        done = _second(tmp_path / "two", YIM_STORE=store)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"yim serve: cannot start: data folder {shared} is in use by another yim node (pid {first.proc.pid});"
            " one node per data folder"
        ], done.stderr
    finally:
        first.stop()
