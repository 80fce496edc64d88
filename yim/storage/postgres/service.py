"""PostgreSQL jobs of customer service; mirrors :mod:`yim.storage.sqlite.service`.

Concurrency: SQLite routes with one writer; here several nodes route at once, so every
job that reads agent loads or the queue and then assigns first locks its shop's row
(``FOR UPDATE``; several shops in id order). Capacity therefore can never be exceeded by
two nodes deciding at the same moment, exactly as on one node.
"""

from __future__ import annotations

import sys

import asyncpg
import msgspec

from yim.storage.adapters import ServiceJobs
from yim.storage.postgres.locks import bound_dynamic_waits
from yim.storage.postgres.runner import PgJobs, PgRunner
from yim.storage.postgres.timeline import append_entry, append_inbox_events
from yim.storage.records import AgentLoad, Entry, SendCmd, SendResult
from yim.storage.relations import InboxWrite
from yim.storage.rules import service as rules
from yim.storage.rules.relations import require_user
from yim.storage.service import AgentRec, ServiceCtx, ServiceSessionRec, ShopRec, ShopStats

_enc = msgspec.json.Encoder()
_SESSION_COLS = (
    "id, shop_id, customer_id, conv_id, category, status, agent_id, queued_at, assigned_at, closed_at, rating, comment"
)
Pending = list[tuple[int, int, bytes]]


async def _lock_shop(conn: asyncpg.Connection, shop_id: int) -> None:
    await conn.execute("SELECT 1 FROM shops WHERE id=$1 FOR UPDATE", shop_id)
    # Routing finds the conversations and users it writes as it goes: bound every later
    # wait instead (postgres_locks, "Opaque jobs").
    await bound_dynamic_waits(conn)


async def _load_agent_loads(
    conn: asyncpg.Connection, shop_id: int, ctx: ServiceCtx, exclude: int | None
) -> list[AgentLoad]:
    rows = await conn.fetch(
        "SELECT a.user_id, a.skills, a.capacity, a.status, a.last_assigned_at,"
        " (SELECT COUNT(*) FROM service_sessions s WHERE s.shop_id=a.shop_id AND s.agent_id=a.user_id"
        "  AND s.status='active') FROM shop_agents a WHERE a.shop_id=$1 ORDER BY a.user_id",
        shop_id,
    )
    return rules.agent_loads(rows, ctx, exclude)


async def _session(conn: asyncpg.Connection, session_id: int) -> ServiceSessionRec:
    r = await conn.fetchrow(f"SELECT {_SESSION_COLS} FROM service_sessions WHERE id=$1", session_id)
    return rules.require_session(ServiceSessionRec(*r) if r else None, session_id)


async def _position(conn: asyncpg.Connection, s: ServiceSessionRec) -> int | None:
    if s.status != "queued":
        return None
    return await conn.fetchval(
        "SELECT COUNT(*) FROM service_sessions WHERE shop_id=$1 AND status='queued' AND (queued_at, id) <= ($2, $3)",
        s.shop_id,
        s.queued_at,
        s.id,
    )


async def _count_members(conn: asyncpg.Connection, conv_id: int) -> None:
    await conn.execute(
        "UPDATE conversations SET member_count=(SELECT COUNT(*) FROM user_conversations"
        " WHERE conv_id=$1 AND left_seq IS NULL) WHERE id=$1",
        conv_id,
    )


async def _leave_conv(conn: asyncpg.Connection, conv_id: int, agent_id: int) -> None:
    await conn.execute(
        "UPDATE user_conversations SET left_seq=(SELECT last_seq FROM conversations WHERE id=$1)"
        " WHERE conv_id=$1 AND user_id=$2 AND left_seq IS NULL",
        conv_id,
        agent_id,
    )
    await _count_members(conn, conv_id)


