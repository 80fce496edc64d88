"""Timeline jobs of the PostgreSQL store: sends, read markers, recall, sync and history.

Mirrors :mod:`yim.storage.sqlite.timeline` (the behavioural spec). Appends go through the
server-side functions ``yim_send`` (one send), ``yim_send_batch`` (a run of sends, with the
outcome of one ``yim_send`` each) and ``yim_append`` (postgres_functions.sql); write jobs
run on the writer's connection inside its batch transaction, reads on a pooled one.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from yim.protocol.errors import YimError
from yim.storage.records import ConvRow, Entry, InboxEvent, MessageRec, ReadRes, SendCmd, SendResult, conv_row
from yim.storage.rules import quotes
from yim.storage.rules import timeline as timeline_rules

MSG_COLS = (
    "m.msg_id, m.conv_id, m.seq, m.sender_id, m.sender_device, m.kind, m.body, m.client_msg_id, "
    "m.created_at, m.recalled, m.mentions, m.mention_all"
)
#: The last seq a member may see: their leave seq if they left, else the conversation head.
VISIBLE_HEAD = "COALESCE(uc.left_seq, c.last_seq)"
#: Unread of one membership row ``uc`` joined to its conversation ``c``: derived, never stored.
#: Hidden entries (yim/storage/postgres/hidden.py) that would have counted do not.
UNREAD_SQL = (
    f"(GREATEST({VISIBLE_HEAD} - uc.read_seq, 0) - (SELECT COUNT(*) FROM messages u WHERE u.conv_id = uc.conv_id"
    f" AND u.uncounted AND u.seq > uc.read_seq AND u.seq <= {VISIBLE_HEAD})"
    " - (SELECT COUNT(*) FROM hidden_messages h JOIN messages u ON u.conv_id = h.conv_id AND u.seq = h.seq"
    f" WHERE h.user_id = uc.user_id AND h.conv_id = uc.conv_id AND h.seq > uc.read_seq AND h.seq <= {VISIBLE_HEAD}"
    " AND NOT u.uncounted))"
)
#: The entry `m` is one the user `{user}` hid from their devices.
HIDDEN_SQL = (
    "EXISTS (SELECT 1 FROM hidden_messages h WHERE h.user_id = {user} AND h.conv_id = m.conv_id AND h.seq = m.seq)"
)
TOTAL_UNREAD_SQL = (
    f"(SELECT COALESCE(SUM({UNREAD_SQL}), 0)::bigint FROM user_conversations uc"
    " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id = $1)"
)

#: ``yim_send``'s answer for a conversation of type "service" (customer service): the
#: writer runs the Python routing job instead; nothing was written.
SERVICE_CONV = "service_conversation"
SEND_SQL = "SELECT * FROM yim_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
#: A run of sends in one call (``yim_send_batch``): the arrays of :func:`send_batch_args`,
#: one row per send in order, each row what ``yim_send`` would have answered.
SEND_BATCH_SQL = "SELECT * FROM yim_send_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
APPEND_SQL = "SELECT * FROM yim_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"


def msg_from_row(r: Any, at: int = 0) -> MessageRec:
    return MessageRec(
        msg_id=r[at],
        conv_id=r[at + 1],
        seq=r[at + 2],
        sender_id=r[at + 3],
        sender_device=r[at + 4],
        kind=r[at + 5],
        body=r[at + 6].encode(),
        client_msg_id=r[at + 7],
        created_at=r[at + 8],
        recalled=r[at + 9],
        mentions=tuple(r[at + 10] or ()),
        mention_all=r[at + 11],
    )


# --- sends --------------------------------------------------------------------------------------


def send_args(c: SendCmd) -> tuple[Any, ...]:
    return (
        c.msg_id,
        c.new_conv_id,
        c.sender_id,
        c.sender_device,
        c.kind,
        c.body.decode(),
        c.client_msg_id,
        c.created_at,
        c.to,
        c.conv_id,
        list(c.mentions),
        c.mention_all,
    )


def send_batch_args(cmds: list[SendCmd]) -> tuple[list[Any], ...]:
    """The arrays of ``yim_send_batch``: one per field, and the mentions flattened as
    (ordinal of the message, mentioned user) in each message's order."""
    mention_of: list[int] = []
    mentioned: list[int] = []
    for i, c in enumerate(cmds, 1):
        for user_id in c.mentions:
            mention_of.append(i)
            mentioned.append(user_id)
    return (
        [c.msg_id for c in cmds],
        [c.new_conv_id for c in cmds],
        [c.sender_id for c in cmds],
        [c.sender_device for c in cmds],
        [c.kind for c in cmds],
        [c.body.decode() for c in cmds],
        [c.client_msg_id for c in cmds],
        [c.created_at for c in cmds],
        [c.to for c in cmds],
        [c.conv_id for c in cmds],
        [c.mention_all for c in cmds],
        mention_of,
        mentioned,
    )


