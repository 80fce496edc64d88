"""The embedded store's search indexer in a child process (``search_indexer = "process"``;
yim/storage/sqlite/indexer.py, yim/storage/sqlite/indexer_process.py). Killing it loses no
index entry once it is restarted; a stalled one holds the writer back (the pipe is the bound)
instead of letting changes pile up; closing the store leaves no child behind; and a node
killed with SIGKILL leaves no orphan indexer. ``yim serve --workers 2`` runs its indexer as
a process by default: tests/test_workers_serve.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from yim.config import SettingsError, load_settings
from yim.storage.sqlite.indexer import ProcessIndexer, ThreadIndexer
from yim.storage.sqlite.store import SqliteStore

from .test_search_index import _found, _send, _users

INDEXER_MODULE = "yim.storage.sqlite.indexer_process"


async def _store(folder: Path) -> SqliteStore:
    store = SqliteStore(str(folder / "yim.db"), indexer_process=True)
    await store.open()
    return store


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def indexer_children(pid: int) -> list[psutil.Process]:
    """The search indexer processes among ``pid``'s children."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if INDEXER_MODULE in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def _count_rows(folder: Path) -> int:
    index = sqlite3.connect(folder / "yim-search.db")
    try:
        return int(index.execute("SELECT COUNT(*) FROM message_fts").fetchone()[0])
    finally:
        index.close()


def test_search_indexer_setting_chooses_thread_or_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YIM_SEARCH_INDEXER", raising=False)
    # auto: a process only where the store process bounds a node of several workers
    assert not load_settings(None).indexer_in_process
    assert load_settings(None, workers="2").indexer_in_process
    assert load_settings(None, search_indexer="process").indexer_in_process
    assert not load_settings(None, workers="2", search_indexer="thread").indexer_in_process
    with pytest.raises(SettingsError) as info:
        load_settings(None, search_indexer="fork")
    assert str(info.value).count("\n") == 0
    assert "search_indexer = 'fork'" in str(info.value) and "one of 'auto', 'process', 'thread'" in str(info.value)
    assert isinstance(SqliteStore("unopened.db").indexer, ThreadIndexer)
    assert isinstance(SqliteStore("unopened.db", indexer_process=True).indexer, ProcessIndexer)


def test_the_indexer_process_loads_no_asyncio() -> None:
    # Its memory is the node's: the index file's module keeps out of the interface and the
    # event loop's modules (~6 MB of RSS for a process that never runs a loop).
    probe = f"import sys, {INDEXER_MODULE}; print(sorted(m for m in sys.modules if m.startswith('asyncio')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


async def test_killing_the_indexer_mid_load_loses_no_index_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="yim.storage.indexer")
    store = await _store(tmp_path)
    try:
        a, b = await _users(store)
        first = store.indexer.pid
        assert first is not None and first != os.getpid()
        assert [p.pid for p in indexer_children(os.getpid())] == [first]
        await asyncio.gather(*(_send(store, a, b, f"before the kill {i:04d}") for i in range(300)))
        # Frozen, the indexer still receives the next batches into its pipe but commits none of
        # them: the kill then certainly loses changes the node had handed over.
        os.kill(first, signal.SIGSTOP)
        await asyncio.gather(*(_send(store, a, b, f"in the pipe {i:04d}") for i in range(200)))
        os.kill(first, signal.SIGKILL)
        # ... and more while the node notices and starts another one.
        await asyncio.gather(*(_send(store, a, b, f"after the kill {i:04d}") for i in range(300)))

        async with asyncio.timeout(30):
            assert await _found(store, b, "in the pipe 0199") == ["in the pipe 0199"]
            assert await _found(store, b, "after the kill 0299") == ["after the kill 0299"]
            await store.indexer.barrier()
        assert isinstance(store.indexer, ProcessIndexer)
        assert store.indexer.pid not in (None, first) and store.indexer.restarts == 1
        assert _count_rows(tmp_path) == 800
        restarts = [r for r in caplog.records if "restarting it" in r.getMessage()]
        assert len(restarts) == 1, restarts
    finally:
        await store.close()