async def _join_conv(conn: asyncpg.Connection, conv_id: int, agent_id: int, read_seq: int) -> None:
    # The serving agent sees the whole history; what the customer wrote in this session is unread.
    await conn.execute(
        "INSERT INTO user_conversations AS uc (user_id, conv_id, joined_seq, read_seq, role)"
        " VALUES ($1, $2, 0, $3, 'agent') ON CONFLICT (user_id, conv_id) DO UPDATE SET joined_seq=0,"
        " left_seq=NULL, read_seq=GREATEST(uc.read_seq, excluded.read_seq)",
        agent_id,
        conv_id,
        read_seq,
    )
    await _count_members(conn, conv_id)


async def _route(
    conn: asyncpg.Connection,
    s: ServiceSessionRec,
    ctx: ServiceCtx,
    now: int,
    pending: Pending,
    exclude: int | None = None,
) -> int | None:
    """Assign a queued (or orphaned) session, or leave/put it in the queue. Returns the agent."""
    previous = await conn.fetchval(
        "SELECT last_agent_id FROM service_sessions WHERE shop_id=$1 AND customer_id=$2"
        " AND last_agent_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        s.shop_id,
        s.customer_id,
    )
    agents = await _load_agent_loads(conn, s.shop_id, ctx, exclude)
    chosen = ctx.policy.choose(s.category, agents, previous)
    if chosen is None:
        if s.status != "queued":
            await conn.execute("UPDATE service_sessions SET status='queued', agent_id=NULL WHERE id=$1", s.id)
        pending.append(rules.queued(s, await _position(conn, msgspec.structs.replace(s, status="queued"))))
        return None
    await conn.execute(
        "UPDATE service_sessions SET status='active', agent_id=$2, last_agent_id=$2, assigned_at=$3 WHERE id=$1",
        s.id,
        chosen,
        now,
    )
    # Strictly increasing, so round-robin ties break even within one millisecond.
    await conn.execute(
        "UPDATE shop_agents SET last_assigned_at=GREATEST($1, (SELECT MAX(last_assigned_at) + 1 FROM shop_agents"
        " WHERE shop_id=$2)) WHERE shop_id=$2 AND user_id=$3",
        now,
        s.shop_id,
        chosen,
    )
    open_seq = await conn.fetchval("SELECT open_seq FROM service_sessions WHERE id=$1", s.id)
    await _join_conv(conn, s.conv_id, chosen, open_seq)
    pending.extend(rules.assigned(s, chosen))
    return chosen


async def _drain(conn: asyncpg.Connection, shop_id: int, ctx: ServiceCtx, now: int, pending: Pending) -> None:
    """Serve the queue in FIFO order as far as agents allow (a session no agent can take
    does not block the ones behind it that need another skill)."""
    queued = [
        ServiceSessionRec(*r)
        for r in await conn.fetch(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=$1 AND status='queued' ORDER BY queued_at, id",
            shop_id,
        )
    ]
    blocked: set[str] = set()
    for s in queued:
        if s.category in blocked:
            continue
        probe: Pending = []
        if await _route(conn, s, ctx, now, probe) is None:
            blocked.add(s.category)  # nobody for this skill now: later ones of it wait too
        else:
            pending.extend(probe)


async def _flush(conn: asyncpg.Connection, pending: Pending, now: int) -> list[InboxWrite]:
    return await append_inbox_events(conn, "service", pending, now) if pending else []


# --- shops and agents ------------------------------------------------------------------------


async def _role(conn: asyncpg.Connection, shop_id: int, user_id: int) -> str | None:
    rules.require_shop(await conn.fetchval("SELECT 1 FROM shops WHERE id=$1", shop_id) is not None, shop_id)
    return await conn.fetchval("SELECT role FROM shop_agents WHERE shop_id=$1 AND user_id=$2", shop_id, user_id)


async def _require_admin(conn: asyncpg.Connection, shop_id: int, user_id: int) -> None:
    rules.require_admin(await _role(conn, shop_id, user_id))