def send_outcome(c: SendCmd | None, r: Any) -> tuple[SendResult | None, YimError | None]:
    """A ``yim_send`` (or ``yim_send_batch``) row -> (result, None) or (None, the refusal)."""
    assert c is not None
    if r["o_err"] is not None:
        return None, YimError(r["o_err"], r["o_err_msg"])
    if r["o_dup"]:
        message = MessageRec(
            msg_id=r["d_msg_id"],
            conv_id=r["o_conv"],
            seq=r["o_seq"],
            sender_id=c.sender_id,
            sender_device=r["d_device"],
            kind=r["d_kind"],
            body=r["d_body"].encode(),
            client_msg_id=c.client_msg_id,
            created_at=r["d_created"],
            recalled=r["d_recalled"],
            mentions=tuple(r["d_mentions"] or ()),
            mention_all=r["d_mention_all"],
        )
        return SendResult(message=message, sender_inbox_seq=r["o_sender_inbox"], duplicate=True, deliveries=[]), None
    message = MessageRec(
        msg_id=c.msg_id,
        conv_id=r["o_conv"],
        seq=r["o_seq"],
        sender_id=c.sender_id,
        sender_device=c.sender_device,
        kind=c.kind,
        body=c.body,
        client_msg_id=c.client_msg_id,
        created_at=c.created_at,
        mentions=c.mentions,
        mention_all=c.mention_all,
    )
    result = SendResult(
        message=message,
        sender_inbox_seq=r["o_sender_inbox"],
        duplicate=False,
        deliveries=list(zip(r["o_users"], r["o_seqs"], strict=True)),
        fanout=r["o_fanout"],
    )
    return result, None


async def find_duplicate(conn: asyncpg.Connection, sender_id: int, client_msg_id: str) -> SendResult | None:
    """The entry an earlier send with this client_msg_id produced, as a duplicate result."""
    r = await conn.fetchrow(
        f"SELECT {MSG_COLS}, m.sender_inbox_seq FROM client_msg_ids k"
        " JOIN messages m ON m.conv_id = k.conv_id AND m.seq = k.seq WHERE k.sender_id=$1 AND k.client_msg_id=$2",
        sender_id,
        client_msg_id,
    )
    if r is None:
        return None
    return SendResult(message=msg_from_row(r), sender_inbox_seq=r[12], duplicate=True, deliveries=[])


async def append_entry(
    conn: asyncpg.Connection,
    conv_id: int,
    e: Entry,
    *,
    also_inbox: tuple[int, ...] = (),
    members_changed: bool = False,
) -> SendResult:
    """Append one entry to a conversation timeline (see ``yim_append``)."""
    r = await conn.fetchrow(
        APPEND_SQL,
        conv_id,
        e.msg_id,
        e.sender_id,
        e.sender_device,
        e.kind,
        e.body.decode(),
        e.client_msg_id,
        e.created_at,
        e.uncounted,
        list(e.mentions),
        e.mention_all,
        list(also_inbox),
    )
    deliveries = list(zip(r["o_users"], r["o_seqs"], strict=True))
    return e.appended(conv_id, r["o_seq"], r["o_sender_inbox"], deliveries, r["o_fanout"], members_changed)


