"""What the SQLite writer thread remembers between jobs, to run fewer statements.

Why: every statement the writer runs costs far more than its SQLite work — the GIL is let
go and taken back around it, and a busy event loop takes it in between — so the writer's
throughput is set by statements per message more than by rows. A direct message took 12
statements; with this memory it takes 4 (idempotency check, message row, inbox rows, the
sender's read marker), plus a share of two ``executemany`` per batch.

What is remembered, and the invariant that keeps each one right:

- ``blockers`` ⊇ every user with a row in ``blocks`` (as the one who blocks), and
  ``friends_only`` ⊇ every user whose ``dm_policy`` is 'friends': filled at start, added
  to by the jobs *before* they write the row, never shrunk. A stale member (unblocked
  since, or a rolled-back block) only costs the lookup it would have cost anyway.
- ``direct_pairs``: user pair -> conversation id, filled only from rows the writer read.
  A rolled-back transaction could have created a pair it saw, so every rollback clears it.
  Bounded at ``PAIRS_MAX`` entries (≈ 150 bytes each, ≈ 10 MB), cleared when full.
- Heads — each user's inbox seq and each conversation's last seq (with what the same row
  says about fan-out and mentions): allocated here instead of by ``UPDATE … RETURNING``,
  and written back with one ``executemany`` per table before the batch commits
  (:meth:`flush`). They are only *used* while ``active``, which the writer sets for the
  jobs that only append messages (``send_message``); before any other job it flushes, and
  after it forgets them, because those jobs read and write the same columns in SQL. A
  rollback forgets everything that was not committed. So between jobs the table and the
  memory agree, and inside a batch only appending jobs ever see the memory.
- Rows of appended messages (``pending_messages``, ``pending_inbox``, ``pending_reads``:
  the sender's read marker): written by the same :meth:`flush`, one ``executemany`` per
  table, instead of three statements per message. Appending jobs read none of these
  tables except for idempotency, which ``pending_sends`` answers for the rows not written
  yet; every other job runs after a flush.
- ``index_ops``: the search index changes of the batch's jobs, handed to the indexer
  thread after COMMIT (yim/storage/sqlite/indexer.py); a rollback drops them with the
  rows they describe.
- ``members``: the current members of write-fan-out groups that appending jobs sent to,
  loaded on first use. Membership changes only in jobs that are not appending (joins,
  leaves, removals, dissolves, customer service), and after every such job the writer
  forgets the heads and these lists with them. Bounded by ``MEMBER_IDS_MAX`` ids in all
  (≈ 20 MB), dropped when past it. Why: reading a 100-member group's roster is a hundred
  SQLite steps, each a GIL hand-off, per message.
- ``allocations`` counts heads handed out: a job that fails after taking one has changed
  the transaction's outcome even if it wrote no row, so the writer must not keep the batch
  as if the job never ran (see ``_WriterThread._run_optimistic``).
- ``inbox_rows`` counts the inbox rows flushed: the writer's measure of a batch's fan-out,
  which decides where the next sends run (loop batches, yim/storage/sqlite/store.py).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from yim.protocol.errors import YimError
from yim.storage.records import SendResult
from yim.storage.sqlite.indexer import IndexOp
from yim.storage.sqlite.rows import MESSAGE_COLUMNS, member_ids


class ConvHead:
    """The allocation state of one conversation row while it lives in the writer's memory."""

    __slots__ = ("fanout", "last_msg_id", "last_seq", "mention_all_seq", "updated_at")

    def __init__(self, last_seq: int, fanout: str, mention_all_seq: int, last_msg_id: int, updated_at: int) -> None:
        self.last_seq = last_seq
        self.fanout = fanout
        self.mention_all_seq = mention_all_seq
        self.last_msg_id = last_msg_id
        self.updated_at = updated_at


