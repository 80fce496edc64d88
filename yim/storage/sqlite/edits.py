"""Edits of the SQLite store: replacing the text of a message, and its earlier versions.

An edit rewrites the message row (the latest text, ``edited_at`` in its body), keeps the
text it replaces in ``message_versions``, follows the change in the quotes of replies and in
the search index, and appends an ``edit`` entry naming the message — so every device, online
now or syncing later, learns of it in timeline order (docs/protocol.md "Edit"). Jobs run on
the writer thread (``edit``) or a reader thread (``read_versions``), inside the caller's
transaction.
"""

from __future__ import annotations

import sqlite3

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import SendCmd, SendResult
from yim.storage.rules import quotes
from yim.storage.rules import timeline as timeline_rules
from yim.storage.sqlite.memory import writer_memory
from yim.storage.sqlite.send import _check_may_speak
from yim.storage.sqlite.timeline import _REPLIES_SQL, append_entry

_ids_decoder = msgspec.json.Decoder(list[str])


def edit(
    conn: sqlite3.Connection,
    conv_id: int,
    actor_id: int,
    seq: int,
    body: bytes,
    mentions: tuple[int, ...] | None,
    msg_id: int,
    now: int,
    window_ms: int,
) -> SendResult:
    """Replace the text of message ``seq`` by ``body`` (a canonical text body); ``mentions``:
    the message's new mention list (None: unchanged)."""
    row = conn.execute(
        "SELECT m.sender_id, m.created_at, m.recalled, m.kind, m.msg_id, m.body, m.mentions, c.last_msg_id,"
        " c.updated_at FROM messages m JOIN conversations c ON c.id = m.conv_id WHERE m.conv_id=? AND m.seq=?",
        (conv_id, seq),
    ).fetchone()
    me = conn.execute(
        "SELECT joined_seq FROM user_conversations WHERE conv_id=? AND user_id=? AND left_seq IS NULL",
        (conv_id, actor_id),
    ).fetchone()
    target = timeline_rules.RecallTarget(row[0], row[1], bool(row[2]), row[3], row[4]) if row else None
    target = timeline_rules.check_edit(conv_id, seq, actor_id, me[0] if me else None, target, now, window_ms)
    old_body, old_mentions, last_msg_id, updated_at = row[5].encode(), row[6], row[7], row[8]
    before = tuple(int(u) for u in _ids_decoder.decode(old_mentions)) if old_mentions else ()
    after = before if mentions is None else mentions
    # An edit says something in the conversation: allowed when a send with its mentions would be.
    probe = SendCmd(0, 0, actor_id, "", "text", b"", "", now, conv_id=conv_id, mentions=after)
    _check_may_speak(conn, probe)
    new_body = quotes.edited_body(old_body, body, now)
    conn.execute(
        "INSERT INTO message_versions (conv_id, seq, version, body, created_at) VALUES (?,?,"
        " (SELECT COUNT(*) + 1 FROM message_versions WHERE conv_id=? AND seq=?),?,?)",
        (conv_id, seq, conv_id, seq, old_body.decode(), quotes.version_time(old_body, row[1])),
    )
    conn.execute(
        "UPDATE messages SET body=?, mentions=? WHERE conv_id=? AND seq=?",
        (new_body.decode(), msgspec.json.encode([str(u) for u in after]).decode() if after else None, conv_id, seq),
    )
    for reply_seq, reply_body in conn.execute(_REPLIES_SQL, (conv_id, seq)).fetchall():
        new = quotes.quote_edited(reply_body.encode(), "text", new_body)
        conn.execute("UPDATE messages SET body=? WHERE conv_id=? AND seq=?", (new.decode(), conv_id, reply_seq))
    memory = writer_memory(conn)
    if memory is not None:  # the old text out of the search index, the new one in
        memory.index_ops.append((target.msg_id, None, None))
        memory.index_ops.append((target.msg_id, "text", new_body))
    added = tuple(u for u in after if u not in before)
    entry = timeline_rules.edit_entry(actor_id, msg_id, now, seq, target.msg_id, new_body, added)
    result = append_entry(conn, conv_id, entry)
    # An edit does not reorder the conversation list: it keeps the place its last message gave it.
    conn.execute("UPDATE conversations SET last_msg_id=?, updated_at=? WHERE id=?", (last_msg_id, updated_at, conv_id))
    return result


def read_versions(conn: sqlite3.Connection, user_id: int, conv_id: int, seq: int) -> list[tuple[bytes, int]]:
    """The earlier versions of message ``seq``, oldest first, for a member whose window
    holds it (as history shows it to them)."""
    member = conn.execute(
        "SELECT uc.joined_seq, COALESCE(uc.left_seq, c.last_seq) FROM user_conversations uc"
        " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=? AND uc.conv_id=?",
        (user_id, conv_id),
    ).fetchone()
    timeline_rules.require_member(member is not None, conv_id)
    exists = conn.execute("SELECT 1 FROM messages WHERE conv_id=? AND seq=?", (conv_id, seq)).fetchone()
    if exists is None or not member[0] < seq <= member[1]:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    rows = conn.execute(
        "SELECT body, created_at FROM message_versions WHERE conv_id=? AND seq=? ORDER BY version", (conv_id, seq)
    ).fetchall()
    return [(b.encode(), at) for b, at in rows]