async def next_inbox_seq(conn: asyncpg.Connection, user_id: int) -> int:
    return await conn.fetchval("UPDATE users SET inbox_seq = inbox_seq + 1 WHERE id=$1 RETURNING inbox_seq", user_id)


async def append_inbox_events(
    conn: asyncpg.Connection, type_: str, events: list[tuple[int, int, bytes]], now: int
) -> list[tuple[int, int, bytes]]:
    """Write events that are not timeline entries into inboxes: ``(user_id, actor_id,
    payload_json)`` in, ``(user_id, inbox_seq, payload_json)`` out."""
    out = []
    for user_id, actor_id, payload in events:
        seq = await next_inbox_seq(conn, user_id)
        await conn.execute(
            "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, data, created_at)"
            " VALUES ($1,$2,$3,0,0,$4,$5,$6)",
            user_id,
            seq,
            type_,
            actor_id,
            payload.decode(),
            now,
        )
        out.append((user_id, seq, payload))
    return out


# --- other write jobs ---------------------------------------------------------------------------


async def mark_read(conn: asyncpg.Connection, user_id: int, conv_id: int, seq: int, now: int) -> ReadRes:
    row = await conn.fetchrow(
        f"SELECT uc.read_seq, {VISIBLE_HEAD}, c.type, uc.peer_id FROM user_conversations uc"
        " JOIN conversations c ON c.id = uc.conv_id WHERE uc.user_id=$1 AND uc.conv_id=$2 FOR UPDATE OF uc",
        user_id,
        conv_id,
    )
    timeline_rules.require_member(row is not None, conv_id)
    read_seq, visible_head, conv_type, peer_id = row
    target = min(seq, visible_head)  # cannot read what does not exist (or what one may not see)
    inbox_seq = None
    receipt = None
    if target > read_seq:  # read markers only move forward
        await conn.execute(
            "UPDATE user_conversations SET read_seq=$3 WHERE user_id=$1 AND conv_id=$2", user_id, conv_id, target
        )
        read_seq = target
        inbox_seq = await next_inbox_seq(conn, user_id)
        events = [(user_id, inbox_seq, "read", conv_id, target, user_id, now)]
        if conv_type == "direct" and peer_id is not None and not await _blocked_either_way(conn, user_id, peer_id):
            # One-to-one read receipt: the peer's devices learn "read up to seq" — unless
            # a block stands between the two (docs/protocol.md §8.2).
            peer_seq = await next_inbox_seq(conn, peer_id)
            receipt = (peer_id, peer_seq)
            events.append((peer_id, peer_seq, "receipt", conv_id, target, user_id, now))
        await conn.executemany(
            "INSERT INTO inbox (user_id, seq, type, conv_id, conv_seq, actor_id, created_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7)",
            events,
        )
    unread, total = await conn.fetchrow(
        f"SELECT (SELECT {UNREAD_SQL} FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
        f" WHERE uc.user_id=$1 AND uc.conv_id=$2), {TOTAL_UNREAD_SQL}",
        user_id,
        conv_id,
    )
    return ReadRes(read_seq=read_seq, unread=unread, total_unread=total, inbox_seq=inbox_seq, receipt=receipt)


async def _blocked_either_way(conn: asyncpg.Connection, a: int, b: int) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM blocks WHERE user_id=$1 AND blocked_id=$2)"
        " OR EXISTS (SELECT 1 FROM blocks WHERE user_id=$2 AND blocked_id=$1)",
        a,
        b,
    )