class WriterMemory:
    PAIRS_MAX = 65_536
    #: Heads kept between batches; past this they are dropped after a flush (≈ 100 bytes
    #: per inbox head, ≈ 250 per conversation head: ≈ 20 MB at the limits).
    HEADS_MAX = 65_536
    MEMBER_IDS_MAX = 500_000

    __slots__ = (
        "absent_keys",
        "active",
        "allocations",
        "blockers",
        "conv_heads",
        "direct_pairs",
        "dirty_convs",
        "dirty_users",
        "friends_only",
        "inbox_heads",
        "inbox_rows",
        "index_ops",
        "member_ids_held",
        "members",
        "pending_inbox",
        "pending_messages",
        "pending_reads",
        "pending_sends",
    )

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.blockers: set[int] = {r[0] for r in conn.execute("SELECT DISTINCT user_id FROM blocks")}
        self.friends_only: set[int] = {
            r[0] for r in conn.execute("SELECT user_id FROM privacy WHERE dm_policy = 'friends'")
        }
        self.direct_pairs: dict[tuple[int, int], int] = {}
        self.inbox_heads: dict[int, int] = {}
        self.conv_heads: dict[int, ConvHead] = {}
        self.dirty_users: set[int] = set()
        self.dirty_convs: set[int] = set()
        self.members: dict[int, list[int]] = {}
        self.member_ids_held = 0
        self.active = False
        self.allocations = 0
        self.inbox_rows = 0  # inbox rows flushed since start: the writer's measure of fan-out
        self.index_ops: list[IndexOp] = []
        self.pending_messages: list[tuple[Any, ...]] = []
        self.pending_inbox: list[tuple[int, int, str, int, int, int]] = []
        self.pending_reads: dict[tuple[int, int], int] = {}
        self.pending_sends: dict[tuple[int, str], SendResult] = {}
        #: (sender, client_msg_id) of this batch's sends found absent from `messages` by
        #: one query at the batch's start (:meth:`prefetch_absent`): those skip their own.
        self.absent_keys: set[tuple[int, str]] = set()

    # --- direct pairs -------------------------------------------------------------------

    def remember_pair(self, lo: int, hi: int, conv_id: int) -> None:
        if len(self.direct_pairs) >= self.PAIRS_MAX:
            self.direct_pairs.clear()
        self.direct_pairs[(lo, hi)] = conv_id

    # --- heads --------------------------------------------------------------------------

    def next_inbox_seqs(self, conn: sqlite3.Connection, user_ids: list[int]) -> list[tuple[int, int]]:
        """Like the SQL allocation: one new seq per existing user, unknown users skipped."""
        heads = self.inbox_heads
        missing = [u for u in user_ids if u not in heads]
        for i in range(0, len(missing), 10_000):
            chunk = missing[i : i + 10_000]
            marks = ",".join("?" * len(chunk))
            heads.update(conn.execute(f"SELECT id, inbox_seq FROM users WHERE id IN ({marks})", chunk).fetchall())
        out = []
        for u in user_ids:
            seq = heads.get(u)
            if seq is not None:
                heads[u] = seq + 1
                out.append((u, seq + 1))
        self.dirty_users.update(u for u, _ in out)
        self.allocations += 1
        return out

    def next_conv_seq(
        self, conn: sqlite3.Connection, conv_id: int, msg_id: int, created_at: int, mention_all: bool
    ) -> tuple[int, str]:
        head = self.conv_heads.get(conv_id)
        if head is None:
            row = conn.execute(
                "SELECT last_seq, fanout, mention_all_seq, last_msg_id, updated_at FROM conversations WHERE id=?",
                (conv_id,),
            ).fetchone()
            if row is None:
                raise YimError("not_found", f"no conversation {conv_id}")
            head = self.conv_heads[conv_id] = ConvHead(*row)
        head.last_seq += 1
        head.last_msg_id = msg_id
        head.updated_at = created_at
        if mention_all:
            head.mention_all_seq = head.last_seq
        self.dirty_convs.add(conv_id)
        self.allocations += 1
        return head.last_seq, head.fanout

    def members_of(self, conn: sqlite3.Connection, conv_id: int) -> list[int]:
        """The current members of a conversation (a copy the caller may extend)."""
        members = self.members.get(conv_id)
        if members is None:
            if self.member_ids_held > self.MEMBER_IDS_MAX:
                self.members.clear()
                self.member_ids_held = 0
            members = self.members[conv_id] = member_ids(conn, conv_id)
            self.member_ids_held += len(members)
        return list(members)

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the rows and heads held since the last flush: a few multi-row statements
        per table (see :func:`write_rows` for why not ``executemany``)."""
        if self.pending_messages:
            write_rows(conn, f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ", self.pending_messages)
            if self.pending_inbox:
                self.inbox_rows += len(self.pending_inbox)
                write_rows(
                    conn, "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, created_at) VALUES ",
                    self.pending_inbox,
                )  # fmt: skip
            write_rows(
                conn,
                "UPDATE user_conversations SET read_seq = v.column3 FROM (VALUES ",
                [(u, c, seq) for (u, c), seq in self.pending_reads.items()],
                ") AS v WHERE user_conversations.user_id = v.column1 AND user_conversations.conv_id = v.column2"
                " AND user_conversations.left_seq IS NULL",
            )
            self.pending_messages = []
            self.pending_inbox = []
            self.pending_reads = {}
            # Written now: a resend later in this batch must find them in the table.
            self.absent_keys.difference_update(self.pending_sends)
            self.pending_sends = {}
        if self.dirty_users:
            heads = self.inbox_heads
            write_rows(
                conn,
                "UPDATE users SET inbox_seq = v.column2 FROM (VALUES ",
                [(u, heads[u]) for u in self.dirty_users],
                ") AS v WHERE users.id = v.column1",
            )
            self.dirty_users.clear()
        if self.dirty_convs:
            convs = self.conv_heads
            write_rows(
                conn,
                "UPDATE conversations SET last_seq = v.column2, last_msg_id = v.column3, updated_at = v.column4,"
                " mention_all_seq = v.column5 FROM (VALUES ",
                [
                    (c, h.last_seq, h.last_msg_id, h.updated_at, h.mention_all_seq)
                    for c in self.dirty_convs
                    for h in (convs[c],)
                ],
                ") AS v WHERE conversations.id = v.column1",
            )
            self.dirty_convs.clear()
        if len(self.inbox_heads) > self.HEADS_MAX:
            self.inbox_heads.clear()
        if len(self.conv_heads) > self.HEADS_MAX:
            self.conv_heads.clear()

    def prefetch_absent(self, conn: sqlite3.Connection, keys: list[tuple[int, str]]) -> None:
        """Which of these sends are new, in one query per 256 instead of one each.

        Valid for the batch it is made for: a key can only become present during it by a
        send of the same batch, which ``pending_sends`` answers; anything else writing the
        same key makes the flush fail on the unique index, and the batch is redone job by
        job, with a query per send.
        """
        found: set[tuple[int, str]] = set()
        for i in range(0, len(keys), 256):
            chunk = keys[i : i + 256]
            found.update(
                conn.execute(
                    _rows_sql("SELECT m.sender_id, m.client_msg_id FROM (VALUES ", 2, len(chunk),
                              ") AS v JOIN messages m ON m.sender_id = v.column1 AND m.client_msg_id = v.column2"),
                    [v for key in chunk for v in key],
                ).fetchall()
            )  # fmt: skip
        self.absent_keys = set(keys) - found

    def forget_heads(self) -> None:
        """Drop every head (after a job that may have changed the rows in SQL, or a
        rollback that undid allocations)."""
        self.inbox_heads.clear()
        self.conv_heads.clear()
        self.dirty_users.clear()
        self.dirty_convs.clear()
        self.members.clear()
        self.member_ids_held = 0

    def forget(self) -> None:
        """After a rollback: nothing the rolled-back transaction showed may be kept."""
        self.forget_heads()
        self.direct_pairs.clear()
        self.index_ops.clear()
        self.absent_keys = set()
        self.pending_messages = []
        self.pending_inbox = []
        self.pending_reads = {}
        self.pending_sends = {}
        self.active = False


#: Rows per multi-row statement: any count is written as a sum of these (at most one of
#: each below the largest), so each statement text is prepared once and then cached.
_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)


@functools.lru_cache(maxsize=256)
def _rows_sql(head: str, width: int, count: int, tail: str) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return head + ",".join([row] * count) + tail


def write_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``head`` + ``(?,…),(?,…)…`` + ``tail`` for all ``rows``, a chunk per statement.

    Why not ``executemany``: the sqlite3 module lets go of the GIL around every step, so
    ``executemany`` of 500 rows is 500 hand-offs of the GIL, each waiting for the event
    loop to let go of it again; a 256-row statement is one step. The SQLite work is the
    same; the writer's time per message roughly halves under load.
    """
    if not rows:
        return
    width, i, n = len(rows[0]), 0, len(rows)
    while i < n:
        size = next(c for c in _CHUNKS if c <= n - i)
        chunk = rows[i : i + size]
        conn.execute(_rows_sql(head, width, size, tail), [v for row in chunk for v in row])
        i += size


class WriterConnection(sqlite3.Connection):
    """The writer thread's connection: a connection that carries the writer's memory."""

    memory: WriterMemory


def writer_memory(conn: sqlite3.Connection) -> WriterMemory | None:
    """The writer's memory if ``conn`` is the writer's connection (jobs also run on plain
    connections in tests and tools, which simply do every lookup)."""
    return getattr(conn, "memory", None)


def active_memory(conn: sqlite3.Connection) -> WriterMemory | None:
    """The writer's memory if heads may be allocated from it in the current job."""
    memory = getattr(conn, "memory", None)
    return memory if memory is not None and memory.active else None