async def create_shop(conn: asyncpg.Connection, shop_id: int, name: str, owner_id: int, now: int) -> ShopRec:
    await conn.execute(
        "INSERT INTO shops (id, name, owner_id, created_at) VALUES ($1,$2,$3,$4)", shop_id, name, owner_id, now
    )
    # The owner supervises; they serve customers only once given skills and a capacity.
    await conn.execute(
        "INSERT INTO shop_agents (shop_id, user_id, role, skills, capacity, added_at) VALUES ($1,$2,'admin','[]',0,$3)",
        shop_id,
        owner_id,
        now,
    )
    return ShopRec(id=shop_id, name=name, owner_id=owner_id, created_at=now)


async def _agent(conn: asyncpg.Connection, shop_id: int, user_id: int) -> AgentRec:
    r = await conn.fetchrow(
        "SELECT a.shop_id, a.user_id, a.role, a.skills, a.capacity, a.status, (SELECT COUNT(*) FROM service_sessions s"
        " WHERE s.shop_id=a.shop_id AND s.agent_id=a.user_id AND s.status='active')"
        " FROM shop_agents a WHERE a.shop_id=$1 AND a.user_id=$2",
        shop_id,
        user_id,
    )
    return rules.require_agent(r, user_id, shop_id)


async def set_agent(
    conn: asyncpg.Connection,
    shop_id: int,
    actor_id: int,
    user_id: int,
    role: str,
    skills: list[str],
    capacity: int,
    now: int,
    ctx: ServiceCtx,
) -> tuple[AgentRec, list[InboxWrite]]:
    await _require_admin(conn, shop_id, actor_id)
    await _lock_shop(conn, shop_id)
    require_user(await conn.fetchval("SELECT 1 FROM users WHERE id=$1", user_id) is not None, user_id)
    await conn.execute(
        "INSERT INTO shop_agents (shop_id, user_id, role, skills, capacity, added_at) VALUES ($1,$2,$3,$4,$5,$6)"
        " ON CONFLICT (shop_id, user_id) DO UPDATE SET role=excluded.role, skills=excluded.skills,"
        " capacity=excluded.capacity",
        shop_id,
        user_id,
        role,
        _enc.encode(skills).decode(),
        capacity,
        now,
    )
    pending: Pending = []
    await _drain(conn, shop_id, ctx, now, pending)  # new skills or capacity may serve the queue
    return await _agent(conn, shop_id, user_id), await _flush(conn, pending, now)


async def _reroute_agent(
    conn: asyncpg.Connection, agent_id: int, shop_id: int, ctx: ServiceCtx, now: int, pending: Pending
) -> None:
    sessions = [
        ServiceSessionRec(*r)
        for r in await conn.fetch(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE agent_id=$1 AND status='active' AND shop_id=$2"
            " ORDER BY queued_at, id",
            agent_id,
            shop_id,
        )
    ]
    for s in sessions:
        await _leave_conv(conn, s.conv_id, agent_id)
        pending.append(rules.unassigned(s, agent_id))
        await _route(conn, s, ctx, now, pending, exclude=agent_id)


