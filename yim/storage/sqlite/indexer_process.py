"""The search indexer process: ``python -m yim.storage.sqlite.indexer_process STORE INDEX
SYNCHRONOUS BASE DATA_FD WAKE_FD RESULTS_FD``, started by
:class:`yim.storage.sqlite.indexer.SearchIndexer` (never by hand).

It opens the index file, catches up from the store (read-only), answers
``("ready", BASE, indexed, batches)`` and then applies the batches the node sends on
DATA_FD, ``(number, ops)``, gathering for at most ``GATHER_S`` or ``GATHER_OPS`` changes
per transaction unless a byte on WAKE_FD says a search waits. After each transaction it
answers ``("ack", number, indexed, batches, failure)``: every batch up to that number is in
the index. Log lines go to the node as ``("log", level, text)``.

It ends once the node closes DATA_FD — to stop it after the writer's last batch, or by
dying (SIGKILL included: the kernel closes the node's end) — committing what came first, or
when the node is no longer its parent. It ignores SIGINT: a Ctrl-C in a terminal reaches the
whole process group, and the node stops the indexer itself, after its last batch.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from yim.storage.sqlite.indexer import GATHER_OPS, GATHER_S, IndexFile, IndexOp

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
    while not stopping:
        ready = wait([data, wake], timeout=PARENT_CHECK_S)
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
                while wake.poll(0):
                    wake.recv_bytes()
                urgent = True
            if data in ready:
                try:
                    item = data.recv()
                except EOFError:  # the node stops us or went away: keep what came, then end
                    stopping = True
                else:
                    last, batch = item
                    ops.extend(batch)
            if stopping or len(ops) >= GATHER_OPS:
                break
            # Gather a larger batch unless a search waits: FTS5 costs ~25 us a row in
            # batches of 10, ~6 in 5,000. What is already in the pipe is taken first, so a
            # search's barrier (sent after its batches) finds them here.
            ready = wait([data, wake], timeout=0)
            if ready:
                continue
            left = deadline - time.monotonic()
            if urgent or left <= 0:
                break
            ready = wait([data, wake], timeout=left)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
