"""Edits of the PostgreSQL store: mirrors :mod:`yim.storage.sqlite.edits` (the behavioural
spec). ``edit`` is a write job anchored on its conversation (exclusively: it rewrites
message rows and appends) and its actor; the search index (``messages_search``, an
expression index over the row's body) follows the row by itself.
"""

from __future__ import annotations

import asyncpg

from yim.protocol.errors import YimError
from yim.storage.postgres.timeline import _REPLIES_SQL, append_entry
from yim.storage.records import SendResult
from yim.storage.rules import quotes
from yim.storage.rules import send as send_rules
from yim.storage.rules import timeline as timeline_rules

_SPEAKER_SQL = (
    "SELECT c.type, c.mute_all, c.dissolved, uc.role, uc.left_seq IS NOT NULL, COALESCE(uc.muted_until, 0),"
    " uc.peer_id, (SELECT COUNT(*) FROM user_conversations a WHERE a.conv_id = c.id AND a.left_seq IS NULL"
    " AND a.user_id = ANY ($3::bigint[]))"
    " FROM conversations c LEFT JOIN user_conversations uc ON uc.conv_id = c.id AND uc.user_id = $2 WHERE c.id = $1"
)


async def _check_may_speak(
    conn: asyncpg.Connection, conv_id: int, actor_id: int, now: int, mentions: tuple[int, ...]
) -> None:
    """An edit says something in the conversation: allowed when a send with its mentions would be."""
    r = await conn.fetchrow(_SPEAKER_SQL, conv_id, actor_id, list(mentions))
    speaker = send_rules.SpeakerRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) if r is not None else None
    peer_id = send_rules.check_may_speak(conv_id, speaker, now, mentions, False, r[7] if r is not None else 0)
    if peer_id is not None:
        denied = await conn.fetchrow("SELECT * FROM yim_direct_denied($1, $2)", actor_id, peer_id)
        if denied is not None and denied[0] is not None:
            raise YimError(denied[0], denied[1])


async def edit(
    conn: asyncpg.Connection,
    conv_id: int,
    actor_id: int,
    seq: int,
    body: bytes,
    mentions: tuple[int, ...] | None,
    msg_id: int,
    now: int,
    window_ms: int,
) -> SendResult:
    # The conversation row is locked by the job's prelude (its anchor), like a recall's.
    row = await conn.fetchrow(
        "SELECT m.sender_id, m.created_at, m.recalled, m.kind, m.msg_id, m.body, m.mentions, c.last_msg_id,"
        " c.updated_at FROM messages m JOIN conversations c ON c.id = m.conv_id WHERE m.conv_id=$1 AND m.seq=$2",
        conv_id,
        seq,
    )
    joined_seq = await conn.fetchval(
        "SELECT joined_seq FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL",
        conv_id,
        actor_id,
    )
    target = timeline_rules.RecallTarget(*row[:5]) if row else None
    target = timeline_rules.check_edit(conv_id, seq, actor_id, joined_seq, target, now, window_ms)
    old_body, last_msg_id, updated_at = row[5].encode(), row[7], row[8]
    before = tuple(row[6] or ())
    after = before if mentions is None else mentions
    await _check_may_speak(conn, conv_id, actor_id, now, after)
    new_body = quotes.edited_body(old_body, body, now)
    await conn.execute(
        "INSERT INTO message_versions (conv_id, seq, version, body, created_at) VALUES ($1, $2,"
        " (SELECT COUNT(*) + 1 FROM message_versions WHERE conv_id=$1 AND seq=$2), $3, $4)",
        conv_id,
        seq,
        old_body.decode(),
        quotes.version_time(old_body, row[1]),
    )
    await conn.execute(
        "UPDATE messages SET body=$3, mentions=$4 WHERE conv_id=$1 AND seq=$2",
        conv_id,
        seq,
        new_body.decode(),
        list(after) or None,
    )
    replies = await conn.fetch(_REPLIES_SQL, conv_id, seq)
    if replies:
        await conn.executemany(
            "UPDATE messages SET body=$3 WHERE conv_id=$1 AND seq=$2",
            [(conv_id, r[0], quotes.quote_edited(r[1].encode(), "text", new_body).decode()) for r in replies],
        )
    added = tuple(u for u in after if u not in before)
    entry = timeline_rules.edit_entry(actor_id, msg_id, now, seq, target.msg_id, new_body, added)
    result = await append_entry(conn, conv_id, entry)
    # An edit does not reorder the conversation list: it keeps the place its last message gave it.
    await conn.execute(
        "UPDATE conversations SET last_msg_id=$2, updated_at=$3 WHERE id=$1", conv_id, last_msg_id, updated_at
    )
    return result


_VERSIONS_SQL = (
    "SELECT uc.joined_seq, COALESCE(uc.left_seq, c.last_seq),"
    " EXISTS (SELECT 1 FROM messages m WHERE m.conv_id = $2 AND m.seq = $3),"
    " ARRAY(SELECT v.body FROM message_versions v WHERE v.conv_id = $2 AND v.seq = $3 ORDER BY v.version),"
    " ARRAY(SELECT v.created_at FROM message_versions v WHERE v.conv_id = $2 AND v.seq = $3 ORDER BY v.version)"
    " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id = $1 AND uc.conv_id = $2"
)


async def read_versions(conn: asyncpg.Connection, user_id: int, conv_id: int, seq: int) -> list[tuple[bytes, int]]:
    """The earlier versions of message ``seq``, oldest first, for a member whose window holds it."""
    r = await conn.fetchrow(_VERSIONS_SQL, user_id, conv_id, seq)
    timeline_rules.require_member(r is not None, conv_id)
    if not r[2] or not r[0] < seq <= r[1]:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    return [(b.encode(), at) for b, at in zip(r[3], r[4], strict=True)]