async def remove_agent(
    conn: asyncpg.Connection, shop_id: int, actor_id: int, user_id: int, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    await _require_admin(conn, shop_id, actor_id)
    await _lock_shop(conn, shop_id)
    await _agent(conn, shop_id, user_id)
    pending: Pending = []
    await conn.execute("UPDATE shop_agents SET status='offline' WHERE shop_id=$1 AND user_id=$2", shop_id, user_id)
    await _reroute_agent(conn, user_id, shop_id, ctx, now, pending)
    await conn.execute("DELETE FROM shop_agents WHERE shop_id=$1 AND user_id=$2", shop_id, user_id)
    return await _flush(conn, pending, now)


async def _shops_of_agent(conn: asyncpg.Connection, user_id: int, shop_id: int | None) -> list[int]:
    rows = await conn.fetch(
        "SELECT shop_id FROM shop_agents WHERE user_id=$1 AND ($2::bigint IS NULL OR shop_id=$2) ORDER BY shop_id",
        user_id,
        shop_id,
    )
    return [r[0] for r in rows]


async def set_agent_status(
    conn: asyncpg.Connection, user_id: int, shop_id: int | None, status: str, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    shops = await _shops_of_agent(conn, user_id, shop_id or None)
    rules.require_agent_shops(shops)
    pending: Pending = []
    for sid in shops:  # locked in id order: no deadlock with another multi-shop job
        await _lock_shop(conn, sid)
        await conn.execute("UPDATE shop_agents SET status=$1 WHERE shop_id=$2 AND user_id=$3", status, sid, user_id)
        if status == "offline":
            await _reroute_agent(conn, user_id, sid, ctx, now, pending)
        elif status == "online":
            await _drain(conn, sid, ctx, now, pending)
    # busy / away: keeps current sessions, takes no new ones.
    return await _flush(conn, pending, now)


async def agent_presence(
    conn: asyncpg.Connection, user_id: int, online: bool, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    shops = await _shops_of_agent(conn, user_id, None)
    pending: Pending = []
    for sid in shops:
        await _lock_shop(conn, sid)
        if online:
            await _drain(conn, sid, ctx, now, pending)
        else:
            await _reroute_agent(conn, user_id, sid, ctx, now, pending)
    return await _flush(conn, pending, now)


# --- sessions ------------------------------------------------------------------------------------


async def service_send(conn: asyncpg.Connection, c: SendCmd, ctx: ServiceCtx | None) -> SendResult:
    """A message into a service conversation (``c.shop_id`` from a customer, or ``c.conv_id``
    of a service conversation from its customer or its serving agent)."""
    ctx = rules.running(ctx)
    rules.check_send(c.mentions, c.mention_all)
    pending: Pending = []
    if c.shop_id is not None:
        row = await conn.fetchrow("SELECT name, closed_at FROM shops WHERE id=$1 FOR UPDATE", c.shop_id)
        rules.require_shop(row is not None, c.shop_id)
        rules.require_open(row[1], c.shop_id)
        shop = row[0]
        await bound_dynamic_waits(conn)
        conv_id = await conn.fetchval(
            "SELECT conv_id FROM service_pairs WHERE shop_id=$1 AND customer_id=$2", c.shop_id, c.sender_id
        )
        if conv_id is None:
            conv_id = c.new_conv_id
            await conn.execute(
                "INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, name,"
                " member_count) VALUES ($1, 'service', $2, 0, $1, $2, $3, 1)",
                conv_id,
                c.created_at,
                shop,
            )
            await conn.execute("INSERT INTO service_pairs VALUES ($1,$2,$3)", c.shop_id, c.sender_id, conv_id)
            await conn.execute(
                "INSERT INTO user_conversations (user_id, conv_id, role) VALUES ($1,$2,'customer')",
                c.sender_id,
                conv_id,
            )
        shop_id, customer_id = c.shop_id, c.sender_id
    else:
        conv_id = c.conv_id
        pair = await conn.fetchrow("SELECT shop_id, customer_id FROM service_pairs WHERE conv_id=$1", conv_id)
        shop_id, customer_id = pair
        await _lock_shop(conn, shop_id)
        rules.require_open(await conn.fetchval("SELECT closed_at FROM shops WHERE id=$1", shop_id), shop_id)
    if c.sender_id == customer_id:
        open_row = await conn.fetchrow(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE conv_id=$1 AND status!='closed'"
            " ORDER BY id DESC LIMIT 1",
            conv_id,
        )
        if open_row is None:
            category = ctx.policy.classify(rules.first_text(c.kind, c.body), c.category)
            session = rules.new_session(c.new_session_id, shop_id, customer_id, conv_id, category, c.created_at)
            last_seq = await conn.fetchval("SELECT last_seq FROM conversations WHERE id=$1", conv_id)
            await conn.execute(
                f"INSERT INTO service_sessions ({_SESSION_COLS}, open_seq)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                *msgspec.structs.astuple(session)[:12],
                last_seq,
            )
            await _route(conn, session, ctx, c.created_at, pending)
    else:
        active = await conn.fetchval(
            "SELECT 1 FROM service_sessions WHERE conv_id=$1 AND status='active' AND agent_id=$2", conv_id, c.sender_id
        )
        rules.require_serving(active is not None)
    result = await append_entry(conn, conv_id, Entry.of(c))
    return msgspec.structs.replace(result, events=await _flush(conn, pending, c.created_at))


async def _owned_session(conn: asyncpg.Connection, session_id: int, actor_id: int) -> ServiceSessionRec:
    s = await _session(conn, session_id)
    return rules.check_manage(s, actor_id, await _role(conn, s.shop_id, actor_id))


async def transfer(
    conn: asyncpg.Connection,
    session_id: int,
    actor_id: int,
    to_agent: int | None,
    to_category: str | None,
    now: int,
    ctx: ServiceCtx,
) -> list[InboxWrite]:
    s = await _session(conn, session_id)
    await _lock_shop(conn, s.shop_id)
    s = await _owned_session(conn, session_id, actor_id)  # as it is now that the shop is ours
    wanted = to_agent is not None and s.status != "closed"
    rules.check_transfer(s, to_agent, await _load_agent_loads(conn, s.shop_id, ctx, None) if wanted else [])
    pending: Pending = []
    old = s.agent_id
    if old is not None:
        await _leave_conv(conn, s.conv_id, old)
        pending.append(rules.unassigned(s, old))
    if to_category is not None:
        await conn.execute("UPDATE service_sessions SET category=$1 WHERE id=$2", to_category, s.id)
        s = msgspec.structs.replace(s, category=to_category)
    if to_agent is not None:
        forced = rules.ForcedChoice(to_agent)
        await _route(conn, s, ServiceCtx(is_connected=ctx.is_connected, policy=forced), now, pending)
    else:
        await _route(conn, s, ctx, now, pending, exclude=old)
    if old is not None:
        await _drain(conn, s.shop_id, ctx, now, pending)  # the old agent has a free slot now
    return await _flush(conn, pending, now)


async def close(
    conn: asyncpg.Connection, session_id: int, actor_id: int, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    s = await _session(conn, session_id)
    await _lock_shop(conn, s.shop_id)
    s = await _session(conn, session_id)
    if not rules.check_close(s, actor_id, await _role(conn, s.shop_id, actor_id)):
        return []
    await conn.execute(
        "UPDATE service_sessions SET status='closed', closed_at=$1, agent_id=NULL WHERE id=$2", now, s.id
    )
    pending: Pending = rules.closed(s, actor_id)
    if s.agent_id is not None:
        await _leave_conv(conn, s.conv_id, s.agent_id)
        await _drain(conn, s.shop_id, ctx, now, pending)
    return await _flush(conn, pending, now)


async def rate(
    conn: asyncpg.Connection, session_id: int, customer_id: int, rating: int, comment: str, now: int
) -> ServiceSessionRec:
    s = await _session(conn, session_id)
    rules.check_rate(s, customer_id)
    await conn.execute("UPDATE service_sessions SET rating=$1, comment=$2 WHERE id=$3", rating, comment, s.id)
    return await _session(conn, session_id)


# --- reads ---------------------------------------------------------------------------------------


async def shop(conn: asyncpg.Connection, shop_id: int) -> ShopRec | None:
    r = await conn.fetchrow("SELECT id, name, owner_id, created_at FROM shops WHERE id=$1", shop_id)
    return ShopRec(*r) if r else None


async def shops_of(conn: asyncpg.Connection, user_id: int) -> list[ShopRec]:
    rows = await conn.fetch(
        "SELECT s.id, s.name, s.owner_id, s.created_at FROM shops s JOIN shop_agents a ON a.shop_id=s.id"
        " WHERE a.user_id=$1 ORDER BY s.id",
        user_id,
    )
    return [ShopRec(*r) for r in rows]


async def search_shops(conn: asyncpg.Connection, q: str, offset: int, limit: int) -> list[ShopRec]:
    # lower() under COLLATE "C" folds ASCII letters only, as SQLite's does, whatever the
    # database's locale: both stores find the same shops for the same query.
    rows = await conn.fetch(
        "SELECT s.id, s.name, s.owner_id, s.created_at FROM shops s"
        f' WHERE strpos(lower(s.name COLLATE "C"), $1) > 0 AND {rules.ACCEPTS_CUSTOMERS_SQL}'
        ' ORDER BY strpos(lower(s.name COLLATE "C"), $1) <> 1, length(s.name), s.id LIMIT $2 OFFSET $3',
        rules.shop_name_query(q),
        limit,
        offset,
    )
    return [ShopRec(*r) for r in rows]


async def agents(conn: asyncpg.Connection, shop_id: int, viewer_id: int) -> list[AgentRec]:
    rules.require_shop_agent(await _role(conn, shop_id, viewer_id))
    ids = [r[0] for r in await conn.fetch("SELECT user_id FROM shop_agents WHERE shop_id=$1 ORDER BY user_id", shop_id)]
    return [await _agent(conn, shop_id, uid) for uid in ids]


async def sessions(
    conn: asyncpg.Connection, viewer_id: int, shop_id: int | None, status: str | None, limit: int
) -> list[ServiceSessionRec]:
    # The queue in its FIFO order; everything else newest first.
    order = "queued_at, id" if status == "queued" else "id DESC"
    if shop_id is not None and await _role(conn, shop_id, viewer_id) == "admin":
        rows = await conn.fetch(  # supervisors see every session of their shop
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=$1 AND ($2::text IS NULL OR status=$2)"
            f" ORDER BY {order} LIMIT $3",
            shop_id,
            status,
            limit,
        )
    else:
        # An agent's own sessions: the ones they serve, and closed ones they served last.
        rows = await conn.fetch(
            f"SELECT {_SESSION_COLS} FROM service_sessions"
            " WHERE (agent_id=$1 OR (status='closed' AND last_agent_id=$1)) AND ($2::bigint IS NULL OR shop_id=$2)"
            f" AND ($3::text IS NULL OR status=$3) ORDER BY {order} LIMIT $4",
            viewer_id,
            shop_id,
            status,
            limit,
        )
    out = []
    for r in rows:
        s = ServiceSessionRec(*r)
        out.append(msgspec.structs.replace(s, position=await _position(conn, s)))
    return out


async def customer_session(conn: asyncpg.Connection, shop_id: int, customer_id: int) -> ServiceSessionRec | None:
    r = await conn.fetchrow(
        f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=$1 AND customer_id=$2 ORDER BY id DESC LIMIT 1",
        shop_id,
        customer_id,
    )
    if r is None:
        return None
    s = ServiceSessionRec(*r)
    return msgspec.structs.replace(s, position=await _position(conn, s))


async def stats(conn: asyncpg.Connection, shop_id: int, viewer_id: int, now: int) -> ShopStats:
    rules.require_dashboard(await _role(conn, shop_id, viewer_id))
    by_cat = {
        r[0]: r[1]
        for r in await conn.fetch(
            "SELECT category, COUNT(*) FROM service_sessions WHERE shop_id=$1 AND status='queued'"
            " GROUP BY category ORDER BY category",
            shop_id,
        )
    }
    oldest = await conn.fetchval(
        "SELECT MIN(queued_at) FROM service_sessions WHERE shop_id=$1 AND status='queued'", shop_id
    )
    active = await conn.fetchval("SELECT COUNT(*) FROM service_sessions WHERE shop_id=$1 AND status='active'", shop_id)
    day_start = now - now % 86_400_000
    closed_today, avg = await conn.fetchrow(
        "SELECT COUNT(*), AVG(rating)::float8 FROM service_sessions WHERE shop_id=$1 AND status='closed'"
        " AND closed_at>=$2",
        shop_id,
        day_start,
    )
    return rules.shop_stats(by_cat, oldest, active, closed_today, avg, await agents(conn, shop_id, viewer_id), now)


class PgServiceStore(ServiceJobs):
    def __init__(self, store: PgJobs) -> None:
        super().__init__(sys.modules[__name__], PgRunner(store, frozenset({shop, shops_of})))