async def test_sigterm_leaves_the_indexer_to_the_node(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``systemctl stop`` signals every process of the unit (unless ``KillMode=mixed``), the
    indexer too: it must outlive SIGTERM and be stopped by the store after its last batch,
    not die and be restarted, with an error line, by a node that is stopping."""
    caplog.set_level(logging.INFO, logger="yim.storage.indexer")
    store = await _store(tmp_path)
    pid = store.indexer.pid
    assert pid is not None
    try:
        a, b = await _users(store)
        os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.2)  # a process that dies of it is gone by then
        await asyncio.gather(*(_send(store, a, b, f"after the signal {i:03d}") for i in range(50)))
        async with asyncio.timeout(30):
            assert await _found(store, b, "after the signal 049") == ["after the signal 049"]
        assert isinstance(store.indexer, ProcessIndexer)
        assert store.indexer.pid == pid and store.indexer.restarts == 0
        assert not [r for r in caplog.records if "restarting it" in r.getMessage()]
    finally:
        await store.close()
    assert _gone(pid)
    assert _count_rows(tmp_path) == 50


async def test_a_stalled_indexer_holds_the_writer_back_and_close_leaves_no_child(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    pid = store.indexer.pid
    assert pid is not None
    try:
        a, b = await _users(store)
        os.kill(pid, signal.SIGSTOP)
        try:
            # ~400 KB of index changes against a pipe of 64 KB: the writer must stop taking
            # sends once the pipe is full, not keep them in memory for a frozen indexer.
            text = "x" * 100
            sends = [asyncio.ensure_future(_send(store, a, b, f"{text} {i:05d}")) for i in range(4000)]
            deadline = time.monotonic() + 10
            done = -1
            while time.monotonic() < deadline:  # until the writer stops making progress
                await asyncio.sleep(0.3)
                now = sum(s.done() for s in sends)
                if now == done:
                    break
                done = now
            assert done < len(sends)
        finally:
            os.kill(pid, signal.SIGCONT)
        async with asyncio.timeout(60):
            await asyncio.gather(*sends)
        # No barrier: what the writer handed over last is committed before the indexer exits.
    finally:
        await store.close()
    assert _gone(pid)
    assert _count_rows(tmp_path) == 4000


async def test_a_search_behind_a_stalled_indexer_leaves_the_loop_serving(tmp_path: Path) -> None:
    """A search while the writer waits for room in the indexer's pipe (its back-pressure:
    an indexer catching up after a restart, a slow disk) waits for the index without taking
    the event loop with it, which in a node with workers serves every worker's store calls
    and the hub."""
    store = await _store(tmp_path)
    pid = store.indexer.pid
    assert pid is not None
    text = "x" * 100
    resume = threading.Timer(3.0, os.kill, (pid, signal.SIGCONT))
    try:
        a, b = await _users(store)
        os.kill(pid, signal.SIGSTOP)
        try:
            sends = [asyncio.ensure_future(_send(store, a, b, f"{text} {i:05d}")) for i in range(4000)]
            deadline = time.monotonic() + 10
            done = -1
            while time.monotonic() < deadline:  # until the writer waits on the full pipe
                await asyncio.sleep(0.3)
                now = sum(s.done() for s in sends)
                if now == done:
                    break
                done = now
            assert 0 < done < len(sends)
            search = asyncio.ensure_future(_found(store, b, "00000"))
            resume.start()  # whatever happens here, the indexer goes on in 3 s
            started = time.monotonic()
            await asyncio.sleep(0.1)
            assert time.monotonic() - started < 1.0, "the loop stopped with the writer"
            assert not search.done()
        finally:
            resume.cancel()
            os.kill(pid, signal.SIGCONT)
        async with asyncio.timeout(60):
            assert await search == [f"{text} 00000"]
            await asyncio.gather(*sends)
    finally:
        await store.close()


async def test_a_node_killed_with_sigkill_leaves_no_orphan_indexer(server_process: Any) -> None:
    proc = server_process(YIM_SEARCH_INDEXER="process")
    await asyncio.to_thread(proc.start)
    assert proc.proc is not None
    (child,) = indexer_children(proc.proc.pid)
    await asyncio.to_thread(proc.kill)
    # The kernel closes the dead node's end of the pipe; the indexer reads EOF and exits.
    assert await asyncio.to_thread(_wait_gone, child.pid, 10.0), "the indexer outlived its node"
