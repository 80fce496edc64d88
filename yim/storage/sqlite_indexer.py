"""The search indexer of the embedded store: its own database file, its own thread.

Why apart: indexing a message (JSON → text, the trigram tokenizer, FTS5 segment writes)
cost about a third of the writer thread's time per message when it ran inside the message
transaction, and the writer thread is what bounds one-to-one throughput. Here it runs on
another thread, against another file (so it never takes the store's write lock), in
batches of everything waiting — large batches are also where FTS5 is cheapest per row.

Flow: the writer collects ``(msg_id, kind, body)`` of each text / file message it appends
(and ``(msg_id, None, None)`` for each recall) and hands the list over right after its
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
list per commit and the indexer takes everything waiting each turn, so it holds the bodies
of the messages committed during one indexing transaction (a few ms of traffic).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from importlib import resources
from typing import Any

import msgspec

from yim.ids.snowflake import NODE_BITS, SEQ_BITS
from yim.protocol.errors import YimError

log = logging.getLogger("yim.storage.indexer")

#: Ten minutes of Snowflake ids (a msg_id is its millisecond shifted past node and seq bits).
MARGIN_IDS = (10 * 60 * 1000) << (NODE_BITS + SEQ_BITS)
#: Message kinds whose text is indexed (a text's text, a file's name).
INDEXED_KINDS = ("text", "file")
_REBUILD_PAGE = 5_000

#: One index change: (msg_id, kind, body) adds a message; (msg_id, None, None) removes it.
IndexOp = tuple[int, str | None, bytes | str | None]

_body_decoder = msgspec.json.Decoder(dict[str, Any])


def indexed_text(kind: str, body: bytes | str) -> str | None:
    """The text search finds a message by: a text's text, a file's name."""
    try:
        decoded = _body_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    value = decoded.get("text" if kind == "text" else "name")
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
            conn = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.executescript(resources.files("yim.storage").joinpath("search_sqlite.sql").read_text())
            self._catch_up(conn)
        except BaseException as exc:  # surfaced to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ops: list[IndexOp] = []
            barriers: list[tuple[asyncio.Future[None], asyncio.AbstractEventLoop]] = []
            for item in items:
                if item is self._STOP:
                    stopping = True
                elif isinstance(item, list):
                    ops.extend(item)
                else:
                    barriers.append(item)
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

    def _apply(self, conn: sqlite3.Connection, ops: list[IndexOp]) -> None:
        adds, removes = [], []
        for msg_id, kind, body in ops:
            if kind is None:
                removes.append((msg_id,))
            elif body is not None:
                text = indexed_text(kind, body)
                if text is not None:
                    adds.append((msg_id, text))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if adds:
                conn.executemany("INSERT OR IGNORE INTO search_text (msg_id, text) VALUES (?,?)", adds)
                conn.execute(
                    "INSERT INTO search_state (name, value) VALUES ('indexed_upto', ?) ON CONFLICT (name)"
                    " DO UPDATE SET value = max(value, excluded.value)",
                    (max(a[0] for a in adds),),
                )
            if removes:
                conn.executemany("DELETE FROM search_text WHERE msg_id=?", removes)
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
                    " WHERE msg_id > ? AND kind IN ('text', 'file', 'recall') ORDER BY msg_id LIMIT ?",
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
