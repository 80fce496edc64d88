"""The search indexer of the embedded store: its own database file, its own thread.

Why apart: indexing a message (JSON → text, the trigram tokenizer, FTS5 segment writes)
cost about a third of the writer thread's time per message when it ran inside the message
transaction, and the writer thread is what bounds one-to-one throughput. Here it runs on
another thread, against another file (so it never takes the store's write lock), in
batches of everything waiting — large batches are also where FTS5 is cheapest per row.

Flow: the writer collects ``(msg_id, kind, body)`` of each text / file message it appends
(and ``(msg_id, None, None)`` for each recall; both, the second with the new text, for each
edit) and hands the list over right after its
COMMIT, before any future is resolved. The indexer applies everything waiting in one
transaction.

Invariants:
- *Read your writes*: a search first waits for a barrier queued behind every list handed
  over so far (:meth:`SearchIndexer.barrier`), so a message ACKed before a search is found
  by it, and a recalled one is gone.
- *Nothing lost across a crash*: lists still queued die with the process. ``indexed_upto``
  (the highest msg_id indexed) is stored with each batch; on start the indexer re-reads the
  messages from ``MARGIN_IDS`` below it — msg_ids are taken a few milliseconds before their
  commit, far less than the ten-minute margin — and adds what is missing, removes what was
  recalled. A missing index file is rebuilt from ``messages`` the same way.

Memory: the queue is unbounded by type and bounded in practice: the writer hands over one
list per commit and the indexer takes everything waiting, gathering for at most
``GATHER_S`` or ``GATHER_OPS`` changes, so it holds the bodies of about 50 ms of text
traffic (≈ 1 MB at 10,000 messages/s).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from yim.ids.snowflake import NODE_BITS, SEQ_BITS
from yim.protocol.errors import YimError

log = logging.getLogger("yim.storage.indexer")

#: Ten minutes of Snowflake ids (a msg_id is its millisecond shifted past node and seq bits).
MARGIN_IDS = (10 * 60 * 1000) << (NODE_BITS + SEQ_BITS)
#: Message kinds whose text is indexed (a text's text, a file's name, a custom message's text fallback).
INDEXED_KINDS = ("text", "file", "custom")
_REBUILD_PAGE = 5_000
#: The layout of the index file (its PRAGMA user_version); another one is rebuilt.
INDEX_VERSION = 2
#: How long the indexer gathers changes into one transaction, and how many are enough. A
#: search never waits for it: its barrier ends the gathering at once.
GATHER_S = 0.05
GATHER_OPS = 5_000

#: One index change: (msg_id, kind, body) adds a message; (msg_id, None, None) removes it.
IndexOp = tuple[int, str | None, bytes | str | None]

_body_decoder = msgspec.json.Decoder(dict[str, Any])


def indexed_text(kind: str, body: bytes | str) -> str | None:
    """The text search finds a message by: a text's text, a file's name, a custom message's text."""
    try:
        decoded = _body_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    value = decoded.get("name" if kind == "file" else "text")
    return value if isinstance(value, str) and value else None