async def _unmention(conn: asyncpg.Connection, conv_id: int, seq: int, mentioned: list[int], mention_all: bool) -> None:
    """A recalled message mentions no one: move the mention markers it set back to the
    latest mention that still stands (only the part after each read marker matters for
    the `mentioned` flag, so only that part is searched)."""
    if mention_all:
        await conn.execute(
            "UPDATE conversations SET mention_all_seq = COALESCE((SELECT max(seq) FROM messages"
            " WHERE conv_id=$1 AND seq<$2 AND mention_all AND NOT recalled), 0) WHERE id=$1 AND mention_all_seq=$2",
            conv_id,
            seq,
        )
    if mentioned:
        await conn.execute(
            "UPDATE user_conversations uc SET mention_seq = COALESCE((SELECT max(m.seq) FROM messages m"
            " WHERE m.conv_id=uc.conv_id AND m.seq > uc.read_seq AND m.seq<$2 AND NOT m.recalled"
            " AND uc.user_id = ANY (m.mentions)), 0)"
            " WHERE uc.conv_id=$1 AND uc.mention_seq=$2 AND uc.user_id = ANY ($3)",
            conv_id,
            seq,
            mentioned,
        )


async def recall(
    conn: asyncpg.Connection,
    conv_id: int,
    actor_id: int,
    seq: int,
    msg_id: int,
    now: int,
    limit_ms: int,
    server_admin: bool = False,
) -> SendResult:
    # Lock the conversation first, like every other write to it.
    conv_type = await conn.fetchval("SELECT type FROM conversations WHERE id=$1 FOR NO KEY UPDATE", conv_id)
    row = await conn.fetchrow(
        "SELECT sender_id, created_at, recalled, kind, msg_id, mentions, mention_all FROM messages"
        " WHERE conv_id=$1 AND seq=$2",
        conv_id,
        seq,
    )
    me = await conn.fetchrow(
        "SELECT role, joined_seq FROM user_conversations WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL",
        conv_id,
        actor_id,
    )
    target = timeline_rules.RecallTarget(*row[:5]) if row else None
    target = timeline_rules.check_recall(
        conv_id, seq, actor_id, (me[0], me[1]) if me else None, target, conv_type or "", now, limit_ms, server_admin
    )
    mentions, mention_all = row[5], row[6]
    await conn.execute(
        "UPDATE messages SET recalled=true, uncounted=true, body='{}', mentions=NULL, mention_all=false"
        " WHERE conv_id=$1 AND seq=$2",
        conv_id,
        seq,
    )
    await _unmention(conn, conv_id, seq, list(mentions or ()), mention_all)
    await _recall_quotes(conn, conv_id, seq)
    # A recalled message keeps no earlier text either (yim/storage/postgres/edits.py).
    await conn.execute("DELETE FROM message_versions WHERE conv_id=$1 AND seq=$2", conv_id, seq)
    return await append_entry(conn, conv_id, timeline_rules.recall_entry(actor_id, msg_id, now, seq, target.msg_id))


#: Replies quoting a message (the partial expression index messages_quotes, migration 0006):
#: the query repeats the index's expressions so the planner can use it.
_REPLIES_SQL = (
    "SELECT seq, body FROM messages WHERE conv_id=$1 AND strpos(body, '" + quotes.QUOTE_MARK + "') > 0"
    " AND ((body::jsonb -> 'quote' ->> 'seq')::bigint) = $2"
)


async def _recall_quotes(conn: asyncpg.Connection, conv_id: int, seq: int) -> None:
    """Every reply to the recalled message shows it recalled from now on (rules/quotes.py);
    under the conversation's lock the recall already holds."""
    rows = await conn.fetch(_REPLIES_SQL, conv_id, seq)
    if rows:
        await conn.executemany(
            "UPDATE messages SET body=$3 WHERE conv_id=$1 AND seq=$2",
            [(conv_id, r[0], quotes.quote_recalled(r[1].encode()).decode()) for r in rows],
        )


# --- reads (each one statement: one snapshot) -----------------------------------------------------


_QUOTABLE_SQL = (
    "SELECT c.type, uc.joined_seq, (SELECT MAX(a.joined_seq) FROM user_conversations a"
    "  WHERE a.conv_id = c.id AND a.left_seq IS NULL), m.*"
    " FROM conversations c LEFT JOIN user_conversations uc ON uc.conv_id = c.id AND uc.user_id = $2"
    " AND uc.left_seq IS NULL"
    f" LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages m WHERE uc.joined_seq IS NOT NULL AND m.conv_id = c.id"
    " AND m.seq = ANY($3::bigint[])) m ON true WHERE c.id = $1"
)


