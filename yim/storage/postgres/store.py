"""The cluster store: PostgreSQL through asyncpg, with group commit.

Write path: every write is a job queued to one writer task per node, which owns one
connection. The task takes every job waiting (up to ``batch_max``) and runs them in ONE
transaction, in submission order, and resolves their futures after COMMIT returns — so
an ACK always means "durably stored", a lone message is committed as soon as the task is
free (batches form only from what queued up during the previous round trip), and a burst
costs one commit per batch instead of one per message.

- Sends are the hot path: consecutive sends of a batch are one call of the server-side
  function ``yim_send_batch`` (postgres_functions.sql), which takes them as arrays and runs
  each of its statements once over the whole run — one round trip, and PostgreSQL's
  per-statement set-up paid per run, not per message. Its outcome is that of one
  ``yim_send`` per message, in order; a run shorter than BATCH_SEND_MIN, and a send rerun
  alone, go through ``yim_send`` (pipelined: one round trip too). Both check before they
  write and return a refusal instead of raising, so no savepoint is needed per message.
- Other writes (groups, read markers, accounts, relations) are Python jobs run inside a
  savepoint each, so one failing job rolls back alone.
- Seqs are allocated by ``UPDATE ... RETURNING`` on the timeline's head row inside that
  transaction: gap-free, never reused, serialised per timeline by the row lock.
- Lock order (postgres_locks): every job declares the conversation and user rows it may
  lock; a batch first locks their union in one global order (conversations, then users,
  each by id), so batches of different nodes queue behind each other but never deadlock.
  A job that cannot declare them (customer-service routing) runs in a transaction alone.
- Bounded lifetimes: sessions end when idle in a transaction for IDLE_IN_TRANSACTION_MS (a
  paused node releases its locks), lock waits give up after LOCK_TIMEOUT_MS. A conflict
  that still happens (a lock timeout, a serialization failure on a client_msg_id sent
  twice at once) rolls the batch back; it is then rerun one job per transaction, in
  order, with retries — per-sender order holds because the jobs still run in submission
  order, and a resend is idempotent by client_msg_id.
- A lost connection leaves the outcome unknown: the batch's futures fail with
  ``unavailable``; clients resend, and ``client_msg_id`` makes the resend idempotent.

Read path: an asyncpg pool; prepared statements come from asyncpg's per-connection
statement cache. Reads that must agree with themselves (a sync page and its head, a
conversation list and its total unread) are single statements, hence one snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import asyncpg

from yim.logs import BurstLog
from yim.protocol.errors import YimError
from yim.storage.base import Store
from yim.storage.migrations import SchemaError, migrations, too_new
from yim.storage.postgres import edits as edits
from yim.storage.postgres import groups as groups
from yim.storage.postgres import hidden as hidden
from yim.storage.postgres import timeline as timeline
from yim.storage.postgres.admin import PgAdminStore
from yim.storage.postgres.erase import PgEraseStore
from yim.storage.postgres.locks import (
    LOCK_SQL,
    NO_ANCHORS,
    Anchors,
    OpaqueAfterAll,
    lock_anchors,
    running_opaque,
    send_anchors,
)
from yim.storage.postgres.media import PgMediaStore
from yim.storage.postgres.outbox import add_after_send
from yim.storage.postgres.push import PgPushStore
from yim.storage.postgres.reactions import PgReactionStore
from yim.storage.postgres.relations import PgRelationStore
from yim.storage.postgres.search import PgSearchStore
from yim.storage.postgres.send import send_job
from yim.storage.postgres.service import PgServiceStore
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

log = logging.getLogger("yim.storage.postgres")

_MIGRATION_LOCK = 0x79696D  # pg_advisory_xact_lock key: "yim"
_FUNCTIONS = "postgres_functions.sql"
#: errors after which rerunning the same work can succeed: a conflict with another node, a
#: lock held longer than LOCK_TIMEOUT_MS (a paused node's, until PostgreSQL ends its session),
#: a statement cut off by STATEMENT_TIMEOUT_MS
RETRYABLE = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
)

# Bounded lifetimes (docs/operations.md, "Cluster faults"): nothing a node does may hold
# another node up for long. A node paused (SIGSTOP, a long GC, a frozen VM) in the middle of
# a transaction keeps its row locks until PostgreSQL ends its session: after
# IDLE_IN_TRANSACTION_MS. Writers of other nodes wait at most LOCK_TIMEOUT_MS for a lock —
# longer than that, so that they normally get it right after the paused session is gone —
# and then retry. The outcome of the paused node's batch is "not committed"; its clients
# resend with the same client_msg_id.
IDLE_IN_TRANSACTION_MS = 2_000
LOCK_TIMEOUT_MS = 4_000
STATEMENT_TIMEOUT_MS = 30_000
#: client side: a statement that gets no answer in this long means the server is gone
COMMAND_TIMEOUT_S = 35.0
SERVER_SETTINGS = {
    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
    "lock_timeout": str(LOCK_TIMEOUT_MS),
    "statement_timeout": str(STATEMENT_TIMEOUT_MS),
    # The server probes an idle client connection: a node whose host died (no FIN) loses
    # its sessions, and their locks, in ~10 + 3 * 3 s.
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "3",
    "tcp_keepalives_count": "3",
    "application_name": "yim",
}
#: errors after which the connection, and the outcome of what ran on it, is lost
CONNECTION_LOST = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    # PostgreSQL ended the session: a restart, or idle_in_transaction_session_timeout after
    # this node was paused mid-transaction (nothing of that transaction committed).
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    # asyncpg's protocol state is broken, e.g. the server ended the session while the
    # connection sat idle ("cannot switch to state ..."): the connection is unusable.
    asyncpg.exceptions.InternalClientError,
)

#: Runs of at least this many sends go to ``yim_send_batch``, shorter ones to ``yim_send``
#: (pipelined): the batch function's few statements are bigger, and setting them up costs
#: about as much as ``yim_send`` for 3-4 messages (PostgreSQL CPU, measured with runs of 1,
#: 2, 4 and 8 sends: docs/performance.md, "Cluster path"). Both give the same outcome.
BATCH_SEND_MIN = 4

Job = Callable[..., Awaitable[Any]]
_REFUSED = "store writes refused (`unavailable`): %s; %d refused since the last line"


class _ExpectedFailureOneLine(logging.Filter):
    """asyncpg's pool logs a failed reconnect (the server restarting, unreachable) with a
    traceback; an operator needs one line naming the error, the writer's own lines say
    when the store is back."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], CONNECTION_LOST):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_ExpectedFailureOneLine())


