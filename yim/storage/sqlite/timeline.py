"""Timeline jobs of the SQLite store: appending entries, read markers, sync and history.

Every function here runs on the writer thread (appends) or a reader thread (queries),
inside the transaction the caller opened; see :mod:`yim.storage.sqlite.store`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from yim.storage.media import MEDIA_KINDS, carried_media_id
from yim.storage.records import ConvRow, Entry, InboxEvent, MessageRec, ReadRes, SendResult, conv_row
from yim.storage.rules import quotes
from yim.storage.rules import timeline as timeline_rules
from yim.storage.sqlite.indexer import INDEXED_KINDS
from yim.storage.sqlite.memory import active_memory, writer_memory
from yim.storage.sqlite.policy import blocked_either_way
from yim.storage.sqlite.rows import MESSAGE_COLUMNS, member_ids

MSG_COLS = (
    "m.msg_id, m.conv_id, m.seq, m.sender_id, m.sender_device, m.kind, m.body, m.client_msg_id, "
    "m.created_at, m.recalled, m.mentions, m.mention_all"
)
N_MSG_COLS = 12
_ids_decoder = msgspec.json.Decoder(list[str])

#: The last seq a member may see: their leave seq if they left, else the conversation head.
VISIBLE_HEAD = "COALESCE(uc.left_seq, c.last_seq)"
#: Unread of one membership row `uc` joined to its conversation `c` — derived, never stored:
#: entries after the read marker, minus those that never count (system / recall / edit
#: entries, recalled messages), which a partial index lists cheaply, and minus those the
#: user hid from their devices that would have counted (yim/storage/sqlite/hidden.py; a
#: primary-key range probe, empty for almost everyone).
UNREAD_SQL = (
    f"(MAX({VISIBLE_HEAD} - uc.read_seq, 0) - (SELECT COUNT(*) FROM messages u WHERE u.conv_id = uc.conv_id"
    f" AND u.uncounted = 1 AND u.seq > uc.read_seq AND u.seq <= {VISIBLE_HEAD})"
    " - (SELECT COUNT(*) FROM hidden_messages h JOIN messages u ON u.conv_id = h.conv_id AND u.seq = h.seq"
    f" WHERE h.user_id = uc.user_id AND h.conv_id = uc.conv_id AND h.seq > uc.read_seq AND h.seq <= {VISIBLE_HEAD}"
    " AND u.uncounted = 0))"
)
#: The entry `m` is one the user (bound where this stands) hid from their devices.
HIDDEN_SQL = "EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = ? AND h.conv_id = m.conv_id AND h.seq = m.seq)"


#: The wire payload of an inbox event (``data`` of its ``event`` frame), built by SQLite:
#: byte for byte what yim/services/wire.py encodes (MessageOut with omitted defaults,
#: ReadMarker, ReceiptMarker; ids as strings; the body and mentions are stored as canonical
#: JSON). Why in SQL: a sync page is 1,000 events, and building them here runs in C on the
#: reader thread, which lets go of the GIL while SQLite steps — the event loop no longer
#: makes a record and a JSON document per event (about half of a page's server time).
EVENT_PAYLOAD_SQL = (
    "CAST(CASE i.type"
    " WHEN 'message' THEN"
    """ '{"msg_id":"' || m.msg_id || '","conv_id":"' || m.conv_id || '","seq":' || m.seq"""
    """ || ',"sender_id":"' || m.sender_id || '","sender_device":' || json_quote(m.sender_device)"""
    """ || ',"kind":' || json_quote(m.kind) || ',"body":' || m.body"""
    """ || ',"client_msg_id":' || json_quote(m.client_msg_id) || ',"created_at":' || m.created_at"""
    """ || CASE WHEN m.recalled THEN ',"recalled":true' ELSE '' END"""
    """ || CASE WHEN m.mentions IS NOT NULL AND m.mentions != '[]' THEN ',"mentions":' || m.mentions ELSE '' END"""
    """ || CASE WHEN m.mention_all THEN ',"mention_all":true' ELSE '' END || '}'"""
    """ WHEN 'read' THEN '{"conv_id":"' || i.conv_id || '","read_seq":' || i.conv_seq || '}'"""
    """ WHEN 'receipt' THEN '{"conv_id":"' || i.conv_id || '","user_id":"' || i.actor_id || '","read_seq":'"""
    """ || i.conv_seq || '}'"""
    " ELSE i.data END AS BLOB)"
)


def msg_from_row(row: tuple[Any, ...], at: int = 0) -> MessageRec:
    mentions = row[at + 10]
    return MessageRec(
        msg_id=row[at],
        conv_id=row[at + 1],
        seq=row[at + 2],
        sender_id=row[at + 3],
        sender_device=row[at + 4],
        kind=row[at + 5],
        body=row[at + 6].encode(),
        client_msg_id=row[at + 7],
        created_at=row[at + 8],
        recalled=bool(row[at + 9]),
        mentions=tuple(int(x) for x in _ids_decoder.decode(mentions)) if mentions else (),
        mention_all=bool(row[at + 11]),
    )


def next_inbox_seqs(conn: sqlite3.Connection, user_ids: list[int]) -> list[tuple[int, int]]:
    """Allocate the next inbox seq of each user, in one statement per 10,000 users (or from
    the writer's memory while an appending job runs: :mod:`yim.storage.sqlite.memory`)."""
    memory = active_memory(conn)
    if memory is not None:
        return memory.next_inbox_seqs(conn, user_ids)
    out: list[tuple[int, int]] = []
    for i in range(0, len(user_ids), 10_000):
        chunk = user_ids[i : i + 10_000]
        marks = ",".join("?" * len(chunk))
        out += conn.execute(
            f"UPDATE users SET inbox_seq = inbox_seq + 1 WHERE id IN ({marks}) RETURNING id, inbox_seq", chunk
        ).fetchall()
    return out


def append_inbox_events(
    conn: sqlite3.Connection, type_: str, events: list[tuple[int, int, bytes]], now: int
) -> list[tuple[int, int, bytes]]:
    """Write events that are not timeline entries into inboxes: ``(user_id, actor_id,
    payload_json)`` in, ``(user_id, inbox_seq, payload_json)`` out."""
    out = []
    for user_id, actor_id, payload in events:
        [(_uid, seq)] = next_inbox_seqs(conn, [user_id])
        conn.execute(
            "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, data, created_at)"
            " VALUES (?,?,?,0,0,?,?,?)",
            (user_id, seq, type_, actor_id, payload.decode(), now),
        )
        out.append((user_id, seq, payload))
    return out


def total_unread(conn: sqlite3.Connection, user_id: int) -> int:
    return conn.execute(
        f"SELECT COALESCE(SUM({UNREAD_SQL}), 0) FROM user_conversations uc"
        " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=?",
        (user_id,),
    ).fetchone()[0]


INSERT_MESSAGE = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
INSERT_INBOX_MESSAGE = "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, created_at) VALUES (?,?,?,?,?,?)"
INSERT_MEDIA_REF = "INSERT OR IGNORE INTO media_refs (media_id, conv_id, seq) VALUES (?,?,?)"
#: (seq, user_id, conv_id): a sender has read their conversation up to their own entry.
UPDATE_SENDER_READ = "UPDATE user_conversations SET read_seq=? WHERE user_id=? AND conv_id=? AND left_seq IS NULL"


def append_entry(
    conn: sqlite3.Connection,
    conv_id: int,
    entry: Entry,
    *,
    also_inbox: tuple[int, ...] = (),
    members_changed: bool = False,
    members: tuple[int, ...] | None = None,
) -> SendResult:
    """Append one entry to a conversation timeline and fan it out by the group's policy.

    Invariant: the conversation seq and every inbox seq are allocated by UPDATE ...
    RETURNING inside this transaction, so they are gap-free and never reused. ``also_inbox``
    names users who get an inbox entry even under read fan-out (a removed member learning
    of the removal).
    """
    msg_id, sender_id, kind, body, created_at = entry.msg_id, entry.sender_id, entry.kind, entry.body, entry.created_at
    mentions, mention_all = entry.mentions, entry.mention_all
    memory = active_memory(conn)
    if memory is not None:
        seq, fanout = memory.next_conv_seq(conn, conv_id, msg_id, created_at, mention_all)
    else:
        seq, fanout = conn.execute(
            "UPDATE conversations SET last_seq = last_seq + 1, last_msg_id=?, updated_at=?,"
            " mention_all_seq = CASE WHEN ? THEN last_seq + 1 ELSE mention_all_seq END"
            " WHERE id=? RETURNING last_seq, fanout",
            (msg_id, created_at, mention_all, conv_id),
        ).fetchone()
    if fanout == "write":
        # A direct conversation's members never change: the caller names them.
        if members is not None:
            recipients = list(members)
        elif memory is not None:
            recipients = memory.members_of(conn, conv_id)
        else:
            recipients = member_ids(conn, conv_id)
        recipients += [u for u in also_inbox if u not in recipients]
    else:
        recipients = list(also_inbox)
    deliveries = next_inbox_seqs(conn, recipients) if recipients else []
    inbox_rows = [(uid, iseq, "message", conv_id, seq, created_at) for uid, iseq in deliveries]
    sender_inbox = next((iseq for uid, iseq in deliveries if uid == sender_id), 0)
    mentions_json = msgspec.json.encode([str(u) for u in mentions]).decode() if mentions else None
    message_row = (
        conv_id,
        seq,
        msg_id,
        sender_id,
        entry.sender_device,
        kind,
        body.decode(),
        entry.client_msg_id,
        sender_inbox,
        created_at,
        entry.uncounted,
        mentions_json,
        mention_all,
    )
    if memory is not None:
        # Written with the rest of the batch, one executemany per table (sqlite_memory).
        memory.pending_messages.append(message_row)
        memory.pending_inbox += inbox_rows
        memory.pending_reads[(sender_id, conv_id)] = seq
    else:
        if inbox_rows:
            conn.executemany(INSERT_INBOX_MESSAGE, inbox_rows)
        conn.execute(INSERT_MESSAGE, message_row)
        # Sending reads the conversation up to one's own entry (unread never counts it).
        conn.execute(UPDATE_SENDER_READ, (seq, sender_id, conv_id))
    if kind in MEDIA_KINDS and (media_id := carried_media_id(body)) is not None:
        # The entry lends its media to the conversation's members (yim/storage/media.py).
        # Here rather than in an INSERT trigger: a trigger, even one whose WHEN is false,
        # cost every message row ~5 µs of the writer's time.
        conn.execute(INSERT_MEDIA_REF, (media_id, conv_id, seq))
    if kind in INDEXED_KINDS and (writer := writer_memory(conn)) is not None:
        writer.index_ops.append((msg_id, kind, body))  # indexed after COMMIT, off this thread
    if mentions:
        marks = ",".join("?" * len(mentions))
        conn.execute(
            f"UPDATE user_conversations SET mention_seq=? WHERE conv_id=? AND user_id IN ({marks})",
            (seq, conv_id, *mentions),
        )
    return entry.appended(conv_id, seq, sender_inbox, deliveries, fanout, members_changed)


def mark_read(conn: sqlite3.Connection, user_id: int, conv_id: int, seq: int, now: int) -> ReadRes:
    row = conn.execute(
        f"SELECT uc.read_seq, {VISIBLE_HEAD}, c.type, uc.peer_id FROM user_conversations uc"
        " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=? AND uc.conv_id=?",
        (user_id, conv_id),
    ).fetchone()
    timeline_rules.require_member(row is not None, conv_id)
    read_seq, visible_head, conv_type, peer_id = row
    target = min(seq, visible_head)  # cannot read what does not exist (or what one may not see)
    inbox_seq = None
    receipt = None
    if target > read_seq:  # read markers only move forward
        conn.execute(
            "UPDATE user_conversations SET read_seq=? WHERE user_id=? AND conv_id=?", (target, user_id, conv_id)
        )
        read_seq = target
        [(_uid, inbox_seq)] = next_inbox_seqs(conn, [user_id])
        events = [(user_id, inbox_seq, "read", conv_id, target, user_id, now)]
        if conv_type == "direct" and peer_id is not None and not blocked_either_way(conn, user_id, peer_id):
            # One-to-one read receipt: the peer's devices learn "read up to seq" — unless
            # a block stands between the two (docs/protocol.md §8.2).
            [(_peer, peer_seq)] = next_inbox_seqs(conn, [peer_id])
            receipt = (peer_id, peer_seq)
            events.append((peer_id, peer_seq, "receipt", conv_id, target, user_id, now))
        conn.executemany(
            "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, created_at) VALUES (?,?,?,?,?,?,?)",
            events,
        )
    unread = conn.execute(
        f"SELECT {UNREAD_SQL} FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id=? AND uc.conv_id=?",
        (user_id, conv_id),
    ).fetchone()[0]
    return ReadRes(
        read_seq=read_seq,
        unread=unread,
        total_unread=total_unread(conn, user_id),
        inbox_seq=inbox_seq,
        receipt=receipt,
    )


def _unmention(conn: sqlite3.Connection, conv_id: int, seq: int, mentioned: list[int], mention_all: bool) -> None:
    """A recalled message mentions no one: move the mention markers it set back to the
    latest mention that still stands (only the part after each read marker matters for
    the `mentioned` flag, so only that part is searched)."""
    if mention_all:
        conn.execute(
            "UPDATE conversations SET mention_all_seq = COALESCE((SELECT MAX(seq) FROM messages"
            " WHERE conv_id=? AND seq<? AND mention_all=1 AND recalled=0), 0) WHERE id=? AND mention_all_seq=?",
            (conv_id, seq, conv_id, seq),
        )
    if mentioned:
        marks = ",".join("?" * len(mentioned))
        conn.execute(
            "UPDATE user_conversations SET mention_seq = COALESCE((SELECT MAX(m.seq) FROM messages m"
            " WHERE m.conv_id=user_conversations.conv_id AND m.seq > user_conversations.read_seq AND m.seq<?"
            " AND m.recalled=0 AND m.mentions IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(m.mentions)"
            " WHERE value = CAST(user_conversations.user_id AS TEXT))), 0)"
            f" WHERE conv_id=? AND mention_seq=? AND user_id IN ({marks})",
            (seq, conv_id, seq, *mentioned),
        )


def recall(
    conn: sqlite3.Connection,
    conv_id: int,
    actor_id: int,
    seq: int,
    msg_id: int,
    now: int,
    limit_ms: int,
    server_admin: bool = False,
) -> SendResult:
    row = conn.execute(
        "SELECT m.sender_id, m.created_at, m.recalled, m.kind, m.msg_id, c.type, m.mentions, m.mention_all"
        " FROM messages m JOIN conversations c ON c.id = m.conv_id WHERE m.conv_id=? AND m.seq=?",
        (conv_id, seq),
    ).fetchone()
    me = conn.execute(
        "SELECT role, joined_seq FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL",
        (conv_id, actor_id),
    ).fetchone()
    target = timeline_rules.RecallTarget(row[0], row[1], bool(row[2]), row[3], row[4]) if row else None
    target = timeline_rules.check_recall(
        conv_id,
        seq,
        actor_id,
        (me[0], me[1]) if me else None,
        target,
        row[5] if row else "",
        now,
        limit_ms,
        server_admin,
    )
    mentions, mention_all = row[6], row[7]
    conn.execute(
        "UPDATE messages SET recalled=1, uncounted=1, body='{}', mentions=NULL, mention_all=0"
        " WHERE conv_id=? AND seq=?",
        (conv_id, seq),
    )
    _unmention(conn, conv_id, seq, [int(u) for u in _ids_decoder.decode(mentions)] if mentions else [], mention_all)
    _recall_quotes(conn, conv_id, seq)
    # A recalled message keeps no earlier text either (yim/storage/sqlite/edits.py).
    conn.execute("DELETE FROM message_versions WHERE conv_id=? AND seq=?", (conv_id, seq))
    memory = writer_memory(conn)
    if memory is not None:
        memory.index_ops.append((target.msg_id, None, None))  # out of the search index
    return append_entry(conn, conv_id, timeline_rules.recall_entry(actor_id, msg_id, now, seq, target.msg_id))


#: Replies quoting a message (the partial expression index messages_quotes, migration 0002):
#: the query repeats the index's expressions so the planner can use it.
_REPLIES_SQL = (
    "SELECT seq, body FROM messages WHERE conv_id=? AND instr(body, '" + quotes.QUOTE_MARK + "') > 0"
    " AND json_extract(body, '$.quote.seq') = ?"
)


def _recall_quotes(conn: sqlite3.Connection, conv_id: int, seq: int) -> None:
    """Every reply to the recalled message shows it recalled from now on (rules/quotes.py)."""
    for reply_seq, body in conn.execute(_REPLIES_SQL, (conv_id, seq)).fetchall():
        new = quotes.quote_recalled(body.encode())
        conn.execute("UPDATE messages SET body=? WHERE conv_id=? AND seq=?", (new.decode(), conv_id, reply_seq))


# --- reads -------------------------------------------------------------------------------------


def read_quotable(conn: sqlite3.Connection, conv_id: int, user_id: int, seqs: list[int]) -> quotes.Quotable:
    row = conn.execute(
        "SELECT c.type, uc.joined_seq FROM conversations c LEFT JOIN user_conversations uc"
        " ON uc.conv_id = c.id AND uc.user_id = ? AND uc.left_seq IS NULL WHERE c.id = ?",
        (user_id, conv_id),
    ).fetchone()
    joined_seq = row[1] if row is not None else None
    found: dict[int, MessageRec] = {}
    if joined_seq is not None:
        marks = ",".join("?" * len(seqs))
        rows = conn.execute(
            f"SELECT {MSG_COLS} FROM messages m WHERE m.conv_id=? AND m.seq IN ({marks})", (conv_id, *seqs)
        )
        found = {m.seq: m for m in map(msg_from_row, rows)}
    messages = quotes.check_quotable(conv_id, seqs, joined_seq, found)
    newest = conn.execute(
        "SELECT MAX(joined_seq) FROM user_conversations WHERE conv_id=? AND left_seq IS NULL", (conv_id,)
    ).fetchone()[0]
    return quotes.Quotable(conv_id=conv_id, conv_type=row[0], messages=messages, newest_join=newest or 0)


def read_sync(conn: sqlite3.Connection, user_id: int, since: int, limit: int) -> tuple[list[InboxEvent], int]:
    head_row = conn.execute("SELECT inbox_seq FROM users WHERE id=?", (user_id,)).fetchone()
    head = head_row[0] if head_row else 0
    # An entry the user hid comes as a "hidden" event naming it, in its place: the inbox
    # stays gap-free and the entry never reaches the user's devices (hidden.py).
    rows = conn.execute(
        "SELECT i.seq, CASE WHEN h.seq IS NULL THEN i.type ELSE 'hidden' END, i.conv_id, i.conv_seq, i.actor_id,"
        f" CASE WHEN h.seq IS NULL THEN {EVENT_PAYLOAD_SQL} ELSE CAST("
        """'{"conv_id":"' || i.conv_id || '","seqs":[' || i.conv_seq || ']}' AS BLOB) END FROM inbox i"""
        " LEFT JOIN messages m ON i.type = 'message' AND m.conv_id = i.conv_id AND m.seq = i.conv_seq"
        " LEFT JOIN hidden_messages h ON i.type = 'message' AND h.user_id = i.user_id AND h.conv_id = i.conv_id"
        " AND h.seq = i.conv_seq"
        " WHERE i.user_id=? AND i.seq>? ORDER BY i.seq LIMIT ?",
        (user_id, since, limit),
    ).fetchall()
    events = [InboxEvent(seq=r[0], type=r[1], conv_id=r[2], conv_seq=r[3], actor_id=r[4], data=r[5]) for r in rows]
    return events, head


def _is_service_supervisor(conn: sqlite3.Connection, user_id: int, conv_id: int) -> bool:
    """Shop admins (supervisors) may read every customer conversation of their shop."""
    return (
        conn.execute(
            "SELECT 1 FROM service_pairs sp JOIN shop_agents a ON a.shop_id = sp.shop_id"
            " WHERE sp.conv_id=? AND a.user_id=? AND a.role='admin'",
            (conv_id, user_id),
        ).fetchone()
        is not None
    )


def read_history(
    conn: sqlite3.Connection, user_id: int, conv_id: int, before: int | None, after: int | None, limit: int
) -> tuple[list[MessageRec], bool]:
    member = conn.execute(
        "SELECT joined_seq, left_seq FROM user_conversations WHERE user_id=? AND conv_id=?", (user_id, conv_id)
    ).fetchone()
    if member is None and _is_service_supervisor(conn, user_id, conv_id):
        member = (0, None)
    timeline_rules.require_member(member is not None, conv_id)
    floor = member[0]
    ceiling = member[1] + 1 if member[1] is not None else 2**62  # exclusive
    if after is not None:
        rows = conn.execute(
            f"SELECT {MSG_COLS} FROM messages m WHERE m.conv_id=? AND m.seq>? AND m.seq<? AND NOT {HIDDEN_SQL}"
            " ORDER BY m.seq LIMIT ?",
            (conv_id, max(after, floor), ceiling, user_id, limit + 1),
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
    else:
        upper = min(before, ceiling) if before is not None else ceiling
        rows = conn.execute(
            f"SELECT {MSG_COLS} FROM messages m WHERE m.conv_id=? AND m.seq<? AND m.seq>? AND NOT {HIDDEN_SQL}"
            " ORDER BY m.seq DESC LIMIT ?",
            (conv_id, upper, floor, user_id, limit + 1),
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit][::-1]
    return [msg_from_row(r) for r in rows], more


def read_conversations(
    conn: sqlite3.Connection, user_id: int, before: int | None, limit: int, conv_id: int | None = None
) -> tuple[list[ConvRow], int]:
    where, args = "uc.user_id=? AND c.last_msg_id < ?", [user_id, before if before is not None else 2**63 - 1]
    if conv_id is not None:
        where += " AND uc.conv_id=?"
        args.append(conv_id)
    rows = conn.execute(
        f"SELECT c.id, c.type, uc.peer_id, {VISIBLE_HEAD}, uc.read_seq, c.last_msg_id, c.updated_at,"
        f" {UNREAD_SQL}, MAX(uc.mention_seq, c.mention_all_seq) > uc.read_seq, c.name, c.member_count,"
        " uc.left_seq IS NULL, (SELECT p.read_seq FROM user_conversations p"
        "  WHERE p.conv_id = uc.conv_id AND p.user_id = uc.peer_id), sp.shop_id, sp.customer_id,"
        f" {MSG_COLS}"
        " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " LEFT JOIN service_pairs sp ON c.type = 'service' AND sp.conv_id = c.id"
        f" LEFT JOIN messages m ON m.conv_id = c.id AND m.seq = {VISIBLE_HEAD}"
        f" AND NOT {HIDDEN_SQL.replace('?', 'uc.user_id')}"  # a hidden last entry is no last_message
        f" WHERE {where} ORDER BY c.last_msg_id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    convs = [conv_row(r, msg_from_row(r, 15) if r[15] is not None else None) for r in rows]
    return convs, total_unread(conn, user_id)
