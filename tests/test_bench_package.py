"""The benchmark lives beside the product (the ``yimbench`` package, its psutil in the
``bench`` extra): ``yim`` and a running node import nothing of either, and ``yim bench``
without the extra says so in one line.

Absence is made real in the child process the standard way: a ``None`` entry in
``sys.modules`` makes any ``import`` of that name fail, exactly as if it were not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import ROOT, free_port
from .rawclient import Device, make_users

#: top-level names that belong to the benchmark and its extra, never to the server
BENCH_ONLY = ("yimbench", "psutil")

#: Runs ``yim`` (yim.cli.main) with ARGV, the modules named in BLOCK made impossible to
#: import; on the way out, whatever the exit, writes the exit status and the loaded modules
#: of BENCH_ONLY to the file REPORT.
_CHILD = """
import atexit, json, sys
argv, block, report, bench_only = json.loads(sys.argv[1])
for name in block:
    sys.modules[name] = None
status = []

def write():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in bench_only and sys.modules[m] is not None)
    with open(report, "w") as f:
        json.dump({"status": status[0] if status else None, "loaded": loaded}, f)

atexit.register(write)
import yim.cli
try:
    status.append(yim.cli.main(argv))
except SystemExit as exc:
    status.append(exc.code)
sys.exit(status[0])
"""


def _start(tmp_path: Path, argv: list[str], *, block: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], Path]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {**os.environ, "YIM_PASSWORD_HASHING": "cheapest"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps([argv, block, str(report), BENCH_ONLY])],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, report


def _run(
    tmp_path: Path, argv: list[str], *, block: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc, report = _start(tmp_path, argv, block=block)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, json.loads(report.read_text())


def test_the_cli_parser_and_serve_help_load_no_benchmark(tmp_path: Path) -> None:
    for argv in (["--help"], ["serve", "--help"]):
        done, seen = _run(tmp_path, argv, block=())
        assert done.returncode == 0, done.stderr
        assert seen == {"status": 0, "loaded": []}, (argv, seen)
    done, _ = _run(tmp_path, ["--help"], block=())
    assert "bench" in done.stdout  # listed, though not loaded


def test_a_node_serves_with_the_benchmark_not_installed(tmp_path: Path) -> None:
    """A real node, with yimbench and psutil impossible to import, starts, registers two
    users, carries a message between them and stops cleanly on SIGTERM."""
    port = free_port()
    proc, report = _start(tmp_path, ["serve", "--port", str(port), "--data", str(tmp_path / "data")], block=BENCH_ONLY)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        assert proc.poll() is None, proc.communicate(timeout=10)[1]

        async def converse() -> None:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                for path in ("/healthz", "/readyz", "/metrics", "/"):
                    async with http.get(path) as r:
                        assert r.status == 200, (path, r.status)
                alice_l, bob_l = await make_users(http, ["alice", "bob"])
                alice, bob = Device(http, alice_l), Device(http, bob_l)
                await alice.connect()
                await bob.connect()
                await alice.request("send", to=bob.user_id, kind="text", body={"text": "hi"}, client_msg_id="m1")
                deadline = time.monotonic() + 10
                while not bob.events and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert [e["data"]["body"] for e in bob.events] == [{"text": "hi"}], bob.events
                await alice.close()
                await bob.close()

        asyncio.run(converse())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(report.read_text()) == {"status": 0, "loaded": []}


@pytest.mark.parametrize("missing", ["psutil", "yimbench"])
def test_bench_without_the_extra_says_so_in_one_line(tmp_path: Path, missing: str) -> None:
    """psutil missing: installed without the extra; yimbench missing: an install older than
    the package (an editable install maps only the packages it knew of)."""
    done, seen = _run(tmp_path, ["bench", "pairs", "--pairs", "1"], block=(missing,))
    assert done.returncode == 2 and seen["status"] == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("yim bench: needs the 'bench' extra ("), lines[0]
    assert missing in lines[0] and "pip install 'yim[bench]'" in lines[0], lines[0]


def test_bench_with_the_extra_keeps_its_command_line(tmp_path: Path) -> None:
    """In this venv (which has the extra) ``yim bench`` is the real command: its scenarios,
    its options, and its own argument errors."""
    done, seen = _run(tmp_path, ["bench", "--help"], block=())
    assert done.returncode == 0, done.stderr
    for scenario in ("pairs", "group", "idle", "sync", "fanout-sweep", "mixed"):
        assert scenario in done.stdout
    assert "--compare-baseline" in done.stdout
    assert "yimbench.cli" in seen["loaded"]
    done, _ = _run(tmp_path, ["bench", "no-such-scenario"], block=())
    assert done.returncode == 2 and "invalid choice: 'no-such-scenario'" in done.stderr, done.stderr
    # every other command still refuses arguments it does not know, as before
    done, _ = _run(tmp_path, ["serve", "--no-such-option"], block=())
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr, done.stderr