async def read_quotable(conn: asyncpg.Connection, conv_id: int, user_id: int, seqs: list[int]) -> quotes.Quotable:
    rows = await conn.fetch(_QUOTABLE_SQL, conv_id, user_id, seqs)
    joined_seq = rows[0][1] if rows else None
    found = {m.seq: m for m in (msg_from_row(r, 3) for r in rows if r[3] is not None)}
    messages = quotes.check_quotable(conv_id, seqs, joined_seq, found)
    return quotes.Quotable(conv_id=conv_id, conv_type=rows[0][0], messages=messages, newest_join=rows[0][2] or 0)


async def member_ids(conn: asyncpg.Connection, conv_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT user_id FROM user_conversations WHERE conv_id=$1 AND left_seq IS NULL ORDER BY user_id", conv_id
    )
    return [r[0] for r in rows]


# An entry the user hid comes as a "hidden" event naming it, in its place: the inbox stays
# gap-free and the entry never reaches the user's devices (hidden.py).
_SYNC_SQL = (
    f"SELECT u.inbox_seq, e.* FROM (SELECT COALESCE((SELECT inbox_seq FROM users WHERE id=$1), 0) AS inbox_seq) u"
    " LEFT JOIN LATERAL (SELECT i.seq, CASE WHEN h.seq IS NULL THEN i.type ELSE 'hidden' END, i.conv_id, i.conv_seq,"
    " i.actor_id, CASE WHEN h.seq IS NULL THEN i.data"
    """ ELSE '{"conv_id":"' || i.conv_id || '","seqs":[' || i.conv_seq || ']}' END, """
    f"{MSG_COLS} FROM inbox i"
    " LEFT JOIN hidden_messages h ON i.type = 'message' AND h.user_id = i.user_id AND h.conv_id = i.conv_id"
    " AND h.seq = i.conv_seq"
    " LEFT JOIN messages m ON i.type = 'message' AND h.seq IS NULL AND m.conv_id = i.conv_id AND m.seq = i.conv_seq"
    " WHERE i.user_id=$1 AND i.seq>$2 ORDER BY i.seq LIMIT $3) e ON true"
)


async def read_sync(conn: asyncpg.Connection, user_id: int, since: int, limit: int) -> tuple[list[InboxEvent], int]:
    rows = await conn.fetch(_SYNC_SQL, user_id, since, limit)
    head = rows[0][0] if rows else 0
    events = [
        InboxEvent(
            seq=r[1],
            type=r[2],
            conv_id=r[3],
            conv_seq=r[4],
            actor_id=r[5],
            data=r[6].encode() if r[6] is not None else None,
            message=msg_from_row(r, 7) if r[7] is not None else None,
        )
        for r in rows
        if r[1] is not None
    ]
    return events, head


_HISTORY_ME = (
    "WITH me AS (SELECT joined_seq AS floor, COALESCE(left_seq + 1, 4611686018427387904) AS ceiling"
    " FROM user_conversations WHERE user_id=$1 AND conv_id=$2)"
)
_HISTORY_AFTER = (
    f"{_HISTORY_ME} SELECT me.floor, h.* FROM me LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages m"
    " WHERE m.conv_id=$2 AND m.seq > GREATEST($3, me.floor) AND m.seq < me.ceiling"
    f" AND NOT {HIDDEN_SQL.format(user='$1')} ORDER BY m.seq LIMIT $4) h ON true"
)
_HISTORY_BEFORE = (
    f"{_HISTORY_ME} SELECT me.floor, h.* FROM me LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages m"
    " WHERE m.conv_id=$2 AND m.seq < LEAST($3, me.ceiling) AND m.seq > me.floor"
    f" AND NOT {HIDDEN_SQL.format(user='$1')} ORDER BY m.seq DESC LIMIT $4) h ON true"
)


