"""``make test``'s runner (tests/parallel.py): every file runs once, in one group, and a
failure in any group fails the run with that group's output shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.parallel import ROOT, WEIGHTS_S, split


def test_every_file_is_in_exactly_one_group_in_name_order() -> None:
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py"))
    groups = split(files, 2)
    assert len(groups) == 2
    assert sorted(f for g in groups for f in g) == files
    assert all(g == sorted(g) for g in groups)
    # the measured weights name files that exist: a renamed file would weigh the default
    assert {f"tests/{name}" for name in WEIGHTS_S} <= set(files)
    assert split(files[:1], 2) == [files[:1]]  # no empty group


def _run(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.parallel", "--jobs", "2", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_failing_group_fails_the_run_and_shows_its_output(tmp_path: Path) -> None:
    passing = tmp_path / "test_a_passes.py"
    passing.write_text("def test_fine() -> None:\n    assert True\n")
    failing = tmp_path / "test_b_fails.py"
    failing.write_text("def test_broken() -> None:\n    assert 1 == 2, 'the second group failed'\n")
    done = _run(passing, failing)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "group 2 of 2 (ran alongside group 1)" in done.stdout
    assert "the second group failed" in done.stdout  # the buffered group's report is shown
    assert "group 1: passed, group 2: exit 1" in done.stdout
    another = tmp_path / "test_c_passes.py"
    another.write_text(passing.read_text())
    done = _run(passing, another)
    assert done.returncode == 0, done.stdout + done.stderr


def _run_limited(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_hung.py"
    test.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "--rootdir", ".", "-p", "tests.conftest", str(test)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "YIM_TEST_TIME_LIMIT_S": "2"},
    )


def test_a_hung_test_fails_at_its_time_limit_and_the_run_goes_on(tmp_path: Path) -> None:
    done = _run_limited(
        tmp_path,
        "import asyncio\n\n\n"
        "async def test_awaits_forever() -> None:\n    await asyncio.Event().wait()\n\n\n"
        "def test_next() -> None:\n    assert True\n",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "test_awaits_forever is still running after 2 s: cancelling it" in out
    assert "CancelledError: the test ran past its time limit (2 s)" in out
    assert "await asyncio.Event().wait()" in out  # where it hung
    assert "1 failed, 1 passed" in out


def test_a_test_that_blocks_the_event_loop_ends_the_run_with_every_stack(tmp_path: Path) -> None:
    done = _run_limited(tmp_path, "import time\n\n\ndef test_blocks() -> None:\n    time.sleep(1000)\n")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "test_blocks is still running after 2 s" in out
    assert 'test_hung.py", line 5 in test_blocks' in out  # faulthandler's dump of the main thread
