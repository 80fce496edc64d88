"""The search indexer of the embedded store: its own database file, its own thread or process.

Why apart: indexing a message (JSON → text, the trigram tokenizer, FTS5 segment writes)
cost about a third of the writer thread's time per message when it ran inside the message
transaction, and the writer thread is what bounds one-to-one throughput. It runs against
another file (so it never takes the store's write lock), in batches of everything waiting —
large batches are also where FTS5 is cheapest per row.

Where it runs (setting ``search_indexer``, resolved by ``Settings.indexer_in_process``):
- :class:`ThreadIndexer`, a thread of the store's process. It shares that process's GIL with
  the event loop and the writer, so indexing takes turns with sends; in the one-process node
  that costs nothing measurable on 2 cores (the other core is busy with the clients anyway).
- :class:`ProcessIndexer`, a child process (yim/storage/sqlite/indexer_process.py), the
  default in the store process of ``yim serve --workers N``: that process bounds the whole
  node, and a thread there would take its indexing out of the send path's core instead of
  using an idle one.

Flow: the writer collects ``(msg_id, kind, body)`` of each text / file message it appends
(and ``(msg_id, None, None)`` for each recall; both, the second with the new text, for each
edit) and hands the list over right after its COMMIT, before any future is resolved
(:meth:`SearchIndexer.submit`). The indexer applies everything waiting in one transaction.

Invariants (both kinds):
- *Read your writes*: a search first waits for a barrier behind every list handed over so
  far (:meth:`SearchIndexer.barrier`), so a message ACKed before a search is found by it,
  and a recalled one is gone. The thread queues the barrier behind the lists; the process
  numbers the lists and acknowledges the highest one it committed.
- *Nothing lost across a crash*: lists not yet committed die with the process. ``indexed_upto``
  (the highest msg_id indexed) is stored with each batch; on start the indexer re-reads the
  messages from ``MARGIN_IDS`` below it — msg_ids are taken a few milliseconds before their
  commit, far less than the ten-minute margin — and adds what is missing, removes what was
  recalled. A missing index file is rebuilt from ``messages`` the same way. When the
  indexer process dies, the node starts another one, whose catch-up covers every list
  handed over to the dead one; the barriers waiting meanwhile are answered by its ``ready``.
- *No orphan*: the indexer process ends when its pipe from the node closes (a node killed
  by SIGKILL included) or its parent changes; the node stops it after the writer's last list.

Memory: the thread's queue is unbounded by type and bounded in practice: the writer hands
over one list per commit and the indexer takes everything waiting, gathering for at most
``GATHER_S`` or ``GATHER_OPS`` changes, so it holds the bodies of about 50 ms of text
traffic (≈ 1 MB at 10,000 messages/s). The process's pipe is bounded by the kernel: when
the indexer is slower than the writer, the pipe fills and :meth:`ProcessIndexer.submit`
blocks the writer until it drains (back-pressure on the send path).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yim
from yim.protocol.errors import YimError

# The index file and its rules live with the indexer process's main, which imports nothing
# heavier (no asyncio: the child process is ~6 MB smaller); the thread uses them from there.
from yim.storage.sqlite.indexer_process import GATHER_OPS as GATHER_OPS
from yim.storage.sqlite.indexer_process import GATHER_S as GATHER_S
from yim.storage.sqlite.indexer_process import INDEXED_KINDS as INDEXED_KINDS
from yim.storage.sqlite.indexer_process import IndexFile as IndexFile
from yim.storage.sqlite.indexer_process import IndexOp as IndexOp

log = logging.getLogger("yim.storage.indexer")

#: How long the node waits for the indexer process to commit its last changes and exit.
STOP_WAIT_S = 30.0


class SearchIndexer(abc.ABC):
    """What the store sees of its indexer, wherever it runs (see the module docstring)."""

    def __init__(self, store_path: str, index_path: str, synchronous: str) -> None:
        self.store_path = store_path
        self.index_path = index_path
        self._synchronous = synchronous
        self.stopped = False
        self.indexed = 0  # messages added since start (catch-up included; a process: since its start)
        self.batches = 0

    @property
    def pid(self) -> int | None:
        """The indexer process's id; None for a thread."""
        return None

    #: whether :meth:`submit` may wait (for room in a pipe): the event loop's thread must
    #: then never call it while running a batch (the store's loop batches are off)
    submit_may_wait = False

    @abc.abstractmethod
    def start(self) -> None:
        """Open the index and catch up from the store (blocking); raise what stopped it."""
        ...

    @abc.abstractmethod
    def stop(self) -> None:
        """Commit every list handed over, then end (after the writer's last list)."""
        ...

    @abc.abstractmethod
    def submit(self, ops: list[IndexOp]) -> None:
        """Hand over the index changes of one committed batch (from the writer thread)."""
        ...

    @abc.abstractmethod
    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once every change handed over before this call is committed."""
        ...


def make_indexer(store_path: str, index_path: str, synchronous: str, *, process: bool) -> SearchIndexer:
    """The store's indexer: a child process or a thread (``Settings.indexer_in_process``)."""
    kind = ProcessIndexer if process else ThreadIndexer
    return kind(store_path, index_path, synchronous)