async def _is_service_supervisor(conn: asyncpg.Connection, user_id: int, conv_id: int) -> bool:
    """Shop admins (supervisors) may read every customer conversation of their shop."""
    return (
        await conn.fetchval(
            "SELECT 1 FROM service_pairs sp JOIN shop_agents a ON a.shop_id = sp.shop_id"
            " WHERE sp.conv_id=$1 AND a.user_id=$2 AND a.role='admin'",
            conv_id,
            user_id,
        )
        is not None
    )


async def read_history(
    conn: asyncpg.Connection, user_id: int, conv_id: int, before: int | None, after: int | None, limit: int
) -> tuple[list[MessageRec], bool]:
    if after is not None:
        rows = await conn.fetch(_HISTORY_AFTER, user_id, conv_id, after, limit + 1)
    else:
        upper = before if before is not None else 2**62
        rows = await conn.fetch(_HISTORY_BEFORE, user_id, conv_id, upper, limit + 1)
    if not rows:
        timeline_rules.require_member(await _is_service_supervisor(conn, user_id, conv_id), conv_id)
        rows = await _supervisor_history(conn, conv_id, before, after, limit + 1)
    msgs = [msg_from_row(r, 1) for r in rows if r[1] is not None]
    more = len(msgs) > limit
    msgs = msgs[:limit]
    if after is None:
        msgs.reverse()
    return msgs, more


async def _supervisor_history(
    conn: asyncpg.Connection, conv_id: int, before: int | None, after: int | None, limit: int
) -> list[Any]:
    """A shop admin reads a customer conversation of the shop whole (no membership window)."""
    if after is not None:
        return await conn.fetch(
            f"SELECT 0, {MSG_COLS} FROM messages m WHERE m.conv_id=$1 AND m.seq>$2 ORDER BY m.seq LIMIT $3",
            conv_id,
            after,
            limit,
        )
    return await conn.fetch(
        f"SELECT 0, {MSG_COLS} FROM messages m WHERE m.conv_id=$1 AND m.seq<$2 ORDER BY m.seq DESC LIMIT $3",
        conv_id,
        before if before is not None else 2**62,
        limit,
    )


_CONVERSATIONS_SQL = (
    f"SELECT c.id, c.type, uc.peer_id, {VISIBLE_HEAD}, uc.read_seq, c.last_msg_id, c.updated_at,"
    f" {UNREAD_SQL}, GREATEST(uc.mention_seq, c.mention_all_seq) > uc.read_seq, c.name, c.member_count,"
    " uc.left_seq IS NULL, (SELECT p.read_seq FROM user_conversations p"
    "  WHERE p.user_id = uc.peer_id AND p.conv_id = uc.conv_id), sp.shop_id, sp.customer_id,"
    f" {MSG_COLS}, {TOTAL_UNREAD_SQL}"
    " FROM user_conversations uc JOIN conversations c ON c.id = uc.conv_id"
    " LEFT JOIN service_pairs sp ON c.type = 'service' AND sp.conv_id = c.id"
    f" LEFT JOIN messages m ON m.conv_id = c.id AND m.seq = {VISIBLE_HEAD}"
    f" AND NOT {HIDDEN_SQL.format(user='uc.user_id')}"  # a hidden last entry is no last_message
    " WHERE uc.user_id=$1 AND c.last_msg_id < $2 AND ($4::bigint IS NULL OR uc.conv_id = $4)"
    " ORDER BY c.last_msg_id DESC LIMIT $3"
)


async def read_conversations(
    conn: asyncpg.Connection, user_id: int, before: int | None, limit: int, conv_id: int | None = None
) -> tuple[list[ConvRow], int]:
    # The total rides on every row of the same statement, so it agrees with the rows.
    rows = await conn.fetch(_CONVERSATIONS_SQL, user_id, before if before is not None else 2**63 - 1, limit, conv_id)
    convs = [conv_row(r, msg_from_row(r, 15) if r[15] is not None else None) for r in rows]
    if rows:
        return convs, rows[0][27]
    total = await conn.fetchval(f"SELECT {TOTAL_UNREAD_SQL}", user_id)
    return convs, total
