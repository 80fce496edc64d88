"""Delete for me in the PostgreSQL store: mirrors :mod:`yim.storage.sqlite.hidden` (the
behavioural spec). ``hide`` is a write job anchored on the user alone: it writes the user's
``hidden_messages`` rows and one event in the user's inbox, both guarded by the user's row.
"""

from __future__ import annotations

import asyncpg

from yim.storage.postgres.timeline import TOTAL_UNREAD_SQL, UNREAD_SQL, VISIBLE_HEAD, append_inbox_events
from yim.storage.records import ReadRes
from yim.storage.rules import timeline as timeline_rules

_WINDOW_SQL = (
    f"SELECT uc.joined_seq, {VISIBLE_HEAD},"
    " ARRAY(SELECT m.seq FROM messages m WHERE m.conv_id = $2 AND m.seq = ANY ($3::bigint[])),"
    " ARRAY(SELECT h.seq FROM hidden_messages h WHERE h.user_id = $1 AND h.conv_id = $2 AND h.seq = ANY ($3::bigint[]))"
    " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id = $1 AND uc.conv_id = $2"
)


async def hide(
    conn: asyncpg.Connection, user_id: int, conv_id: int, seqs: list[int], now: int
) -> tuple[list[int], ReadRes]:
    wanted = sorted(set(seqs))
    r = await conn.fetchrow(_WINDOW_SQL, user_id, conv_id, wanted)
    timeline_rules.check_hide(conv_id, (r[0], r[1]) if r else None, wanted, set(r[2]) if r else set())
    already = set(r[3])
    new = [s for s in wanted if s not in already]
    inbox_seq = None
    if new:
        await conn.executemany(
            "INSERT INTO hidden_messages (user_id, conv_id, seq) VALUES ($1, $2, $3)",
            [(user_id, conv_id, s) for s in new],
        )
        [(_uid, inbox_seq, _payload)] = await append_inbox_events(
            conn, "hidden", [(user_id, user_id, timeline_rules.hidden_payload(conv_id, new))], now
        )
    read_seq, unread, total = await conn.fetchrow(
        f"SELECT uc.read_seq, {UNREAD_SQL}, {TOTAL_UNREAD_SQL} FROM user_conversations uc"
        " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=$1 AND uc.conv_id=$2",
        user_id,
        conv_id,
    )
    return new, ReadRes(read_seq=read_seq, unread=unread, total_unread=total, inbox_seq=inbox_seq)