class ThreadIndexer(SearchIndexer):
    """The indexer as a thread of the store's process."""

    _STOP = object()

    def __init__(self, store_path: str, index_path: str, synchronous: str) -> None:
        super().__init__(store_path, index_path, synchronous)
        self._file = IndexFile(store_path, index_path, synchronous)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="yim-sqlite-indexer", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # --- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error:
            raise self._startup_error

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._queue.put(self._STOP)
        self._thread.join()

    def submit(self, ops: list[IndexOp]) -> None:
        self._queue.put(ops)

    def barrier(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self.stopped:
            fut.set_exception(YimError("unavailable", "the store is closed"))
        else:
            self._queue.put((fut, loop))
        return fut

    # --- the indexer thread ---------------------------------------------------------------

    def _log_notes(self) -> None:
        for note in self._file.notes:
            log.info("%s", note)
        self._file.notes.clear()

    def _count(self) -> None:
        self.indexed, self.batches = self._file.indexed, self._file.batches

    def _run(self) -> None:
        try:
            conn = self._file.open()
            self._file.catch_up(conn)
        except BaseException as exc:  # surfaced to start()
            self._startup_error = exc
            self._ready.set()
            return
        finally:
            self._log_notes()
            self._count()
        self._ready.set()
        stopping = False
        while not stopping:
            ops: list[IndexOp] = []
            barriers: list[tuple[asyncio.Future[None], asyncio.AbstractEventLoop]] = []
            item = self._queue.get()
            deadline = time.monotonic() + GATHER_S
            while True:
                if item is self._STOP:
                    stopping = True
                elif isinstance(item, list):
                    ops.extend(item)
                else:
                    barriers.append(item)
                try:
                    item = self._queue.get_nowait()
                    continue
                except queue.Empty:
                    pass
                # Gather a larger batch unless someone waits for the index (a search) or
                # enough is here: FTS5 costs ~25 us a row in batches of 10, ~6 in 5,000.
                left = deadline - time.monotonic()
                if barriers or stopping or len(ops) >= GATHER_OPS or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            failure: YimError | None = None
            if ops:
                try:
                    self._file.apply(conn, ops)
                except sqlite3.Error as exc:
                    # The store is intact; the index misses these until the next start's
                    # catch-up. Say so loudly and keep serving.
                    log.error("search index write failed (%d changes; rebuilt on restart): %s", len(ops), exc)
                    failure = _write_failed(str(exc))
                self._count()
            for fut, loop in barriers:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                    loop.call_soon_threadsafe(_resolve, fut, failure)
        conn.close()


_Waiter = tuple[int, asyncio.Future[None], asyncio.AbstractEventLoop]


class ProcessIndexer(SearchIndexer):
    """The node's side of the indexer process: hands it each commit's changes, answers
    barriers from its acknowledgements, restarts it when it dies."""

    submit_may_wait = True  # the pipe to the child is the writer's back-pressure

    def __init__(self, store_path: str, index_path: str, synchronous: str) -> None:
        super().__init__(store_path, index_path, synchronous)
        # The data pipe and the child behind it change together, under this lock: a batch
        # goes either to the old child (and, if that one died, into its successor's
        # catch-up) or to the new one, never nowhere.
        self._lock = threading.Lock()
        self._sent = 0  # number of the last batch handed over
        self._waiters_lock = threading.Lock()
        self._done = 0  # every batch up to this number is in the index
        self._waiters: list[_Waiter] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._data: Connection | None = None
        self._wake: Connection | None = None
        self._results: Connection | None = None
        self._supervisor = threading.Thread(target=self._supervise, name="yim-sqlite-indexer", daemon=True)
        self.restarts = 0  # indexer processes started again after one died

    @property
    def pid(self) -> int | None:
        """The indexer process's id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    # --- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        """Start the indexer process and wait for its catch-up; raise what stopped it."""
        with self._lock:
            self._spawn(0)
        self._read_ready()  # raises if the index cannot be opened
        self._supervisor.start()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        with self._lock:
            if self._data is not None:
                # EOF after the last batch: the child commits what it has and exits. Closing
                # never blocks, where a stop message could wait on a full pipe.
                self._data.close()
                self._data = None
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=STOP_WAIT_S)
        proc = self._proc
        if proc is not None and proc.poll() is None:  # stuck: do not let it outlive the node
            log.error("search indexer process %d did not stop in %.0f s; killing it", proc.pid, STOP_WAIT_S)
            proc.kill()
            proc.wait(timeout=STOP_WAIT_S)
        self._close_pipes()
        self._fail_waiters(YimError("unavailable", "the store is closed"))

    def submit(self, ops: list[IndexOp]) -> None:
        """Hand over the index changes of one committed batch (from the writer thread).

        Blocks while the pipe is full: when the indexer is slower than the writer, the writer
        waits for it (back-pressure) instead of queueing without bound."""
        with self._lock:
            self._sent += 1
            if self._data is not None:
                try:
                    self._data.send((self._sent, ops))
                except OSError:
                    pass  # the child died: its successor's catch-up reads these from the store

    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once every change handed over before this call is committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self.stopped:
            fut.set_exception(YimError("unavailable", "the store is closed"))
            return fut
        target = self._sent
        with self._waiters_lock:
            if target <= self._done:
                fut.set_result(None)
                return fut
            self._waiters.append((target, fut, loop))
        # Someone waits: the child stops gathering and commits now. The wake-up pipe never
        # blocks the event loop: when it is full, a wake-up is already waiting to be read.
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send_bytes(b"!")
        return fut

    # --- the supervisor thread --------------------------------------------------------------

    def _spawn(self, base: int) -> None:
        """Start an indexer process whose catch-up covers every batch up to ``base`` (under
        ``_lock``: no batch is handed over between reading ``base`` and the child's start)."""
        data_r, data_w = os.pipe()
        wake_r, wake_w = os.pipe()
        results_r, results_w = os.pipe()
        child_fds = (data_r, wake_r, results_w)
        # Started like multiprocessing's "spawn" does (fork + exec of a new interpreter: no
        # fork of this threaded process), but not through it: spawn re-runs the node's main
        # module in the child, which for ``yim serve`` imports the whole server. The child
        # gets the code this node runs, whatever its PYTHONPATH said.
        code_root = str(Path(yim.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "yim.storage.sqlite.indexer_process"]
                + [self.store_path, self.index_path, self._synchronous, str(base)]
                + [str(fd) for fd in child_fds],
                pass_fds=child_fds,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        finally:
            for fd in child_fds:  # ours closed, so each side sees EOF when the other goes
                os.close(fd)
        os.set_blocking(wake_w, False)
        self._close_pipes()
        self._data = Connection(data_w, readable=False)
        self._wake = Connection(wake_w, readable=False)
        self._results = Connection(results_r, writable=False)

    def _close_pipes(self) -> None:
        for conn in (self._data, self._wake, self._results):
            if conn is not None:
                conn.close()
        self._data = self._wake = self._results = None

    def _read_ready(self) -> None:
        """Wait for the new child's catch-up; raise why it failed."""
        assert self._results is not None
        while True:
            try:
                msg = self._results.recv()
            except (EOFError, OSError):
                code = self._proc.wait(timeout=STOP_WAIT_S) if self._proc is not None else None
                raise OSError(f"the search indexer process exited at start (code {code})") from None
            if msg[0] == "log":
                log.log(msg[1], "%s", msg[2])
            elif msg[0] == "failed":
                self._proc.wait(timeout=STOP_WAIT_S) if self._proc is not None else None
                raise OSError(f"cannot open the search index {self.index_path}: {msg[1]}")
            else:  # ("ready", base, indexed, batches)
                self._progress(msg)
                return

    def _progress(self, msg: tuple[Any, ...]) -> None:
        _kind, done, indexed, batches, *failure = msg
        self.indexed, self.batches = indexed, batches
        error = _write_failed(failure[0] if failure else None)
        with self._waiters_lock:
            self._done = max(self._done, done)
            ready = [w for w in self._waiters if w[0] <= done]
            self._waiters = [w for w in self._waiters if w[0] > done]
        for _target, fut, loop in ready:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut, error)

    def _fail_waiters(self, error: YimError) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for _target, fut, loop in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut, error)

    def _supervise(self) -> None:
        pause = 0.0
        while True:
            results = self._results
            while results is not None:
                try:
                    msg = results.recv()
                except (EOFError, OSError):
                    break
                if msg[0] == "log":
                    log.log(msg[1], "%s", msg[2])
                else:
                    self._progress(msg)
                    pause = 0.0
            proc = self._proc
            code = None
            if proc is not None:
                try:
                    code = proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:  # its pipe to us is gone: it can do no more good
                    proc.kill()
                    code = proc.wait(timeout=STOP_WAIT_S)
            if self.stopped:
                return
            # Derived data: a new process re-reads from the store what the old one had not
            # committed, so nothing is lost; searches wait for it meanwhile.
            log.error("search indexer process %s exited (code %s); restarting it", proc and proc.pid, code)
            time.sleep(pause)
            pause = min(max(pause * 2, 0.5), 30.0)
            with self._lock:
                if self.stopped:
                    return
                self.restarts += 1
                self._spawn(self._sent)
            try:
                self._read_ready()
            except OSError as exc:
                log.error("%s", exc)
                self._fail_waiters(YimError("unavailable", "the search index is being rebuilt; retry later"))


def _write_failed(failure: str | None) -> YimError | None:
    """What a barrier over a batch that could not be written raises (None: it was written)."""
    return YimError("unavailable", f"search index write failed: {failure}") if failure else None


def _resolve(fut: asyncio.Future[None], error: YimError | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(None)