def _ascii_fold(name: str) -> str:
    """Case folding of SQLite's NOCASE: ASCII letters only."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --- migrations ---------------------------------------------------------------------------------


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every table migration, in order: the core file, then numbered ones
    (found and checked as SQLite's are: yim/storage/migrations.py)."""
    return [(m.name, m.sql) for m in migrations("postgres")]


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def migrate_conn(conn: asyncpg.Connection) -> list[str]:
    """Bring a database to the current schema; returns what was applied. Safe to run from
    many nodes at once (an advisory lock serialises them) and idempotent."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS yim_migrations (name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM yim_migrations")}
        files = migration_files()
        unknown = sorted(set(done) - {name for name, _sql in files} - {_FUNCTIONS})
        if unknown:  # applied by a newer release: this code would not know what they hold
            where = f"the PostgreSQL database {await conn.fetchval('SELECT current_database()')}"
            raise too_new(where, f"has migrations this yim does not know ({', '.join(unknown)})")
        for name, sql in files:
            checksum = _checksum(sql)
            if name in done:
                if done[name] != checksum:
                    raise SchemaError(
                        f"migration {name} changed after it was applied; add a new migration file instead"
                    )
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO yim_migrations (name, checksum) VALUES ($1, $2)", name, checksum)
            applied.append(name)
        # Functions are code: replaced whenever their file changes.
        sql = resources.files("yim.storage.postgres").joinpath(_FUNCTIONS).read_text()
        checksum = _checksum(sql)
        if done.get(_FUNCTIONS) != checksum:
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO yim_migrations (name, checksum) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
                _FUNCTIONS,
                checksum,
            )
            applied.append(_FUNCTIONS)
    return applied


async def migrate(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate_conn(conn)
    finally:
        await conn.close()


# --- the writer ---------------------------------------------------------------------------------


class _Job:
    __slots__ = ("anchors", "args", "cmd", "fn", "fut")

    def __init__(
        self,
        fut: asyncio.Future[Any],
        fn: Job | None,
        args: tuple[Any, ...],
        cmd: SendCmd | None,
        anchors: Anchors | None,
    ) -> None:
        self.fut = fut
        self.fn = fn  # None for a send (cmd)
        self.args = args
        self.cmd = cmd
        #: what the job may lock (postgres_locks); None: opaque, runs in a transaction alone
        self.anchors = anchors


Outcome = tuple[Any, BaseException | None]


class _Rerun(Exception):
    """Abort the batch transaction and run its jobs one by one."""


#: the writer's statements whose parameter types asyncpg introspects on first use
_WARM_UP = (LOCK_SQL, timeline.SEND_BATCH_SQL)


class _Writer:
    """One task, one connection: drains the job queue in batched transactions."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], batch_max: int, queue_max: int) -> None:
        self._connect = connect
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        #: conversations known to be customer-service ones (their sends are Python jobs);
        #: a conversation's type never changes, so this never goes stale.
        self.service_convs: set[int] = set()
        self.service: Any = None  # the store's PgServiceStore, for sends found to be service ones
        self.batches = 0
        self.jobs_done = 0
        self.retries = 0
        #: conflicts (deadlock, lock timeout, serialization failure) of transactions whose
        #: jobs all declared their anchors: the lock order says this stays 0, except for
        #: one client_msg_id sent through two nodes at once
        self.declared_conflicts = 0
        #: when the writer's connection was lost (None: connected), for one log line per outage
        self._lost_since: float | None = None
        #: refused writes (`unavailable`): one log line per burst
        self.refusals = BurstLog(log, 10.0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="yim-pg-writer")

    async def stop(self) -> None:
        """Refuse new jobs, finish the queued ones, close the connection."""
        self.stopped = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=5)
            self._conn = None

    def submit(
        self, fn: Job | None, args: tuple[Any, ...] = (), cmd: SendCmd | None = None, anchors: Anchors | None = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.stopped:
            fut.set_exception(YimError("unavailable", "the store is closed"))
        elif len(self._jobs) >= self._queue_max:
            self.refusals.note(_REFUSED, "the write queue is full")
            fut.set_exception(YimError("unavailable", "the store is overloaded; retry", retry_after=1.0))
        else:
            self._jobs.append(_Job(fut, fn, args, cmd, anchors))
            self._wake.set()
        return fut

    def _take_batch(self) -> list[_Job]:
        """The next transaction's jobs: an opaque job alone, else the longest run of jobs
        with declared anchors (up to ``batch_max``) — their prelude locks them all first."""
        if self._jobs[0].anchors is None:
            return [self._jobs.popleft()]
        batch: list[_Job] = []
        while self._jobs and len(batch) < self._batch_max and self._jobs[0].anchors is not None:
            batch.append(self._jobs.popleft())
        return batch

    async def _run(self) -> None:
        # Connect before the first job, so that its batch does not wait for the set-up below
        # (if the database is away, the first batch connects, and reports it, again).
        with contextlib.suppress(*CONNECTION_LOST):
            await self._connection()
        while True:
            if not self._jobs:
                if self.stopped:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            try:
                outcomes = await self._run_batch(batch)
            except Exception as exc:  # never let the writer die: fail the batch, carry on
                log.exception("store write batch failed")
                failure = YimError("unavailable", f"store write failed: {exc}")
                outcomes = [(None, failure)] * len(batch)
            self.batches += 1
            self.jobs_done += len(batch)
            for job, (result, refusal) in zip(batch, outcomes, strict=True):
                if job.fut.done():
                    continue
                if refusal is not None:
                    if isinstance(refusal, YimError) and refusal.code == "unavailable":
                        self.refusals.note(_REFUSED, refusal.message)
                    job.fut.set_exception(refusal)
                else:
                    job.fut.set_result(result)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            try:
                # asyncpg looks up the array types of these statements once per connection,
                # with a recursive catalog query (~25 ms of PostgreSQL CPU each): at connect,
                # not in the middle of a batch of sends that waits for it.
                for sql in _WARM_UP:
                    await conn.prepare(sql)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
            if self._lost_since is not None:
                log.warning("store writer reconnected after %.1f s", time.monotonic() - self._lost_since)
                self._lost_since = None
        return self._conn

    def _lost(self, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        if self._lost_since is None:  # one line per outage, not per batch
            self._lost_since = time.monotonic()
            log.warning(
                "store writer lost its connection (%s: %s); writes fail until it is back", type(exc).__name__, exc
            )

    async def _run_batch(self, batch: list[_Job]) -> list[Outcome]:
        try:
            conn = await self._connection()
        except CONNECTION_LOST as exc:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                log.warning("store writer cannot connect (%s: %s); writes fail until it can", type(exc).__name__, exc)
            await asyncio.sleep(0.1)  # do not spin while the database is away
            return [(None, YimError("unavailable", f"store unreachable: {exc}"))] * len(batch)
        try:
            return await self._in_one_transaction(conn, batch)
        except _Rerun:
            pass
        except OpaqueAfterAll as exc:  # a customer-service send among them: rerun alone
            self.service_convs.add(exc.conv_id)
        except RETRYABLE as exc:
            self._conflict(exc, declared=all(job.anchors is not None for job in batch))
        except CONNECTION_LOST as exc:
            self._lost(exc)
            return [(None, YimError("unavailable", f"store connection lost: {exc}"))] * len(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("store write job failed")
            # An unexpected error aborted the batch: rerun the jobs alone to isolate it.
        outcomes: list[Outcome] = []
        for i, job in enumerate(batch):
            try:
                outcomes.append(await self._alone(conn, job))
            except CONNECTION_LOST as exc:
                self._lost(exc)
                failure = YimError("unavailable", f"store connection lost: {exc}")
                return outcomes + [(None, failure)] * (len(batch) - i)
        return outcomes

    async def _in_one_transaction(self, conn: asyncpg.Connection, batch: list[_Job]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        async with conn.transaction():
            await lock_anchors(conn, [job.anchors for job in batch if job.anchors is not None])
            i, n = 0, len(batch)
            while i < n:
                if batch[i].fn is None:  # a run of sends: one round trip
                    j = i + 1
                    while j < n and batch[j].fn is None:
                        j += 1
                    sends = batch[i:j]
                    if len(sends) >= BATCH_SEND_MIN:
                        cmds = [job.cmd for job in sends if job.cmd is not None]
                        rows = await conn.fetch(timeline.SEND_BATCH_SQL, *timeline.send_batch_args(cmds))
                    else:
                        rows = await conn.fetchmany(timeline.SEND_SQL, [job.args for job in sends])
                    if any(row["o_err"] == timeline.SERVICE_CONV for row in rows):
                        # A send into a customer-service conversation: it needs the Python
                        # routing job. Redo the batch job by job, in order.
                        self._learn_service_convs(rows)
                        raise _Rerun
                    run = [timeline.send_outcome(job.cmd, row) for job, row in zip(sends, rows, strict=True)]
                    # the run's after_send events, in its transaction: one statement
                    await add_after_send(
                        conn, [(job.cmd, res) for job, (res, _) in zip(sends, run, strict=True) if res and job.cmd]
                    )
                    outcomes += run
                    i = j
                    continue
                job = batch[i]
                assert job.fn is not None  # the runs of sends (fn None) were taken above
                token = running_opaque.set(job.anchors is None)
                try:
                    async with conn.transaction():  # a savepoint: a failing job rolls back alone
                        outcomes.append((await job.fn(conn, *job.args), None))
                except YimError as exc:
                    outcomes.append((None, exc))
                finally:
                    running_opaque.reset(token)
                i += 1
        return outcomes

    def _conflict(self, exc: BaseException, *, declared: bool) -> None:
        self.retries += 1
        if declared:
            self.declared_conflicts += 1
            log.debug("a batch with declared anchors conflicted: %s", exc)

    def _learn_service_convs(self, rows: list[Any]) -> None:
        self._learn_service_convs_ids([r["o_conv"] for r in rows if r["o_err"] == timeline.SERVICE_CONV])

    def _learn_service_convs_ids(self, conv_ids: list[int]) -> None:
        if len(self.service_convs) > 100_000:
            self.service_convs.clear()
        self.service_convs.update(conv_ids)

    async def _alone(self, conn: asyncpg.Connection, job: _Job, attempts: int = 8) -> Outcome:
        for attempt in range(attempts):
            token = running_opaque.set(job.anchors is None)
            try:
                async with conn.transaction():
                    if job.anchors is not None:
                        await lock_anchors(conn, [job.anchors])
                    if job.fn is not None:
                        return await job.fn(conn, *job.args), None
                    assert job.cmd is not None  # a send's _Job holds its SendCmd instead of a fn
                    if job.anchors is None:  # a send known to be a service one
                        return await _service_send(conn, job.cmd, self.service), None
                    row = await conn.fetchrow(timeline.SEND_SQL, *job.args)
                    if row["o_err"] == timeline.SERVICE_CONV:
                        raise OpaqueAfterAll(row["o_conv"])
                    result, refusal = timeline.send_outcome(job.cmd, row)
                    if result is not None:
                        await add_after_send(conn, [(job.cmd, result)])
                    return result, refusal
            except OpaqueAfterAll as exc:
                # Routing discovers its locks as it goes: no prelude, a transaction alone
                # (postgres_locks, "Opaque jobs"). Rolled back above; the next attempt runs it so.
                self._learn_service_convs_ids([exc.conv_id])
                job.anchors = None
                continue
            except YimError as exc:
                return None, exc
            except RETRYABLE as exc:
                self._conflict(exc, declared=job.anchors is not None)
                await asyncio.sleep(random.uniform(0.001, 0.01) * (2**attempt))
            except CONNECTION_LOST:
                raise
            except Exception as exc:
                log.exception("store write job failed")
                return None, exc
            finally:
                running_opaque.reset(token)
        return None, YimError("unavailable", "store write kept conflicting with other nodes; retry")


# --- the store ----------------------------------------------------------------------------------


def _require_async(fn: Job) -> None:
    if not asyncio.iscoroutinefunction(fn):
        # A SQLite job (a plain function of a sqlite3 connection) handed to this store.
        raise NotImplementedError(
            f"{fn.__module__}.{fn.__qualname__} is a SQLite job; the PostgreSQL store has no port of it yet"
        )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Readers never change session state, so the pool's reset round trip is skipped."""


class PostgresStore(Store):
    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 2,
        pool_max: int = 10,
        batch_max: int = 512,
        queue_max: int = 100_000,
        migrate_on_open: bool = True,
    ) -> None:
        self.dsn = dsn
        self._pool_min = pool_min
        self._pool_max = max(pool_max, pool_min, 1)
        self._migrate = migrate_on_open
        self._pool: asyncpg.Pool | None = None
        self._writer = _Writer(self._connect, batch_max, queue_max)
        self.relations = PgRelationStore(self)
        self.service = PgServiceStore(self)
        self.media = PgMediaStore(self)
        self.admin = PgAdminStore(self)
        self.erase = PgEraseStore(self)
        self.push = PgPushStore(self)
        self.search = PgSearchStore(self)
        self.reactions = PgReactionStore(self)
        from yim.storage.postgres.outbox import PgOutboxStore

        self.outbox = PgOutboxStore(self)

        from yim.storage.postgres.reports import PgReportStore

        self.reports = PgReportStore(self)
        self._writer.service = self.service

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.dsn, timeout=10, command_timeout=COMMAND_TIMEOUT_S, server_settings=SERVER_SETTINGS
        )

    async def open(self) -> None:
        if self._migrate:
            applied = await migrate(self.dsn)
            if applied:
                log.info("migrated %s: %s", self.dsn.rsplit("@", 1)[-1], ", ".join(applied))
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            reset=_no_reset,
            timeout=10,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=SERVER_SETTINGS,
        )
        self._writer.start()

    async def shared_signing_key(self, candidate: bytes) -> bytes:
        async with self._readers().acquire() as conn:
            await conn.execute(
                "INSERT INTO yim_keys (name, value) VALUES ('token', $1) ON CONFLICT (name) DO NOTHING", candidate
            )
            key: bytes = await conn.fetchval("SELECT value FROM yim_keys WHERE name = 'token'")
        return bytes(key)

    async def close(self) -> None:
        await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def stats(self) -> dict[str, int]:
        w = self._writer
        return {
            "batches": w.batches,
            "jobs": w.jobs_done,
            "retries": w.retries,
            "declared_conflicts": w.declared_conflicts,
        }

    # Concept stores (relations, ...) run their own jobs through these two.
    def write(self, fn: Job, *args: Any, anchors: Anchors | None) -> asyncio.Future[Any]:
        """Run ``await fn(conn, *args)`` in the next batch, inside a savepoint of its own.
        ``anchors``: every conversation and user row the job may lock (postgres_locks);
        ``None`` for a job that cannot tell before it runs — it gets a transaction alone."""
        _require_async(fn)
        return self._writer.submit(fn, args, anchors=anchors)

    async def read(self, fn: Job, *args: Any) -> Any:
        """Run ``await fn(conn, *args)`` in one repeatable-read, read-only transaction."""
        _require_async(fn)
        pool = self._readers()
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                return await fn(conn, *args)
        except CONNECTION_LOST as exc:
            raise YimError("unavailable", f"store unreachable: {exc}") from None

    async def read1(self, fn: Job, *args: Any) -> Any:
        """Run ``await fn(conn, *args)`` outside a transaction (single-statement reads)."""
        pool = self._readers()
        try:
            async with pool.acquire() as conn:
                return await fn(conn, *args)
        except CONNECTION_LOST as exc:
            raise YimError("unavailable", f"store unreachable: {exc}") from None

    def _readers(self) -> asyncpg.Pool:
        if self._pool is None:
            raise YimError("unavailable", "the store is closed")
        return self._pool

    # accounts
    async def create_user(self, user: UserRec) -> UserRec:
        # Alone: its username claim is the one row two nodes may both wait for.
        return await self.write(_create_user, user, anchors=None)

    async def user_by_name(self, username: str) -> UserRec | None:
        async def q(conn: asyncpg.Connection) -> UserRec | None:
            r = await conn.fetchrow(
                "SELECT u.id, u.username, u.display_name, u.password_hash, u.created_at, u.avatar_media_id"
                " FROM usernames n JOIN users u ON u.id = n.user_id WHERE n.username_key = $1 AND u.erased_at IS NULL",
                _ascii_fold(username),
            )
            return UserRec(*r) if r else None

        return await self.read1(q)

    async def users_by_ids(self, ids: list[int]) -> dict[int, UserRec]:
        if not ids:
            return {}

        async def q(conn: asyncpg.Connection) -> dict[int, UserRec]:
            rows = await conn.fetch(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY ($1) AND erased_at IS NULL",
                ids,
            )
            return {r[0]: UserRec(*r) for r in rows}

        return await self.read1(q)

    # sessions
    async def create_session(self, session: SessionRec, device_name: str) -> list[str]:
        anchors = Anchors(users=(session.user_id,))  # guards the user's session and device rows
        return await self.write(_create_session, session, device_name, anchors=anchors)

    async def get_session(self, session_id: str) -> SessionRec | None:
        async def q(conn: asyncpg.Connection) -> SessionRec | None:
            r = await conn.fetchrow(
                "SELECT id, user_id, device_id, platform, created_at, expires_at, revoked_at FROM sessions WHERE id=$1",
                session_id,
            )
            return SessionRec(*r) if r else None

        return await self.read1(q)

    async def revoke_sessions(
        self, user_id: int, *, device_id: str | None = None, session_id: str | None = None, now: int
    ) -> list[str]:
        anchors = Anchors(users=(user_id,))
        return await self.write(_revoke, user_id, device_id, session_id, now, anchors=anchors)

    async def list_devices(self, user_id: int) -> list[DeviceRec]:
        async def q(conn: asyncpg.Connection) -> list[DeviceRec]:
            rows = await conn.fetch(
                "SELECT d.user_id, d.device_id, d.platform, d.name, d.created_at, d.last_seen_at, d.acked_seq"
                " FROM devices d WHERE d.user_id=$1 AND EXISTS (SELECT 1 FROM sessions s WHERE s.user_id=d.user_id"
                " AND s.device_id=d.device_id AND s.revoked_at IS NULL) ORDER BY d.last_seen_at DESC",
                user_id,
            )
            return [DeviceRec(*r) for r in rows]

        return await self.read1(q)

    async def touch_devices(self, seen: list[tuple[int, str, int, int]]) -> None:
        if seen:
            await self.write(_touch_devices, seen, anchors=NO_ANCHORS)

    # messages
    def is_service_conv(self, conv_id: int | None) -> bool:
        """Known to be a customer-service conversation (a conversation's type never changes)."""
        return conv_id in self._writer.service_convs

    def send_message(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        if cmd.shop_id is not None or cmd.conv_id in self._writer.service_convs:
            # Customer service: routing decisions in Python, in the same batch.
            return self._writer.submit(_service_send, (cmd, self.service))
        if cmd.reply_to is not None:
            # A reply checks and snapshots its quote in its own transaction, after the prelude
            # locked its conversation: serialised with joins and recalls there (§2.1).
            return self.write(_send_reply, cmd, self.service, anchors=send_anchors(cmd))
        return self._writer.submit(None, timeline.send_args(cmd), cmd, send_anchors(cmd))

    async def mark_read(self, user_id: int, conv_id: int, seq: int, now: int) -> ReadRes:
        anchors = Anchors(read_convs=(conv_id,), users=(user_id,), peers_of=((user_id, conv_id),))
        return await self.write(timeline.mark_read, user_id, conv_id, seq, now, anchors=anchors)

    async def recall(self, conv_id: int, actor_id: int, seq: int, msg_id: int, now: int, limit_ms: int) -> SendResult:
        anchors = Anchors(convs=(conv_id,), members_of=(conv_id,), users=(actor_id,))
        return await self.write(timeline.recall, conv_id, actor_id, seq, msg_id, now, limit_ms, anchors=anchors)

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
        # As a recall: the conversation exclusively (message rows, the append), its members'
        # inboxes, the actor.
        anchors = Anchors(convs=(conv_id,), members_of=(conv_id,), users=(actor_id,))
        return await self.write(
            edits.edit, conv_id, actor_id, seq, body, mentions, msg_id, now, window_ms, anchors=anchors
        )

    async def message_versions(self, user_id: int, conv_id: int, seq: int) -> list[tuple[bytes, int]]:
        return await self.read1(edits.read_versions, user_id, conv_id, seq)

    async def hide(self, user_id: int, conv_id: int, seqs: list[int], now: int) -> tuple[list[int], ReadRes]:
        # Only the user's own rows: hidden_messages and one inbox event, both under the user's anchor.
        return await self.write(hidden.hide, user_id, conv_id, seqs, now, anchors=Anchors(users=(user_id,)))

    async def sync(self, user_id: int, since: int, limit: int) -> tuple[list[InboxEvent], int]:
        return await self.read1(timeline.read_sync, user_id, since, limit)

    async def inbox_head(self, user_id: int) -> int:
        async def q(conn: asyncpg.Connection) -> int:
            return await conn.fetchval("SELECT inbox_seq FROM users WHERE id=$1", user_id) or 0

        return await self.read1(q)

    async def history(
        self, user_id: int, conv_id: int, before: int | None, after: int | None, limit: int
    ) -> tuple[list[MessageRec], bool]:
        return await self.read1(timeline.read_history, user_id, conv_id, before, after, limit)

    async def conversations(
        self, user_id: int, before: int | None, limit: int, conv_id: int | None = None
    ) -> tuple[list[ConvRow], int]:
        return await self.read1(timeline.read_conversations, user_id, before, limit, conv_id)

    async def receipts(self, conv_id: int, viewer_id: int, seq: int) -> tuple[list[int], int]:
        return await self.read(groups.receipts, conv_id, viewer_id, seq)

    # groups
    async def create_group(self, cmd: CreateGroupCmd) -> GroupChange:
        anchors = Anchors(convs=(cmd.conv_id,), users=(cmd.owner_id, *cmd.member_ids))
        return await self.write(groups.create_group, cmd, anchors=anchors)

    async def add_members(
        self, conv_id: int, actor_id: int, user_ids: list[int], via: str, msg_id: int, now: int, threshold: int
    ) -> GroupChange:
        anchors = _group_anchors(conv_id, actor_id, *user_ids)
        return await self.write(
            groups.add_members, conv_id, actor_id, user_ids, via, msg_id, now, threshold, anchors=anchors
        )

    async def remove_member(self, conv_id: int, actor_id: int, user_id: int, msg_id: int, now: int) -> GroupChange:
        anchors = _group_anchors(conv_id, actor_id, user_id)
        return await self.write(groups.remove_member, conv_id, actor_id, user_id, msg_id, now, anchors=anchors)

    async def set_role(
        self, conv_id: int, actor_id: int, user_id: int, role: str, msg_id: int, now: int
    ) -> GroupChange:
        anchors = _group_anchors(conv_id, actor_id, user_id)
        return await self.write(groups.set_role, conv_id, actor_id, user_id, role, msg_id, now, anchors=anchors)

    async def mute_member(
        self, conv_id: int, actor_id: int, user_id: int, until: int, msg_id: int, now: int
    ) -> GroupChange:
        anchors = _group_anchors(conv_id, actor_id, user_id)
        return await self.write(groups.mute_member, conv_id, actor_id, user_id, until, msg_id, now, anchors=anchors)

    async def update_group(
        self, conv_id: int, actor_id: int, changes: dict[str, object], msg_id: int, now: int
    ) -> GroupChange:
        anchors = _group_anchors(conv_id, actor_id)
        return await self.write(groups.update_group, conv_id, actor_id, changes, msg_id, now, anchors=anchors)

    async def dissolve_group(self, conv_id: int, actor_id: int, msg_id: int, now: int) -> GroupChange:
        anchors = Anchors(convs=(conv_id,), users=(actor_id,), all_members_of=(conv_id,))
        return await self.write(groups.dissolve_group, conv_id, actor_id, msg_id, now, anchors=anchors)

    async def group_info(self, conv_id: int, viewer_id: int) -> GroupRec:
        return await self.read(groups.group_info, conv_id, viewer_id)

    async def group_members(self, conv_id: int, viewer_id: int, after: int, limit: int) -> list[MemberRec]:
        return await self.read(groups.group_members, conv_id, viewer_id, after, limit)

    async def quotable(self, conv_id: int, user_id: int, seqs: list[int]) -> Quotable:
        return await self.read1(timeline.read_quotable, conv_id, user_id, seqs)

    async def member_ids(self, conv_id: int) -> list[int]:
        return await self.read1(timeline.member_ids, conv_id)

    async def read_groups(self, user_id: int) -> list[GroupHead]:
        return await self.read1(groups.read_groups, user_id)

    async def max_msg_id(self) -> int:
        async def q(conn: asyncpg.Connection) -> int:
            # Users, conversations and messages all take ids from the same generator.
            return await conn.fetchval(
                "SELECT GREATEST((SELECT COALESCE(MAX(msg_id), 0) FROM messages),"
                " (SELECT COALESCE(MAX(id), 0) FROM conversations), (SELECT COALESCE(MAX(id), 0) FROM users))"
            )

        return await self.read1(q)


def _group_anchors(conv_id: int, *users: int) -> Anchors:
    """A group change: the group, its write fan-out members, and the users it names (who may
    get the entry in their inbox even in a read fan-out group)."""
    return Anchors(convs=(conv_id,), members_of=(conv_id,), users=users)


async def _service_send(conn: asyncpg.Connection, cmd: SendCmd, service: Any) -> SendResult:
    """A send known to go to customer service (a shop, a service conversation): routing."""
    # Idempotency first, as for every send: a retried client_msg_id returns the original.
    duplicate = await timeline.find_duplicate(conn, cmd.sender_id, cmd.client_msg_id)
    if duplicate is not None:
        return duplicate
    return await send_job(conn, cmd, service, routed=True)


async def _send_reply(conn: asyncpg.Connection, cmd: SendCmd, service: Any) -> SendResult:
    """A send with ``reply_to`` as a declared-anchors job: idempotency, then the quoted
    message checked and snapshotted (rules/quotes.py) in this transaction, then ``yim_send``."""
    duplicate = await timeline.find_duplicate(conn, cmd.sender_id, cmd.client_msg_id)
    if duplicate is not None:
        return duplicate
    return await send_job(conn, cmd, service)


# --- account jobs (run by the writer, inside a savepoint) ----------------------------------------


async def _create_user(conn: asyncpg.Connection, u: UserRec) -> UserRec:
    inserted = await conn.fetchval(
        "INSERT INTO usernames (username_key, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING user_id",
        _ascii_fold(u.username),
        u.id,
    )
    if inserted is None:
        raise YimError("username_taken", f"username {u.username!r} is taken")
    await conn.execute(
        "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES ($1,$2,$3,$4,$5)",
        u.id,
        u.username,
        u.display_name,
        u.password_hash,
        u.created_at,
    )
    return u


async def _create_session(conn: asyncpg.Connection, s: SessionRec, device_name: str) -> list[str]:
    admin_rules.may_sign_in(await conn.fetchval("SELECT disabled_at FROM users WHERE id=$1", s.user_id))
    superseded = [
        r[0]
        for r in await conn.fetch(
            "UPDATE sessions SET revoked_at=$3 WHERE user_id=$1 AND device_id=$2 AND revoked_at IS NULL RETURNING id",
            s.user_id,
            s.device_id,
            s.created_at,
        )
    ]
    await conn.execute(
        "INSERT INTO sessions (id, user_id, device_id, platform, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6)",
        s.id,
        s.user_id,
        s.device_id,
        s.platform,
        s.created_at,
        s.expires_at,
    )
    await conn.execute(
        "INSERT INTO devices (user_id, device_id, platform, name, created_at, last_seen_at) VALUES ($1,$2,$3,$4,$5,$5)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET platform=excluded.platform, name=excluded.name,"
        " last_seen_at=excluded.last_seen_at",
        s.user_id,
        s.device_id,
        s.platform,
        device_name,
        s.created_at,
    )
    return sorted(superseded)


async def _revoke(
    conn: asyncpg.Connection, user_id: int, device_id: str | None, session_id: str | None, now: int
) -> list[str]:
    rows = await conn.fetch(
        "UPDATE sessions SET revoked_at=$4 WHERE user_id=$1 AND revoked_at IS NULL"
        " AND ($2::text IS NULL OR device_id=$2) AND ($3::text IS NULL OR id=$3) RETURNING id",
        user_id,
        device_id,
        session_id,
        now,
    )
    return sorted(r[0] for r in rows)


async def _touch_devices(conn: asyncpg.Connection, seen: list[tuple[int, str, int, int]]) -> None:
    # One statement that never waits: a row another transaction holds (a login of that
    # device on another node) is skipped — last-seen times are advisory and rewritten by a
    # later flush — so this job takes no lock anyone can wait for (postgres_locks).
    await conn.execute(
        "WITH s AS (SELECT d.user_id, d.device_id, s.ts, s.acked"
        " FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS s(uid, did, ts, acked)"
        " JOIN devices d ON d.user_id=s.uid AND d.device_id=s.did FOR NO KEY UPDATE OF d SKIP LOCKED)"
        " UPDATE devices d SET last_seen_at=GREATEST(d.last_seen_at, s.ts), acked_seq=GREATEST(d.acked_seq, s.acked)"
        " FROM s WHERE d.user_id=s.user_id AND d.device_id=s.device_id",
        [r[0] for r in seen],
        [r[1] for r in seen],
        [r[2] for r in seen],
        [r[3] for r in seen],
    )
