"""The send job of the SQLite store: idempotency, then a direct, group or customer-service
message. An *appending job*: the writer runs it with its heads in memory
(:mod:`yim.storage.sqlite.memory`).

A module above both the timeline and customer service because a send routes to either:
a customer-service send (to a shop, or into a service conversation) goes to
:func:`yim.storage.sqlite.service.service_send`, every other one to
:func:`yim.storage.sqlite.timeline.append_entry` — and customer service appends its own
entries through the timeline too.
"""

from __future__ import annotations

import sqlite3

from yim.storage.outbox import after_send_rows
from yim.storage.records import Entry, SendCmd, SendResult
from yim.storage.rules import quotes
from yim.storage.rules import send as send_rules
from yim.storage.service import ServiceCtx
from yim.storage.sqlite.memory import active_memory, writer_memory
from yim.storage.sqlite.outbox import INSERT_OUTBOX
from yim.storage.sqlite.policy import check_direct_allowed
from yim.storage.sqlite.service import service_send
from yim.storage.sqlite.timeline import MSG_COLS, N_MSG_COLS, append_entry, msg_from_row, read_quotable


def _conv_type(conn: sqlite3.Connection, conv_id: int) -> str | None:
    row = conn.execute("SELECT type FROM conversations WHERE id=?", (conv_id,)).fetchone()
    return row[0] if row else None


def send_message(conn: sqlite3.Connection, c: SendCmd, service_ctx: ServiceCtx | None = None) -> SendResult:
    """Append a message (direct, group or customer service), and its after_send events to
    the webhook outbox in the same transaction (a duplicate writes neither). An *appending
    job*: the writer runs it with its heads in memory (:mod:`yim.storage.sqlite.memory`)."""
    result = _send(conn, c, service_ctx)
    if c.after_send and not result.duplicate:
        conn.executemany(INSERT_OUTBOX, after_send_rows(c.after_send, result.message))
    return result


def _send(conn: sqlite3.Connection, c: SendCmd, service_ctx: ServiceCtx | None) -> SendResult:
    # Idempotency first: a retried client_msg_id returns the original and writes nothing
    # (one still waiting in the writer's memory to be written counts too).
    memory = active_memory(conn)
    if memory is not None and (earlier := memory.pending_sends.get((c.sender_id, c.client_msg_id))) is not None:
        return SendResult(
            message=earlier.message, sender_inbox_seq=earlier.sender_inbox_seq, duplicate=True, deliveries=[]
        )
    if memory is not None and (c.sender_id, c.client_msg_id) in memory.absent_keys:
        row = None  # the batch's one idempotency query found it new
    else:
        row = conn.execute(
            f"SELECT {MSG_COLS}, m.sender_inbox_seq FROM messages m WHERE m.sender_id=? AND m.client_msg_id=?",
            (c.sender_id, c.client_msg_id),
        ).fetchone()
    if row is not None:
        return SendResult(message=msg_from_row(row), sender_inbox_seq=row[N_MSG_COLS], duplicate=True, deliveries=[])
    if c.reply_to is not None:
        # The quote is checked and taken here, in the send's transaction: a join or a recall
        # commits wholly before or after it (docs/architecture.md §2.1). The memory need not
        # be written first: joins and recalls are not appending jobs (the writer flushed
        # before them), and an entry still in memory is one no client can name by seq yet.
        assert c.conv_id is not None  # a reply names its conversation (services/messages.py)
        c = quotes.quoted(c, read_quotable(conn, c.conv_id, c.sender_id, [c.reply_to]))

    if c.shop_id is not None or (c.conv_id is not None and _conv_type(conn, c.conv_id) == "service"):
        # Routing reads and writes session and conversation rows in SQL: run it on the
        # tables, with what the writer's memory holds written first.
        if memory is not None:
            memory.flush(conn)
            memory.forget_heads()
            memory.active = False
        return service_send(conn, c, service_ctx)
    members: tuple[int, ...] | None = None
    if c.to is not None:
        conv_id = _direct_conversation(conn, c)
        members = (c.sender_id, c.to)
    else:
        # SendCmd names exactly one of to / conv_id / shop_id, and a shop was routed above.
        assert c.conv_id is not None
        conv_id = c.conv_id
        _check_may_speak(conn, c)
    result = append_entry(conn, conv_id, Entry.of(c), members=members)
    if memory is not None:
        memory.pending_sends[(c.sender_id, c.client_msg_id)] = result
    return result


def _direct_conversation(conn: sqlite3.Connection, c: SendCmd) -> int:
    """The conversation of a user pair, created on its first message (mapping table)."""
    assert c.to is not None
    send_rules.check_direct(c.sender_id, c.to, c.mentions, c.mention_all)
    lo, hi = min(c.sender_id, c.to), max(c.sender_id, c.to)
    memory = writer_memory(conn)
    known = memory.direct_pairs.get((lo, hi)) if memory is not None else None
    if known is not None:
        check_direct_allowed(conn, c.sender_id, c.to)
        return known
    found = conn.execute("SELECT conv_id FROM direct_pairs WHERE user_lo=? AND user_hi=?", (lo, hi)).fetchone()
    if found is not None:
        if memory is not None:
            memory.remember_pair(lo, hi, found[0])
        check_direct_allowed(conn, c.sender_id, c.to)
        return found[0]
    send_rules.require_recipient(conn.execute("SELECT 1 FROM users WHERE id=?", (c.to,)).fetchone() is not None, c.to)
    check_direct_allowed(conn, c.sender_id, c.to)
    conv_id = c.new_conv_id
    conn.execute(
        "INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, member_count)"
        " VALUES (?, 'direct', ?, 0, ?, ?, 2)",
        (conv_id, c.created_at, conv_id, c.created_at),
    )
    conn.execute("INSERT INTO direct_pairs VALUES (?,?,?)", (lo, hi, conv_id))
    conn.executemany(
        "INSERT INTO user_conversations (user_id, conv_id, peer_id) VALUES (?,?,?)",
        [(c.sender_id, conv_id, c.to), (c.to, conv_id, c.sender_id)],
    )
    return conv_id


def _check_may_speak(conn: sqlite3.Connection, c: SendCmd) -> None:
    row = conn.execute(
        "SELECT c.type, c.mute_all, c.dissolved, uc.role, uc.left_seq, uc.muted_until, uc.peer_id"
        " FROM conversations c LEFT JOIN user_conversations uc ON uc.conv_id = c.id AND uc.user_id=?"
        " WHERE c.id=?",
        (c.sender_id, c.conv_id),
    ).fetchone()
    speaker = None
    if row is not None:
        speaker = send_rules.SpeakerRow(
            row[0], bool(row[1]), bool(row[2]), row[3], row[4] is not None, row[5] or 0, row[6]
        )
    found = 0
    if c.mentions and speaker is not None and speaker.conv_type == "group":
        marks = ",".join("?" * len(c.mentions))
        found = conn.execute(
            f"SELECT COUNT(*) FROM user_conversations WHERE conv_id=? AND left_seq IS NULL AND user_id IN ({marks})",
            (c.conv_id, *c.mentions),
        ).fetchone()[0]
    assert c.conv_id is not None
    peer_id = send_rules.check_may_speak(c.conv_id, speaker, c.created_at, c.mentions, c.mention_all, found)
    if peer_id is not None:
        check_direct_allowed(conn, c.sender_id, peer_id)
