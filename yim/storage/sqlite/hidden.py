"""Delete for me in the SQLite store: a user hides entries from their own devices.

The hidden set is ``hidden_messages`` (user, conversation, seq). The entry stays for
everyone else; for this user history and search leave it out, sync hands its inbox event
over as a ``hidden`` event (the inbox stays gap-free), and unread does not count it
(``UNREAD_SQL`` in :mod:`yim.storage.sqlite.timeline`). The user's other devices learn of
it by a ``hidden`` event in the user's own inbox, not by the conversation's timeline.
"""

from __future__ import annotations

import sqlite3

from yim.storage.records import ReadRes
from yim.storage.rules import timeline as timeline_rules
from yim.storage.sqlite.timeline import UNREAD_SQL, VISIBLE_HEAD, append_inbox_events, total_unread


def hide(conn: sqlite3.Connection, user_id: int, conv_id: int, seqs: list[int], now: int) -> tuple[list[int], ReadRes]:
    """Hide ``seqs`` of the conversation from the user's devices; returns the seqs newly
    hidden (a repeat hides nothing and writes no event) and the counts after."""
    member = conn.execute(
        f"SELECT uc.joined_seq, {VISIBLE_HEAD} FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id=? AND uc.conv_id=?",
        (user_id, conv_id),
    ).fetchone()
    wanted = sorted(set(seqs))
    marks = ",".join("?" * len(wanted))
    found = {
        r[0] for r in conn.execute(f"SELECT seq FROM messages WHERE conv_id=? AND seq IN ({marks})", (conv_id, *wanted))
    }
    timeline_rules.check_hide(conv_id, (member[0], member[1]) if member else None, wanted, found)
    already = {
        r[0]
        for r in conn.execute(
            f"SELECT seq FROM hidden_messages WHERE user_id=? AND conv_id=? AND seq IN ({marks})",
            (user_id, conv_id, *wanted),
        )
    }
    new = [s for s in wanted if s not in already]
    inbox_seq = None
    if new:
        conn.executemany(
            "INSERT INTO hidden_messages (user_id, conv_id, seq) VALUES (?,?,?)", [(user_id, conv_id, s) for s in new]
        )
        [(_uid, inbox_seq, _payload)] = append_inbox_events(
            conn, "hidden", [(user_id, user_id, timeline_rules.hidden_payload(conv_id, new))], now
        )
    read_seq, unread = conn.execute(
        f"SELECT uc.read_seq, {UNREAD_SQL} FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        " WHERE uc.user_id=? AND uc.conv_id=?",
        (user_id, conv_id),
    ).fetchone()
    return new, ReadRes(read_seq=read_seq, unread=unread, total_unread=total_unread(conn, user_id), inbox_seq=inbox_seq)
