"""The embedded store: SQLite in WAL mode, one writer thread with group commit.

Write path: every write is a job (a plain function of a connection) queued to one writer
thread that owns the only writing connection. The thread takes every job waiting (up to
``batch_max``), runs each inside its own SAVEPOINT — so one failing job rolls back alone
— and commits the batch with one COMMIT, i.e. one WAL append + (with synchronous=NORMAL)
no fsync per message. A lone message is committed as soon as the thread is free: batches
form only from what queued up during the previous commit, so batching adds no waiting.
Sends skip the thread where they can (``_WriterThread``): one that finds the writer idle
is committed on the event loop's thread at once, and in a process whose indexer never
makes a hand-over wait (the one-process node) the sends of one loop turn are committed
together on the loop's thread at the end of the turn, so the loop and the writer do not
take turns with one GIL.

Durability: WAL with synchronous=NORMAL keeps every committed transaction across a kill
of the process (the WAL is written before COMMIT returns); ``sqlite_synchronous=FULL``
also keeps it across a power cut, at one fsync per batch. Futures are resolved only after
COMMIT returns, which is what lets the gateway ACK "durably stored".

Read path: a small pool of reader threads, each with its own read-only connection; WAL
lets them read the last committed state while the writer works.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from yim.protocol.errors import YimError
from yim.storage.base import Store
from yim.storage.migrations import migrate_sqlite
from yim.storage.records import (
    USER_COLUMNS,
    ConvRow,
    CreateGroupCmd,
    DeviceRec,
    GroupChange,
    GroupHead,
    GroupRec,
    InboxEvent,
    MemberRec,
    MessageRec,
    ReadRes,
    SendCmd,
    SendResult,
    SessionRec,
    UserRec,
)
from yim.storage.rules import admin as admin_rules
from yim.storage.rules.quotes import Quotable
from yim.storage.sqlite import edits as edits
from yim.storage.sqlite import groups as groups
from yim.storage.sqlite import hidden as hidden
from yim.storage.sqlite import timeline as timeline
from yim.storage.sqlite.admin import SqliteAdminStore
from yim.storage.sqlite.erase import SqliteEraseStore
from yim.storage.sqlite.indexer import IndexOp, SearchIndexer, make_indexer
from yim.storage.sqlite.media import SqliteMediaStore
from yim.storage.sqlite.memory import WriterConnection, WriterMemory
from yim.storage.sqlite.push import SqlitePushStore
from yim.storage.sqlite.reactions import SqliteReactionStore
from yim.storage.sqlite.relations import SqliteRelationStore
from yim.storage.sqlite.rows import member_ids
from yim.storage.sqlite.search import SqliteSearchStore
from yim.storage.sqlite.send import send_message
from yim.storage.sqlite.service import SqliteServiceStore

log = logging.getLogger("yim.storage.sqlite")


def _connect(
    path: str, synchronous: str, *, readonly: bool = False, factory: type[sqlite3.Connection] = sqlite3.Connection
) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=factory)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
    conn.execute("PRAGMA temp_store = MEMORY")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


#: A send submitted when the writer has had nothing to do for this long runs at once on the
#: submitting event loop's thread instead of the writer thread (see _WriterThread.submit).
#: Under load the writer is never idle this long, so sends keep overlapping on two threads.
INLINE_IDLE_S = 0.001

#: How long after an inline send its search index changes are handed to the indexer: past
#: the two loop turns that write its push and ACK, so the indexer's wake-up (a thread that
#: then wants the GIL, or a pipe write) is not on the message's path. The indexer gathers
#: for 50 ms before it writes anyway, so this delays no search result.
INDEX_HAND_DELAY_S = 0.002

#: Sends are gathered on the loop (``_WriterThread``, loop batches) while the last batch
#: wrote at most this many inbox rows per job: a one-to-one message writes 2, a send to a
#: write-fan-out group one per member.
LOOP_BATCH_ROWS_PER_JOB = 16


class _WriterThread:
    """Owns the only writing connection; runs queued jobs in batched transactions.

    At low load a send skips the thread: handing a job to an idle thread and back costs two
    wake-ups (a futex wake of the writer, then the loop's self-pipe) and two waits for the
    GIL, about 150 µs of a one-to-one message's ~1.1 ms, and milliseconds at p99 when the
    machine is busy (docs/architecture.md §2.2). So a send submitted while nothing is queued and the writer has been
    idle for ``INLINE_IDLE_S`` runs right there, on the loop thread, as a batch of one, and
    its future is resolved before ``submit`` returns. ``_lock`` is held around every batch
    on either thread, so the connection is never used by two at once, and a job never
    overtakes one submitted before it: the inline path is taken only when no job is
    queued, running or waiting for its future to be resolved on its loop (``_queued``, which
    counts jobs from put until that resolution: a batch the writer has committed but whose
    futures the loop has not resolved yet still holds a send back, or the send committed
    inline would be answered before the earlier ones — a connection's replies must come in
    the order of its sends, docs/protocol.md "Reply order").
    Only sends go inline: they are small and bounded (a group above
    ``group_write_fanout_max`` members is read fan-out), while other jobs (an erasure, a big
    group's creation) could hold the loop for long. And only without an fsync per commit
    (``synchronous`` NORMAL or OFF): with FULL the loop would wait for the disk. The price:
    a COMMIT that stalls on I/O at idle holds the loop, not just the message's ACK.

    **Loop batches**: under load the writer thread would run sends while
    the loop runs everything else, both in Python, and each of them takes the GIL from the
    other around every SQLite statement; the one that wants it back waits until the other
    lets go (up to the 5 ms switch interval). In the one-process node that costs more than
    the overlap of SQLite's own work buys (docs/performance.md, "Sends committed on the
    loop's thread"). So a send that does not go inline, submitted while nothing is on the
    thread (``_queued`` is 0), is gathered, and the sends gathered in one loop turn run as
    one batch on the loop's thread at the end of the turn (``run_loop_batch``), their
    futures resolved there. Order: every job submitted for the thread first commits the
    gathered sends, and a send is gathered only while nothing is on the thread, so no job
    overtakes an earlier one either way. Not while the last batch wrote more than
    ``LOOP_BATCH_ROWS_PER_JOB`` inbox rows a job (sends into a write-fan-out group, a row
    per member): that much SQLite work is worth overlapping with the loop's pushes, so those
    sends keep the thread. On only where the indexer's ``submit`` never waits
    (a thread's queue): the loop must never wait for the indexer process's pipe (where the
    indexer is one, the timer's and a search's hand-overs of held changes run on a thread
    for the same reason). The price
    is the inline one, under load: a COMMIT stalled on I/O holds the loop (every connection
    of the node, where the thread held only the writes).
    """

    _STOP = object()
    _CATCH_UP = object()  # a job: a PASSIVE checkpoint on the writer's connection (catch_up_wal)

    def __init__(self, path: str, synchronous: str, batch_max: int, indexer: SearchIndexer) -> None:
        self._path = path
        self._indexer = indexer
        self._synchronous = synchronous
        self._batch_max = batch_max
        # Unbounded by type, bounded in practice: every job has an awaiting coroutine and
        # the gateway limits requests in flight per connection.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="yim-sqlite-writer", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._conn: WriterConnection | None = None  # set once started, None again once closed
        self._lock = threading.Lock()  # held while a batch runs, on either thread
        self._count_lock = threading.Lock()  # _queued grows on loops (put) and shrinks on them (_resolved)
        self._queued = 0  # jobs put on the queue whose futures are not resolved yet
        # Index changes of batches committed on the loop's thread, not yet handed to the
        # indexer (INDEX_HAND_DELAY_S), a list per batch. Invariant: the indexer gets every
        # change in commit order. Batches commit one at a time (_lock) and append here in
        # that order; whoever hands changes over does so under _held_lock, the held ones
        # first, so none of a later batch overtakes them. Appending takes no lock (a deque's
        # append is atomic): a hand-over waiting for room in the indexer process's pipe
        # holds _held_lock, and must not hold up the loop's next batch with it.
        self._index_held: deque[list[IndexOp]] = deque()
        self._held_lock = threading.Lock()
        self._hand_scheduled = False  # a timer of the loop's will hand them over
        self._idle_since = 0.0  # time.monotonic() when the last batch ended
        self._inline = synchronous.upper() in ("NORMAL", "OFF")  # no fsync per commit: see the class
        self.inline_batches = 0  # sends run on the loop thread (a batch of one each)
        self._loop_batches = self._inline and not indexer.submit_may_wait  # see the class
        # Sends gathered in this loop turn (see the class): committed at its end on the loop
        # of ``_gathering_loop``. Bounded by what one turn reads (each connection's window).
        self._gathered: list[Any] = []
        self._gathering_loop: asyncio.AbstractEventLoop | None = None
        self.loop_batches = 0  # batches of gathered sends run on the loop thread
        # The last batch wrote more than LOOP_BATCH_ROWS_PER_JOB inbox rows a job: group
        # fan-out, whose SQLite work is worth overlapping with the loop's pushes (the class).
        self._fan_out_heavy = False
        self._catch_up_queued = False  # a catch-up is on the queue or running (one at a time)
        self.wal_catch_ups = 0  # catch-ups that copied every frame (the next commit restarts the WAL)
        self.batches = 0
        self.slow_batches = 0  # batches redone with a savepoint per job
        self.jobs_done = 0
        self.stopped = False

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error:
            raise self._startup_error

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._jobs.put(self._STOP)
        self._thread.join()
        self.hand_over_index()  # before the indexer stops (the store stops it after this)

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.stopped:
            fut.set_exception(YimError("unavailable", "the store is closed"))
        elif fn is send_message and self._inline and self._run_inline(fn, args, fut, loop):
            pass
        elif (
            fn is send_message
            and self._loop_batches
            and not self._queued
            and not self._fan_out_heavy
            and loop is self._loop_of_gathered(loop)
        ):
            self._gathered.append((fn, args, fut, loop))
        else:
            self.commit_gathered(loop)  # first: no job overtakes the sends gathered before it
            with self._count_lock:
                self._queued += 1
            self._jobs.put((fn, args, fut, loop))
        return fut

    def catch_up_wal(self) -> None:
        """Queue a PASSIVE checkpoint for the writer thread, between two batches (asked by
        the checkpointer when the WAL keeps growing; called on the loop that submits sends).

        The checkpointer's own passes copy frames while commits go on, so under writes that
        never pause they end behind and the WAL never starts over. The writer is the only
        one that appends: its checkpoint, run while it appends nothing, copies every frame
        (unless a reader still uses an older snapshot), and its next transaction starts the
        log over. Most frames are already copied by then; the rest and the syncs take a few
        milliseconds, which the sends queued behind it wait. The loop never waits for it:
        the job counts as queued (``_queued``) from here, on the loop's thread, so no send is
        gathered or run inline meanwhile (those take ``_lock``), and the sends gathered so
        far are committed first."""
        if self._catch_up_queued or self.stopped:
            return
        self._catch_up_queued = True
        self.commit_gathered(asyncio.get_running_loop())
        with self._count_lock:
            self._queued += 1
        self._jobs.put(self._CATCH_UP)

    def _catch_up(self, conn: WriterConnection) -> None:
        try:
            with self._lock:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy == 0 and frames == copied:
                self.wal_catch_ups += 1
        except sqlite3.Error as exc:  # I/O: the checkpointer asks again after its next pass
            log.warning("WAL checkpoint on the writer failed: %s", exc)
        finally:
            self._catch_up_queued = False
            self._done(1)  # no future to resolve: the job ends here

    def _loop_of_gathered(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop | None:
        """The loop the gathered sends wait on, made ``loop`` (with the end of its turn
        scheduled) if none are gathered; another loop's sends take the thread."""
        if self._gathering_loop is None:
            self._gathering_loop = loop
            loop.call_soon(self.run_loop_batch)
        return self._gathering_loop

    def commit_gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the sends gathered on ``loop`` now, if any (called on that loop)."""
        if self._gathered and self._gathering_loop is loop:
            self.run_loop_batch()

    def run_loop_batch(self) -> None:
        """Commit the gathered sends here, on their loop's thread (see the class); at the end
        of their turn, or earlier when a job for the thread must come after them."""
        gathered, self._gathered = self._gathered, []
        loop, self._gathering_loop = self._gathering_loop, None
        for start in range(0, len(gathered), self._batch_max):
            if self._commit_here(gathered[start : start + self._batch_max]):
                self.loop_batches += 1
        if loop is not None:
            self._hand_over_held(loop)

    def _commit_here(self, batch: list[Any]) -> bool:
        """Run and commit ``batch`` on this (the loop's) thread and resolve its futures;
        False if the writer had closed (they fail with ``unavailable``). Its index changes
        are held (the caller has them handed over)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                closed = YimError("unavailable", "the store is closed")
                outcomes = [(fut, job_loop, None, closed) for _fn, _args, fut, job_loop in batch]
            else:
                outcomes = self._run_batch(conn, batch, inline=True)
            self._idle_since = time.monotonic()
        _resolve(outcomes)
        return conn is not None

    def _hand_over_held(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``loop`` hand the held index changes over INDEX_HAND_DELAY_S from now."""
        if self._index_held and not self._hand_scheduled:
            self._hand_scheduled = True
            loop.call_later(INDEX_HAND_DELAY_S, self._hand_over_later)

    def _run_inline(
        self, fn: Callable[..., Any], args: tuple[Any, ...], fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Run one job here and now if the writer is idle (see the class); False if not.
        Idle means no job queued, running or waiting for its future to be resolved
        (``_queued``), so the writer thread holds no batch and ``_lock`` is free."""
        if self._queued or self._gathered or time.monotonic() - self._idle_since < INLINE_IDLE_S:
            return False
        if self._commit_here([(fn, args, fut, loop)]):
            self.inline_batches += 1
        self._hand_over_held(loop)
        return True

    def _hand_over_later(self) -> None:
        self._hand_scheduled = False
        loop = asyncio.get_running_loop()
        if self._indexer.submit_may_wait:
            # The pipe to the indexer process may be full: the loop never waits for it.
            loop.run_in_executor(None, self.hand_over_index)
        elif not self.hand_over_index(blocking=False):
            # Another thread is handing changes over and may have drained the held ones
            # before these came: look again later rather than leave them to the next send.
            self._hand_over_held(loop)

    def handing_over(self) -> bool:
        """Whether index changes are held or being handed over: a barrier must first wait
        for those (``index_barrier``)."""
        return bool(self._index_held) or self._held_lock.locked()

    def hand_over_index(self, ops: list[IndexOp] | None = None, *, blocking: bool = True) -> bool:
        """Hand the held index changes, then ``ops`` (of a batch committed after them), to
        the indexer, in that order.

        ``blocking=False`` is for the event loop's thread: it returns False at once when
        another thread is handing changes over. That one takes the held changes first, and
        may be waiting for room in the pipe to the indexer process (ProcessIndexer.submit:
        the writer's back-pressure), which must not stop the loop with it."""
        if not self._held_lock.acquire(blocking=blocking):
            return False
        try:
            held = self._index_held
            if held:
                taken: list[IndexOp] = []
                while held:  # what a batch appends meanwhile is taken now or by the next one
                    taken += held.popleft()
                ops = taken + ops if ops else taken
            if ops:
                self._indexer.submit(ops)
        finally:
            self._held_lock.release()
        return True

    def _run(self) -> None:
        try:
            conn = _connect(self._path, self._synchronous, factory=WriterConnection)
            conn.execute("PRAGMA journal_mode = WAL")
            # Checkpoints run on their own thread (_Checkpointer): here one would run inside
            # the COMMIT of every ~1000th page, copying and syncing megabytes while the
            # futures of that batch's messages wait — the tail of the ACK latency.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # The first commit after the WAL starts over cuts the file back to this size: a
            # burst that grew it leaves no gigabytes behind (see _Checkpointer).
            conn.execute(f"PRAGMA journal_size_limit = {WAL_RESTART_BYTES}")
            # Versioned migrations (yim/storage/migrations.py), each in its own transaction; a
            # folder written by a newer release is refused before anything touches it.
            applied = migrate_sqlite(conn, f"the SQLite store {self._path}")
            if applied:
                log.info("SQLite store %s: applied %s", self._path, ", ".join(applied))
            assert isinstance(conn, WriterConnection)
            conn.memory = WriterMemory(conn)
            self._conn = conn
        except BaseException as exc:  # surfaced to start()
            self._startup_error = exc
            if isinstance(exc, sqlite3.Error):  # e.g. "unable to open database file": say which
                self._startup_error = OSError(f"cannot open the SQLite store {self._path}: {exc}")
                self._startup_error.__cause__ = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            job = self._jobs.get()
            catch_up = job is self._CATCH_UP
            batch = [] if catch_up else [job]
            while batch and len(batch) < self._batch_max:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is self._CATCH_UP:  # after this batch, before the jobs behind it
                    catch_up = True
                    break
                batch.append(job)
            if self._STOP in batch:
                stopping = True
                batch = [job for job in batch if job is not self._STOP]
            if batch:
                with self._lock:
                    outcomes = self._run_batch(conn, batch)
                    self._idle_since = time.monotonic()
                self._hand_back(outcomes)
            if catch_up:
                self._catch_up(conn)
        with self._lock:
            self._conn = None
        conn.close()
        # Anything submitted while stopping gets an answer rather than waiting forever.
        leftovers = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is self._CATCH_UP:
                self._catch_up_queued = False
                self._done(1)
            elif job is not self._STOP:
                leftovers.append((job[2], job[3], None, YimError("unavailable", "the store is closed")))
        for fut, loop, _r, error in leftovers:
            try:
                loop.call_soon_threadsafe(_resolve, [(fut, loop, None, error)])
            except RuntimeError:
                pass

    def _run_batch(self, conn: WriterConnection, batch: list[Any], *, inline: bool = False) -> list[Any]:
        """Run and commit one batch; return each job's (future, loop, result, error). The
        index changes of an ``inline`` batch are held for a moment (INDEX_HAND_DELAY_S)."""
        rows_before = conn.memory.inbox_rows
        try:
            outcomes = self._run_optimistic(conn, batch)
            if outcomes is None:  # a job failed half-way: redo the batch, each job isolated
                conn.execute("ROLLBACK")
                conn.memory.forget()
                self.slow_batches += 1
                outcomes = self._run_isolated(conn, batch)
            conn.execute("COMMIT")
            # committed: now the search index may learn of them
            if inline:
                if conn.memory.index_ops:
                    self._index_held.append(conn.memory.index_ops)
            else:
                self.hand_over_index(conn.memory.index_ops)
            conn.memory.index_ops = []
            self._fan_out_heavy = conn.memory.inbox_rows - rows_before > LOOP_BATCH_ROWS_PER_JOB * len(batch)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.memory.forget()
            failure = YimError("unavailable", f"store write failed: {exc}")
            outcomes = [(fut, loop, None, failure) for _fn, _args, fut, loop in batch]
        self.batches += 1
        self.jobs_done += len(batch)
        return outcomes

    def _hand_back(self, outcomes: list[Any]) -> None:
        """Resolve a batch's futures on their loops: one self-pipe wake-up per loop. The
        jobs count as queued until then (see the class)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[1], []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolved, items)
            except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
                self._done(len(items))

    def _resolved(self, items: list[Any]) -> None:
        try:
            _resolve(items)
        finally:
            self._done(len(items))

    def _done(self, jobs: int) -> None:
        with self._count_lock:
            self._queued -= jobs

    @staticmethod
    def _run_optimistic(conn: WriterConnection, batch: list[Any]) -> list[Any] | None:
        """Run the batch in one transaction without a savepoint per job, or return None.

        A savepoint per job costs two statements, and every savepoint makes the FTS5
        search index flush its pending terms to a new segment. Most failing jobs fail in
        validation, before they write anything: ``total_changes`` and the memory's
        ``allocations`` not moving across the job prove the transaction is exactly as it
        was before it (a failing statement is itself undone by SQLite), so the batch carries
        on. A job that fails after writing returns None: the caller rolls back and redoes
        the batch with savepoints.

        Appending jobs run with the writer's heads in memory; before any other job they
        are written back, and after it forgotten (the invariants are in sqlite_memory).
        """
        memory = conn.memory
        outcomes: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        sends = [(a[0].sender_id, a[0].client_msg_id) for fn, a, _f, _l in batch if fn is send_message]
        if len(sends) > 1:
            memory.prefetch_absent(conn, sends)
        for fn, args, fut, loop in batch:
            appending = fn in _APPENDING_JOBS
            if not appending and not _flushed(conn, memory):
                return None
            memory.active = appending
            before, allocated = conn.total_changes, memory.allocations
            try:
                result = fn(conn, *args)
            except Exception as exc:
                if conn.total_changes != before or memory.allocations != allocated:
                    return None
                outcomes.append((fut, loop, None, exc))
            else:
                outcomes.append((fut, loop, result, None))
            if not memory.active:  # not an appending job, or one that left the memory path
                memory.forget_heads()
        memory.active = False
        memory.absent_keys = set()
        return outcomes if _flushed(conn, memory) else None

    @staticmethod
    def _run_isolated(conn: WriterConnection, batch: list[Any]) -> list[Any]:
        """The batch with a savepoint per job: slower, but a job failing half-way is undone
        alone, with its search index changes. Heads stay in the tables (the memory is off),
        as a savepoint rollback would not undo an allocation made in memory."""
        outcomes: list[Any] = []
        index_ops = conn.memory.index_ops
        conn.execute("BEGIN IMMEDIATE")
        for fn, args, fut, loop in batch:
            conn.execute("SAVEPOINT job")
            indexed = len(index_ops)
            try:
                result = fn(conn, *args)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                del index_ops[indexed:]
                outcomes.append((fut, loop, None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((fut, loop, result, None))
        return outcomes


def _flushed(conn: WriterConnection, memory: WriterMemory) -> bool:
    """Write what the memory holds; False if that failed (the batch is then redone with a
    savepoint per job, where nothing waits in memory, so the failing job fails alone)."""
    try:
        memory.flush(conn)
    except sqlite3.Error:
        log.exception("writing the batch's held rows failed; redoing the batch job by job")
        return False
    return True


#: Jobs that only append to timelines and inboxes: they may take heads from the writer's
#: memory (yim/storage/sqlite/memory.py).
_APPENDING_JOBS = frozenset({send_message})


#: A WAL still longer than this after a PASSIVE checkpoint never had a quiet moment to start
#: over: the log restarts only when a write transaction begins with every frame copied back,
#: and under sustained writes each pass ends behind the commits made while it copied (one
#: node grew its WAL to 388 MB in three one-to-one benchmark runs; 12,000 sends in one second
#: wrote 245 MB). The checkpointer then has the writer catch up (_WriterThread.catch_up_wal).
#: 64 MiB is a few seconds of the heaviest load measured, so a catch-up is rare and a crash's
#: replay short; the writer's ``journal_size_limit`` cuts the file back to it.
WAL_RESTART_BYTES = 64 << 20


class _Checkpointer:
    """Copies the WAL back into the database file every ``interval`` seconds, off the
    writer thread (which has ``wal_autocheckpoint = 0``).

    PASSIVE checkpoints never block the writer or readers; once every frame is copied the
    writer's next transaction starts the WAL over from its beginning, so the file stays
    about the size of ``interval`` seconds of writes. Under writes that never pause, no
    pass ends with every frame copied: a WAL longer than ``WAL_RESTART_BYTES`` after one
    has the writer catch up (:meth:`_WriterThread.catch_up_wal`, asked on the loop that
    submits sends). The database file is synced by a checkpoint, which is why these passes
    run on their own thread, never inside a commit that someone waits for; in the writer's
    rare catch-up, the sends queued behind it wait for its copy and syncs (milliseconds).
    """

    def __init__(self, path: str, synchronous: str, writer: _WriterThread, interval: float = 1.0) -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = writer
        self._interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yim-sqlite-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop``: the store's, where sends are submitted (the writer's catch-up is asked
        there, see _WriterThread.catch_up_wal)."""
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = _connect(self._path, self._synchronous)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while not self._stop.wait(self._interval):
                try:
                    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # busy or I/O: the next turn tries again
                    log.warning("WAL checkpoint failed: %s", exc)
                    continue
                if frames * page_size > WAL_RESTART_BYTES and self._loop is not None:
                    try:
                        self._loop.call_soon_threadsafe(self._writer.catch_up_wal)
                    except RuntimeError:  # the loop is closed: the store is closing
                        pass
        finally:
            conn.close()


def _resolve(items: list[Any]) -> None:
    for fut, _loop, result, exc in items:
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


# --- write jobs (run on the writer thread, inside a SAVEPOINT) -------------------------------


def _create_user(conn: sqlite3.Connection, u: UserRec) -> UserRec:
    try:
        conn.execute(
            "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES (?,?,?,?,?)",
            (u.id, u.username, u.display_name, u.password_hash, u.created_at),
        )
    except sqlite3.IntegrityError:
        raise YimError("username_taken", f"username {u.username!r} is taken") from None
    return u


def _create_session(conn: sqlite3.Connection, s: SessionRec, device_name: str) -> list[str]:
    disabled = conn.execute("SELECT disabled_at FROM users WHERE id=?", (s.user_id,)).fetchone()
    admin_rules.may_sign_in(disabled[0] if disabled else None)
    superseded = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM sessions WHERE user_id=? AND device_id=? AND revoked_at IS NULL",
            (s.user_id, s.device_id),
        )
    ]
    if superseded:
        conn.execute(
            "UPDATE sessions SET revoked_at=? WHERE user_id=? AND device_id=? AND revoked_at IS NULL",
            (s.created_at, s.user_id, s.device_id),
        )
    conn.execute(
        "INSERT INTO sessions (id, user_id, device_id, platform, created_at, expires_at) VALUES (?,?,?,?,?,?)",
        (s.id, s.user_id, s.device_id, s.platform, s.created_at, s.expires_at),
    )
    conn.execute(
        "INSERT INTO devices (user_id, device_id, platform, name, created_at, last_seen_at) VALUES (?,?,?,?,?,?)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET platform=excluded.platform, name=excluded.name,"
        " last_seen_at=excluded.last_seen_at",
        (s.user_id, s.device_id, s.platform, device_name, s.created_at, s.created_at),
    )
    return superseded


def _revoke(
    conn: sqlite3.Connection, user_id: int, device_id: str | None, session_id: str | None, now: int
) -> list[str]:
    where = "user_id=? AND revoked_at IS NULL"
    args: list[int | str] = [user_id]
    if device_id is not None:
        where += " AND device_id=?"
        args.append(device_id)
    if session_id is not None:
        where += " AND id=?"
        args.append(session_id)
    ids = [r[0] for r in conn.execute(f"SELECT id FROM sessions WHERE {where}", args)]
    if ids:
        conn.execute(f"UPDATE sessions SET revoked_at=? WHERE {where}", [now, *args])
    return ids


def _touch_devices(conn: sqlite3.Connection, seen: list[tuple[int, str, int, int]]) -> None:
    conn.executemany(
        "UPDATE devices SET last_seen_at=max(last_seen_at, ?), acked_seq=max(acked_seq, ?)"
        " WHERE user_id=? AND device_id=?",
        [(ts, acked, uid, did) for uid, did, ts, acked in seen],
    )


class SqliteStore(Store):
    service: SqliteServiceStore  # which also loads what it remembers at open

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        batch_max: int = 512,
        readers: int = 2,
        checkpoint_interval: float = 1.0,
        indexer_process: bool = False,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        stem = Path(path)
        index_path = str(stem.with_name(f"{stem.stem}-search{stem.suffix}"))
        self.indexer = make_indexer(path, index_path, synchronous, process=indexer_process)
        self._writer = _WriterThread(path, synchronous, batch_max, self.indexer)
        self._checkpointer = _Checkpointer(path, synchronous, self._writer, checkpoint_interval)
        self._readers = readers
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._heads_waiting: dict[int, asyncio.Future[int]] | None = None  # see inbox_head
        self.relations = SqliteRelationStore(self)
        self.service = SqliteServiceStore(self)
        self.media = SqliteMediaStore(self)
        self.search = SqliteSearchStore(self)
        self.reactions = SqliteReactionStore(self)
        self.admin = SqliteAdminStore(self)
        self.erase = SqliteEraseStore(self)
        self.push = SqlitePushStore(self)

        from yim.storage.sqlite.outbox import SqliteOutboxStore

        self.outbox = SqliteOutboxStore(self)

        from yim.storage.sqlite.reports import SqliteReportStore

        self.reports = SqliteReportStore(self)

    async def open(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot open the SQLite store {self.path}: {exc.strerror} ({exc.filename})") from exc
        await asyncio.to_thread(self._writer.start)  # creates or migrates the schema
        await asyncio.to_thread(self.indexer.start)  # then indexes what the index lacks
        self._checkpointer.start(asyncio.get_running_loop())
        await self.service.load()
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="yim-sqlite-reader")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._writer.commit_gathered(asyncio.get_running_loop())  # accepted before the close
        await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._checkpointer.stop)  # the last connection to close checkpoints the rest
        await asyncio.to_thread(self.indexer.stop)  # after the writer: takes its last changes

    @property
    def stats(self) -> dict[str, int]:
        return {
            "batches": self._writer.batches,
            "slow_batches": self._writer.slow_batches,
            "checkpoints": self._checkpointer.checkpoints,
            "wal_catch_ups": self._writer.wal_catch_ups,
            "jobs": self._writer.jobs_done,
            "inline_batches": self._writer.inline_batches,
            "loop_batches": self._writer.loop_batches,
        }

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self._synchronous, readonly=True)
            conn.execute("ATTACH DATABASE ? AS search", (self.indexer.index_path,))
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    # Concept stores (relations, media, ...) run their own jobs through these two.
    def write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(conn, *args)`` on the writer thread inside the next group commit."""
        return self._writer.submit(fn, *args)

    async def index_barrier(self) -> None:
        """Return once everything committed before this call is in the search index (an
        inline send's changes may still be held by the writer: they go first)."""
        writer = self._writer
        if self.indexer.submit_may_wait:
            # Handing over may wait for room in the pipe to the indexer process: on a thread,
            # so the loop serves on meanwhile. That also waits for a hand-over under way
            # (the writer thread's, with the held ones), so the barrier below counts them.
            if writer.handing_over():
                await asyncio.to_thread(writer.hand_over_index)
        elif not writer.hand_over_index(blocking=False):
            await asyncio.to_thread(writer.hand_over_index)  # the same: another thread's under way
        await self.indexer.barrier()

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` on a reader thread, in one read transaction (one snapshot)."""
        return await self._read_tx(fn, *args)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            return fn(self._reader(), *args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def _read_tx(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read of several statements, from one snapshot."""

        def run() -> Any:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    # accounts
    async def create_user(self, user: UserRec) -> UserRec:
        return await self._writer.submit(_create_user, user)

    async def user_by_name(self, username: str) -> UserRec | None:
        def q(conn: sqlite3.Connection) -> UserRec | None:
            r = conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE username=? COLLATE NOCASE AND erased_at IS NULL",
                (username,),
            ).fetchone()
            return UserRec(*r) if r else None

        return await self._read(q)

    async def users_by_ids(self, ids: list[int]) -> dict[int, UserRec]:
        if not ids:
            return {}

        def q(conn: sqlite3.Connection) -> dict[int, UserRec]:
            out: dict[int, UserRec] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(
                    f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({marks}) AND erased_at IS NULL",
                    chunk,
                ):
                    out[r[0]] = UserRec(*r)
            return out

        return await self._read(q)

    # sessions
    async def create_session(self, session: SessionRec, device_name: str) -> list[str]:
        return await self._writer.submit(_create_session, session, device_name)

    async def get_session(self, session_id: str) -> SessionRec | None:
        def q(conn: sqlite3.Connection) -> SessionRec | None:
            r = conn.execute(
                "SELECT id, user_id, device_id, platform, created_at, expires_at, revoked_at FROM sessions WHERE id=?",
                (session_id,),
            ).fetchone()
            return SessionRec(*r) if r else None

        return await self._read(q)

    async def revoke_sessions(
        self, user_id: int, *, device_id: str | None = None, session_id: str | None = None, now: int
    ) -> list[str]:
        return await self._writer.submit(_revoke, user_id, device_id, session_id, now)

    async def list_devices(self, user_id: int) -> list[DeviceRec]:
        def q(conn: sqlite3.Connection) -> list[DeviceRec]:
            return [
                DeviceRec(*r)
                for r in conn.execute(
                    "SELECT d.user_id, d.device_id, d.platform, d.name, d.created_at, d.last_seen_at, d.acked_seq"
                    " FROM devices d"
                    " WHERE d.user_id=? AND EXISTS (SELECT 1 FROM sessions s WHERE s.user_id=d.user_id"
                    " AND s.device_id=d.device_id AND s.revoked_at IS NULL) ORDER BY d.last_seen_at DESC",
                    (user_id,),
                )
            ]

        return await self._read(q)

    async def touch_devices(self, seen: list[tuple[int, str, int, int]]) -> None:
        if seen:
            await self._writer.submit(_touch_devices, seen)

    # messages
    def send_message(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        return self._writer.submit(send_message, cmd, self.service.ctx)

    async def mark_read(self, user_id: int, conv_id: int, seq: int, now: int) -> ReadRes:
        return await self._writer.submit(timeline.mark_read, user_id, conv_id, seq, now)

    async def recall(self, conv_id: int, actor_id: int, seq: int, msg_id: int, now: int, limit_ms: int) -> SendResult:
        return await self._writer.submit(timeline.recall, conv_id, actor_id, seq, msg_id, now, limit_ms)

    async def edit(
        self,
        conv_id: int,
        actor_id: int,
        seq: int,
        body: bytes,
        mentions: tuple[int, ...] | None,
        msg_id: int,
        now: int,
        window_ms: int,
    ) -> SendResult:
        return await self._writer.submit(edits.edit, conv_id, actor_id, seq, body, mentions, msg_id, now, window_ms)

    async def message_versions(self, user_id: int, conv_id: int, seq: int) -> list[tuple[bytes, int]]:
        return await self._read_tx(edits.read_versions, user_id, conv_id, seq)

    async def hide(self, user_id: int, conv_id: int, seqs: list[int], now: int) -> tuple[list[int], ReadRes]:
        return await self._writer.submit(hidden.hide, user_id, conv_id, seqs, now)

    async def sync(self, user_id: int, since: int, limit: int) -> tuple[list[InboxEvent], int]:
        return await self._read_tx(timeline.read_sync, user_id, since, limit)

    async def inbox_head(self, user_id: int) -> int:
        """Every connect reads its user's head. Heads asked for in the same loop turn are
        read together, in one reader-thread round trip: under a burst of connects the
        hand-off per read, not the read, is what costs the event loop."""
        waiting = self._heads_waiting
        if waiting is None:
            waiting = self._heads_waiting = {}
            asyncio.get_running_loop().call_soon(self._read_heads)
        fut = waiting.get(user_id)
        if fut is None:
            fut = waiting[user_id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(fut)  # one waiter's cancellation must not cancel the others'

    def _read_heads(self) -> None:
        waiting, self._heads_waiting = self._heads_waiting or {}, None
        ids = list(waiting)

        def q(conn: sqlite3.Connection) -> dict[int, int]:
            heads: dict[int, int] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                heads.update(conn.execute(f"SELECT id, inbox_seq FROM users WHERE id IN ({marks})", chunk).fetchall())
            return heads

        def done(task: asyncio.Future[dict[int, int]]) -> None:
            exc = None if task.cancelled() else task.exception()
            for user_id, fut in waiting.items():
                if fut.done():
                    continue
                if task.cancelled():
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(task.result().get(user_id, 0))

        asyncio.ensure_future(self._read(q)).add_done_callback(done)

    async def history(
        self, user_id: int, conv_id: int, before: int | None, after: int | None, limit: int
    ) -> tuple[list[MessageRec], bool]:
        return await self._read_tx(timeline.read_history, user_id, conv_id, before, after, limit)

    async def conversations(
        self, user_id: int, before: int | None, limit: int, conv_id: int | None = None
    ) -> tuple[list[ConvRow], int]:
        return await self._read_tx(timeline.read_conversations, user_id, before, limit, conv_id)

    async def receipts(self, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
        return await self._read_tx(groups.receipts, conv_id, viewer_id, seq)

    # groups
    async def create_group(self, cmd: CreateGroupCmd) -> GroupChange:
        return await self._writer.submit(groups.create_group, cmd)

    async def add_members(
        self, conv_id: int, actor_id: int, user_ids: list[int], via: str, msg_id: int, now: int, threshold: int
    ) -> GroupChange:
        return await self._writer.submit(groups.add_members, conv_id, actor_id, user_ids, via, msg_id, now, threshold)

    async def remove_member(self, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int) -> GroupChange:
        return await self._writer.submit(groups.remove_member, conv_id, actor_id, user_id, msg_id, now)

    async def set_role(
        self, conv_id: int, actor_id: int, user_id: int, role: str, msg_id: int, now: int
    ) -> GroupChange:
        return await self._writer.submit(groups.set_role, conv_id, actor_id, user_id, role, msg_id, now)

    async def mute_member(
        self, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
    ) -> GroupChange:
        return await self._writer.submit(groups.mute_member, conv_id, actor_id, user_id, until, msg_id, now)

    async def update_group(
        self, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
    ) -> GroupChange:
        return await self._writer.submit(groups.update_group, conv_id, actor_id, changes, msg_id, now)

    async def dissolve_group(self, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
        return await self._writer.submit(groups.dissolve_group, conv_id, actor_id, msg_id, now)

    async def group_info(self, conv_id: int, viewer_id: int) -> GroupRec:
        return await self._read_tx(groups.group_info, conv_id, viewer_id)

    async def group_members(self, conv_id: int, viewer_id: int, after: int, limit: int) -> list[MemberRec]:
        return await self._read_tx(groups.group_members, conv_id, viewer_id, after, limit)

    async def quotable(self, conv_id: int, user_id: int, seqs: list[int]) -> Quotable:
        return await self._read_tx(timeline.read_quotable, conv_id, user_id, seqs)

    async def member_ids(self, conv_id: int) -> list[int]:
        return await self._read(member_ids, conv_id)

    async def read_groups(self, user_id: int) -> list[GroupHead]:
        return await self._read(groups.read_groups, user_id)

    async def max_msg_id(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            # Users, conversations and messages all take ids from the same generator.
            return conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(msg_id) FROM messages), 0),"
                " COALESCE((SELECT MAX(id) FROM conversations), 0), COALESCE((SELECT MAX(id) FROM users), 0))"
            ).fetchone()[0]

        return await self._read(q)
