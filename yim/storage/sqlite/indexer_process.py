"""The search index file (:class:`IndexFile`: open, apply, catch-up, used by the indexer
thread too) and the indexer process's main: ``python -m yim.storage.sqlite.indexer_process
STORE INDEX SYNCHRONOUS BASE DATA_FD WAKE_FD RESULTS_FD``, started by
:class:`yim.storage.sqlite.indexer.ProcessIndexer` (never by hand). This module imports
little (no asyncio, nor the store interface): its imports are the child's memory.

It opens the index file, catches up from the store (read-only), answers
``("ready", BASE, indexed, batches)`` and then applies the batches the node sends on
DATA_FD, ``(number, ops)``, gathering for at most ``GATHER_S`` or ``GATHER_OPS`` changes
per transaction unless a byte on WAKE_FD says a search waits. After each transaction it
answers ``("ack", number, indexed, batches, failure)``: every batch up to that number is in
the index. Log lines go to the node as ``("log", level, text)``.

It ends once the node closes DATA_FD — to stop it after the writer's last batch, or by
dying (SIGKILL included: the kernel closes the node's end) — committing what came first, or
when the node is no longer its parent. It ignores SIGINT and SIGTERM: the node stops the
indexer itself, after its last batch, and those reach it with the node's own — a Ctrl-C in
a terminal goes to the whole process group, and ``systemctl stop`` signals every process of
the unit unless ``KillMode=mixed`` (dying of it, the indexer would be restarted by a node
that is stopping, with an error line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import sqlite3
import sys
import time
from importlib import resources
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from yim.ids.snowflake import NODE_BITS, SEQ_BITS

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


class IndexFile:
    """The index database and what writes it: used by the indexer thread or process alone."""

    def __init__(self, store_path: str, index_path: str, synchronous: str) -> None:
        self.store_path = store_path
        self.index_path = index_path
        self._synchronous = synchronous
        self.indexed = 0  # messages added since this indexer started (catch-up included)
        self.batches = 0
        self.notes: list[str] = []  # what the node should log (a child process has no log config)

    def open(self) -> sqlite3.Connection:
        """The index file, made anew if it is missing or of another layout (derived data)."""
        for _attempt in range(2):
            conn = sqlite3.connect(self.index_path, isolation_level=None)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0]
            if version == INDEX_VERSION or tables == 0:
                break
            conn.close()
            self.notes.append(f"search index: {self.index_path} has layout {version}, not {INDEX_VERSION}; rebuilt")
            for suffix in ("", "-wal", "-shm"):
                Path(self.index_path + suffix).unlink(missing_ok=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.executescript(resources.files("yim.storage.sqlite").joinpath("search_sqlite.sql").read_text())
        conn.execute(f"PRAGMA user_version = {INDEX_VERSION}")
        return conn

    def apply(self, conn: sqlite3.Connection, ops: list[IndexOp]) -> None:
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
                # A restart's catch-up can offer a message twice (it overlaps what the pipe or
                # queue still brings): skip what is there.
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

    def catch_up(self, conn: sqlite3.Connection) -> None:
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
                self.apply(conn, ops)
                after = page[-1][0]
        finally:
            store.close()
        if self.indexed - before:
            self.notes.append(
                f"search index: caught up {self.indexed - before} messages in {time.monotonic() - started:.1f} s"
            )


#: How often an idle indexer checks that its node is still its parent.
PARENT_CHECK_S = 1.0


def _run(index: IndexFile, base: int, data: Connection, wake: Connection, results: Connection) -> None:
    parent = os.getppid()

    def tell(*msg: Any) -> None:
        results.send(msg)

    def flush_notes() -> None:
        for note in index.notes:
            tell("log", logging.INFO, note)
        index.notes.clear()

    try:
        conn = index.open()
        index.catch_up(conn)
    except Exception as exc:  # reported to the node, which raises it at start
        flush_notes()
        tell("failed", f"{type(exc).__name__}: {exc}")
        return
    flush_notes()
    tell("ready", base, index.indexed, index.batches)
    done = base
    stopping = False
    # One selector for the life of the process: multiprocessing's wait() builds one per call
    # (~8 us, against ~1), and the loop asks two or three times per batch the writer sends.
    selector = selectors.DefaultSelector()
    selector.register(data.fileno(), selectors.EVENT_READ, data)
    selector.register(wake.fileno(), selectors.EVENT_READ, wake)
    os.set_blocking(wake.fileno(), False)

    def readable(timeout: float) -> list[Connection]:
        return [key.data for key, _events in selector.select(timeout)]

    while not stopping:
        ready = readable(PARENT_CHECK_S)
        if not ready:
            if os.getppid() != parent:  # the node is gone, whatever happened to the pipe
                break
            continue
        ops: list[IndexOp] = []
        last = done
        urgent = False
        deadline = time.monotonic() + GATHER_S
        while True:
            if wake in ready:
                # Wake-ups carry nothing: read whatever is there, whole frames or not.
                with contextlib.suppress(BlockingIOError):
                    if not os.read(wake.fileno(), 65536):
                        raise EOFError  # the node is gone
                urgent = True
            if data in ready:
                try:
                    item = data.recv()
                except EOFError:  # the node stops us or went away: keep what came, then end
                    stopping = True
                    selector.unregister(data.fileno())
                else:
                    last, batch = item
                    ops.extend(batch)
            if stopping or len(ops) >= GATHER_OPS:
                break
            # Gather a larger batch unless a search waits: FTS5 costs ~25 us a row in
            # batches of 10, ~6 in 5,000. What is already in the pipe is taken first, so a
            # search's barrier (sent after its batches) finds them here.
            ready = readable(0)
            if ready:
                continue
            left = deadline - time.monotonic()
            if urgent or left <= 0:
                break
            ready = readable(left)
            if not ready:
                break
        failure = None
        if ops:
            try:
                index.apply(conn, ops)
            except sqlite3.Error as exc:
                # The store is intact; the index misses these until the next catch-up.
                failure = str(exc)
                tell("log", logging.ERROR, f"search index write failed ({len(ops)} changes; rebuilt on restart): {exc}")
        if last > done or urgent:
            done = max(done, last)
            tell("ack", done, index.indexed, index.batches, failure)
    conn.close()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops it (the module docstring)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store_path, index_path, synchronous, base, data_fd, wake_fd, results_fd = argv
    data = Connection(int(data_fd), writable=False)
    wake = Connection(int(wake_fd), writable=False)
    results = Connection(int(results_fd), readable=False)
    try:
        _run(IndexFile(store_path, index_path, synchronous), int(base), data, wake, results)
    except (BrokenPipeError, EOFError):
        pass  # the node is gone: nobody to tell


if __name__ == "__main__":
    main(sys.argv[1:])