class SearchIndexer:
    _STOP = object()

    def __init__(self, store_path: str, index_path: str, synchronous: str) -> None:
        self.store_path = store_path
        self.index_path = index_path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="yim-sqlite-indexer", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.stopped = False
        self.indexed = 0  # messages added since start (rebuild included)
        self.batches = 0

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
        """Hand over the index changes of one committed batch (from the writer thread)."""
        self._queue.put(ops)

    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once every change handed over before this call is committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self.stopped:
            fut.set_exception(YimError("unavailable", "the store is closed"))
        else:
            self._queue.put((fut, loop))
        return fut

    # --- the indexer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._open_index()
            self._catch_up(conn)
        except BaseException as exc:  # surfaced to start()
            self._startup_error = exc
            self._ready.set()
            return
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
            failure: BaseException | None = None
            if ops:
                try:
                    self._apply(conn, ops)
                except sqlite3.Error as exc:
                    # The store is intact; the index misses these until the next start's
                    # catch-up. Say so loudly and keep serving.
                    log.error("search index write failed (%d changes; rebuilt on restart): %s", len(ops), exc)
                    failure = exc
            for fut, loop in barriers:
                try:
                    loop.call_soon_threadsafe(_resolve, fut, failure)
                except RuntimeError:  # the loop closed: nobody waits any more
                    pass
        conn.close()

    def _open_index(self) -> sqlite3.Connection:
        """The index file, made anew if it is missing or of another layout (derived data)."""
        for _attempt in range(2):
            conn = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0]
            if version == INDEX_VERSION or tables == 0:
                break
            conn.close()
            log.info("search index: %s has layout %d, not %d; rebuilding it", self.index_path, version, INDEX_VERSION)
            for suffix in ("", "-wal", "-shm"):
                Path(self.index_path + suffix).unlink(missing_ok=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.executescript(resources.files("yim.storage.sqlite").joinpath("search_sqlite.sql").read_text())
        conn.execute(f"PRAGMA user_version = {INDEX_VERSION}")
        return conn

    def _apply(self, conn: sqlite3.Connection, ops: list[IndexOp]) -> None:
        adds: dict[int, str] = {}
        removes = []
        for msg_id, kind, body in ops:
            if kind is None:
                removes.append((msg_id,))
                adds.pop(msg_id, None)
            elif body is not None:
                text = indexed_text(kind, body)
                if text is not None:
                    adds[msg_id] = text
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Removals first: an edit hands over (msg_id, None, None) then the new text of the
            # same msg_id, whose old row must be gone before the new one goes in.
            if removes:
                conn.executemany("DELETE FROM message_fts WHERE rowid=?", removes)
            if adds:
                # Only a restart's catch-up can offer a message twice: skip what is there.
                ids = list(adds)
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    for (present,) in conn.execute(f"SELECT rowid FROM message_fts WHERE rowid IN ({marks})", chunk):
                        del adds[present]
                conn.executemany("INSERT INTO message_fts (rowid, text) VALUES (?,?)", adds.items())
                conn.execute(
                    "INSERT INTO search_state (name, value) VALUES ('indexed_upto', ?) ON CONFLICT (name)"
                    " DO UPDATE SET value = max(value, excluded.value)",
                    (max(ids),),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.indexed += len(adds)
        self.batches += 1

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Index what the store committed past ``indexed_upto - MARGIN_IDS`` (everything,
        for a new index file); drop what was recalled since."""
        row = conn.execute("SELECT value FROM search_state WHERE name = 'indexed_upto'").fetchone()
        after = row[0] - MARGIN_IDS if row else -1
        started, before = time.monotonic(), self.indexed
        store = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, isolation_level=None)
        try:
            while True:
                page = store.execute(
                    "SELECT msg_id, kind, body, recalled FROM messages"
                    " WHERE msg_id > ? AND kind IN ('text', 'file', 'custom', 'recall', 'edit')"
                    " ORDER BY msg_id LIMIT ?",
                    (after, _REBUILD_PAGE),
                ).fetchall()
                if not page:
                    break
                ops: list[IndexOp] = []
                for msg_id, kind, body, recalled in page:
                    if kind == "recall":  # the recalled message may be older than the margin
                        target = _body_decoder.decode(body).get("msg_id")
                        if target is not None:
                            ops.append((int(target), None, None))
                    elif kind == "edit":  # the edited message may be older than the margin
                        edit = _body_decoder.decode(body)
                        target, text = edit.get("msg_id"), edit.get("body")
                        if target is not None and isinstance(text, dict):
                            ops.append((int(target), None, None))
                            ops.append((int(target), "text", msgspec.json.encode(text)))
                    elif recalled:
                        ops.append((msg_id, None, None))
                    else:
                        ops.append((msg_id, kind, body))
                self._apply(conn, ops)
                after = page[-1][0]
        finally:
            store.close()
        if self.indexed - before:
            log.info("search index: caught up %d messages in %.1f s", self.indexed - before, time.monotonic() - started)


def _resolve(fut: asyncio.Future[None], failure: BaseException | None) -> None:
    if fut.cancelled():
        return
    if failure is not None:
        fut.set_exception(YimError("unavailable", f"search index write failed: {failure}"))
    else:
        fut.set_result(None)
