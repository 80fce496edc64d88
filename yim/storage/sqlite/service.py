"""SQLite jobs of customer service (see :mod:`yim.storage.service` and
:mod:`yim.services.routing`). Everything here runs on the writer thread, so each routing
decision reads loads and writes the assignment in one transaction."""

from __future__ import annotations

import sqlite3
import sys

import msgspec

from yim.storage.adapters import ServiceJobs
from yim.storage.records import AgentLoad, Entry, SendCmd, SendResult
from yim.storage.relations import InboxWrite
from yim.storage.rules import service as rules
from yim.storage.rules.relations import require_user
from yim.storage.service import AgentRec, ServiceCtx, ServiceSessionRec, ShopRec, ShopStats
from yim.storage.sqlite.runner import SqliteJobs, SqliteRunner
from yim.storage.sqlite.timeline import append_entry, append_inbox_events

_enc = msgspec.json.Encoder()
_SESSION_COLS = (
    "id, shop_id, customer_id, conv_id, category, status, agent_id, queued_at, assigned_at, closed_at, rating, comment"
)
Pending = list[tuple[int, int, bytes]]  # (user_id, actor_id, payload) before inbox seqs are allocated


def _load_agent_loads(conn: sqlite3.Connection, shop_id: int, ctx: ServiceCtx, exclude: int | None) -> list[AgentLoad]:
    rows = conn.execute(
        "SELECT a.user_id, a.skills, a.capacity, a.status, a.last_assigned_at,"
        " (SELECT COUNT(*) FROM service_sessions s WHERE s.shop_id=a.shop_id AND s.agent_id=a.user_id"
        "  AND s.status='active') FROM shop_agents a WHERE a.shop_id=?",
        (shop_id,),
    ).fetchall()
    return rules.agent_loads(rows, ctx, exclude)


def _session(conn: sqlite3.Connection, session_id: int) -> ServiceSessionRec:
    r = conn.execute(f"SELECT {_SESSION_COLS} FROM service_sessions WHERE id=?", (session_id,)).fetchone()
    return rules.require_session(ServiceSessionRec(*r) if r else None, session_id)


def _position(conn: sqlite3.Connection, s: ServiceSessionRec) -> int | None:
    if s.status != "queued":
        return None
    return conn.execute(
        "SELECT COUNT(*) FROM service_sessions WHERE shop_id=? AND status='queued' AND (queued_at, id) <= (?, ?)",
        (s.shop_id, s.queued_at, s.id),
    ).fetchone()[0]


def _count_members(conn: sqlite3.Connection, conv_id: int) -> None:
    conn.execute(
        "UPDATE conversations SET member_count=(SELECT COUNT(*) FROM user_conversations"
        " WHERE conv_id=? AND left_seq IS NULL) WHERE id=?",
        (conv_id, conv_id),
    )


def _leave_conv(conn: sqlite3.Connection, conv_id: int, agent_id: int) -> None:
    conn.execute(
        "UPDATE user_conversations SET left_seq=(SELECT last_seq FROM conversations WHERE id=?)"
        " WHERE conv_id=? AND user_id=? AND left_seq IS NULL",
        (conv_id, conv_id, agent_id),
    )
    _count_members(conn, conv_id)


def _join_conv(conn: sqlite3.Connection, conv_id: int, agent_id: int, read_seq: int) -> None:
    # The serving agent sees the whole history; what the customer wrote in this session is unread.
    conn.execute(
        "INSERT INTO user_conversations (user_id, conv_id, joined_seq, read_seq, role) VALUES (?,?,0,?,'agent')"
        " ON CONFLICT (user_id, conv_id) DO UPDATE SET joined_seq=0, left_seq=NULL,"
        " read_seq=MAX(read_seq, excluded.read_seq)",
        (agent_id, conv_id, read_seq),
    )
    _count_members(conn, conv_id)


def _route(
    conn: sqlite3.Connection,
    s: ServiceSessionRec,
    ctx: ServiceCtx,
    now: int,
    pending: Pending,
    exclude: int | None = None,
) -> int | None:
    """Assign a queued (or orphaned) session, or leave/put it in the queue. Returns the agent."""
    previous = conn.execute(
        "SELECT last_agent_id FROM service_sessions WHERE shop_id=? AND customer_id=? AND last_agent_id IS NOT NULL"
        " ORDER BY id DESC LIMIT 1",
        (s.shop_id, s.customer_id),
    ).fetchone()
    agents = _load_agent_loads(conn, s.shop_id, ctx, exclude)
    chosen = ctx.policy.choose(s.category, agents, previous[0] if previous else None)
    if chosen is None:
        if s.status != "queued":
            conn.execute("UPDATE service_sessions SET status='queued', agent_id=NULL WHERE id=?", (s.id,))
        pending.append(rules.queued(s, _position(conn, msgspec.structs.replace(s, status="queued"))))
        return None
    conn.execute(
        "UPDATE service_sessions SET status='active', agent_id=?, last_agent_id=?, assigned_at=? WHERE id=?",
        (chosen, chosen, now, s.id),
    )
    # Strictly increasing, so round-robin ties break even within one millisecond.
    conn.execute(
        "UPDATE shop_agents SET last_assigned_at=MAX(?, (SELECT MAX(last_assigned_at) + 1 FROM shop_agents"
        " WHERE shop_id=?)) WHERE shop_id=? AND user_id=?",
        (now, s.shop_id, s.shop_id, chosen),
    )
    open_seq = conn.execute("SELECT open_seq FROM service_sessions WHERE id=?", (s.id,)).fetchone()[0]
    _join_conv(conn, s.conv_id, chosen, open_seq)
    pending.extend(rules.assigned(s, chosen))
    return chosen


def _drain(conn: sqlite3.Connection, shop_id: int, ctx: ServiceCtx, now: int, pending: Pending) -> None:
    """Serve the queue in FIFO order as far as agents allow (a session no agent can take
    does not block the ones behind it that need another skill)."""
    queued = [
        ServiceSessionRec(*r)
        for r in conn.execute(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=? AND status='queued' ORDER BY queued_at, id",
            (shop_id,),
        )
    ]
    blocked: set[str] = set()
    for s in queued:
        if s.category in blocked:
            continue
        probe: Pending = []
        if _route(conn, s, ctx, now, probe) is None:
            blocked.add(s.category)  # nobody for this skill now: later ones of it wait too
        else:
            pending.extend(probe)


def _flush(conn: sqlite3.Connection, pending: Pending, now: int) -> list[InboxWrite]:
    return append_inbox_events(conn, "service", pending, now) if pending else []


# --- shops and agents ------------------------------------------------------------------------


def _role(conn: sqlite3.Connection, shop_id: int, user_id: int) -> str | None:
    rules.require_shop(conn.execute("SELECT 1 FROM shops WHERE id=?", (shop_id,)).fetchone() is not None, shop_id)
    r = conn.execute("SELECT role FROM shop_agents WHERE shop_id=? AND user_id=?", (shop_id, user_id)).fetchone()
    return r[0] if r else None


def _require_admin(conn: sqlite3.Connection, shop_id: int, user_id: int) -> None:
    rules.require_admin(_role(conn, shop_id, user_id))


def create_shop(conn: sqlite3.Connection, shop_id: int, name: str, owner_id: int, now: int) -> ShopRec:
    conn.execute("INSERT INTO shops (id, name, owner_id, created_at) VALUES (?,?,?,?)", (shop_id, name, owner_id, now))
    # The owner supervises; they serve customers only once given skills and a capacity.
    conn.execute(
        "INSERT INTO shop_agents (shop_id, user_id, role, skills, capacity, added_at) VALUES (?,?,'admin','[]',0,?)",
        (shop_id, owner_id, now),
    )
    return ShopRec(id=shop_id, name=name, owner_id=owner_id, created_at=now)


def _agent(conn: sqlite3.Connection, shop_id: int, user_id: int) -> AgentRec:
    r = conn.execute(
        "SELECT a.shop_id, a.user_id, a.role, a.skills, a.capacity, a.status, (SELECT COUNT(*) FROM service_sessions s"
        " WHERE s.shop_id=a.shop_id AND s.agent_id=a.user_id AND s.status='active')"
        " FROM shop_agents a WHERE a.shop_id=? AND a.user_id=?",
        (shop_id, user_id),
    ).fetchone()
    return rules.require_agent(r, user_id, shop_id)


def set_agent(
    conn: sqlite3.Connection,
    shop_id: int,
    actor_id: int,
    user_id: int,
    role: str,
    skills: list[str],
    capacity: int,
    now: int,
    ctx: ServiceCtx,
) -> tuple[AgentRec, list[InboxWrite]]:
    _require_admin(conn, shop_id, actor_id)
    require_user(conn.execute("SELECT 1 FROM users WHERE id=?", (user_id,)).fetchone() is not None, user_id)
    conn.execute(
        "INSERT INTO shop_agents (shop_id, user_id, role, skills, capacity, added_at) VALUES (?,?,?,?,?,?)"
        " ON CONFLICT (shop_id, user_id) DO UPDATE SET role=excluded.role, skills=excluded.skills,"
        " capacity=excluded.capacity",
        (shop_id, user_id, role, _enc.encode(skills).decode(), capacity, now),
    )
    pending: Pending = []
    _drain(conn, shop_id, ctx, now, pending)  # new skills or capacity may serve the queue
    return _agent(conn, shop_id, user_id), _flush(conn, pending, now)


def _reroute_agent(
    conn: sqlite3.Connection, agent_id: int, shop_id: int | None, ctx: ServiceCtx, now: int, pending: Pending
) -> None:
    where, args = "agent_id=? AND status='active'", [agent_id]
    if shop_id is not None:
        where += " AND shop_id=?"
        args.append(shop_id)
    sessions = [
        ServiceSessionRec(*r)
        for r in conn.execute(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE {where} ORDER BY queued_at, id", args
        )
    ]
    for s in sessions:
        _leave_conv(conn, s.conv_id, agent_id)
        pending.append(rules.unassigned(s, agent_id))
        _route(conn, s, ctx, now, pending, exclude=agent_id)


def remove_agent(
    conn: sqlite3.Connection, shop_id: int, actor_id: int, user_id: int, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    _require_admin(conn, shop_id, actor_id)
    _agent(conn, shop_id, user_id)
    pending: Pending = []
    conn.execute("UPDATE shop_agents SET status='offline' WHERE shop_id=? AND user_id=?", (shop_id, user_id))
    _reroute_agent(conn, user_id, shop_id, ctx, now, pending)
    conn.execute("DELETE FROM shop_agents WHERE shop_id=? AND user_id=?", (shop_id, user_id))
    return _flush(conn, pending, now)


def set_agent_status(
    conn: sqlite3.Connection, user_id: int, shop_id: int | None, status: str, now: int, ctx: ServiceCtx
) -> list[InboxWrite]:
    shops = [
        r[0]
        for r in conn.execute(
            "SELECT shop_id FROM shop_agents WHERE user_id=?" + (" AND shop_id=?" if shop_id else ""),
            (user_id, shop_id) if shop_id else (user_id,),
        )
    ]
    rules.require_agent_shops(shops)
    pending: Pending = []
    for sid in shops:
        conn.execute("UPDATE shop_agents SET status=? WHERE shop_id=? AND user_id=?", (status, sid, user_id))
        if status == "offline":
            _reroute_agent(conn, user_id, sid, ctx, now, pending)
        elif status == "online":
            _drain(conn, sid, ctx, now, pending)
    # busy / away: keeps current sessions, takes no new ones.
    return _flush(conn, pending, now)


def agent_presence(conn: sqlite3.Connection, user_id: int, online: bool, now: int, ctx: ServiceCtx) -> list[InboxWrite]:
    shops = [r[0] for r in conn.execute("SELECT shop_id FROM shop_agents WHERE user_id=?", (user_id,))]
    pending: Pending = []
    for sid in shops:
        if online:
            _drain(conn, sid, ctx, now, pending)
        else:
            _reroute_agent(conn, user_id, sid, ctx, now, pending)
    return _flush(conn, pending, now)


# --- sessions ------------------------------------------------------------------------------------


def service_send(conn: sqlite3.Connection, c: SendCmd, ctx: ServiceCtx | None) -> SendResult:
    """A message into a service conversation (``c.shop_id`` from a customer, or ``c.conv_id``
    of a service conversation from its customer or its serving agent)."""
    ctx = rules.running(ctx)
    rules.check_send(c.mentions, c.mention_all)
    pending: Pending = []
    if c.shop_id is not None:
        shop = conn.execute("SELECT name, closed_at FROM shops WHERE id=?", (c.shop_id,)).fetchone()
        rules.require_shop(shop is not None, c.shop_id)
        rules.require_open(shop[1], c.shop_id)
        pair = conn.execute(
            "SELECT conv_id FROM service_pairs WHERE shop_id=? AND customer_id=?", (c.shop_id, c.sender_id)
        ).fetchone()
        if pair is None:
            conv_id = c.new_conv_id
            conn.execute(
                "INSERT INTO conversations (id, type, created_at, last_seq, last_msg_id, updated_at, name,"
                " member_count) VALUES (?, 'service', ?, 0, ?, ?, ?, 1)",
                (conv_id, c.created_at, conv_id, c.created_at, shop[0]),
            )
            conn.execute("INSERT INTO service_pairs VALUES (?,?,?)", (c.shop_id, c.sender_id, conv_id))
            conn.execute(
                "INSERT INTO user_conversations (user_id, conv_id, role) VALUES (?,?,'customer')",
                (c.sender_id, conv_id),
            )
        else:
            conv_id = pair[0]
        shop_id, customer_id = c.shop_id, c.sender_id
    else:
        # SendCmd names exactly one of to / conv_id / shop_id; only these two route here.
        assert c.conv_id is not None
        conv_id = c.conv_id
        pair = conn.execute("SELECT shop_id, customer_id FROM service_pairs WHERE conv_id=?", (conv_id,)).fetchone()
        shop_id, customer_id = pair
        rules.require_open(conn.execute("SELECT closed_at FROM shops WHERE id=?", (shop_id,)).fetchone()[0], shop_id)
    if c.sender_id == customer_id:
        open_row = conn.execute(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE conv_id=? AND status!='closed'"
            " ORDER BY id DESC LIMIT 1",
            (conv_id,),
        ).fetchone()
        if open_row is None:
            category = ctx.policy.classify(rules.first_text(c.kind, c.body), c.category)
            session = rules.new_session(c.new_session_id, shop_id, customer_id, conv_id, category, c.created_at)
            conn.execute(
                f"INSERT INTO service_sessions ({_SESSION_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                msgspec.structs.astuple(session)[:12],
            )
            last_seq = conn.execute("SELECT last_seq FROM conversations WHERE id=?", (conv_id,)).fetchone()[0]
            conn.execute("UPDATE service_sessions SET open_seq=? WHERE id=?", (last_seq, session.id))
            _route(conn, session, ctx, c.created_at, pending)
    else:
        active = conn.execute(
            "SELECT 1 FROM service_sessions WHERE conv_id=? AND status='active' AND agent_id=?", (conv_id, c.sender_id)
        ).fetchone()
        rules.require_serving(active is not None)
    result = append_entry(conn, conv_id, Entry.of(c))
    return msgspec.structs.replace(result, events=_flush(conn, pending, c.created_at))


def _owned_session(conn: sqlite3.Connection, session_id: int, actor_id: int) -> ServiceSessionRec:
    s = _session(conn, session_id)
    return rules.check_manage(s, actor_id, _role(conn, s.shop_id, actor_id))


def transfer(
    conn: sqlite3.Connection,
    session_id: int,
    actor_id: int,
    to_agent: int | None,
    to_category: str | None,
    now: int,
    ctx: ServiceCtx,
) -> list[InboxWrite]:
    s = _owned_session(conn, session_id, actor_id)
    loads = _load_agent_loads(conn, s.shop_id, ctx, None) if to_agent is not None and s.status != "closed" else []
    rules.check_transfer(s, to_agent, loads)
    pending: Pending = []
    old = s.agent_id
    if old is not None:
        _leave_conv(conn, s.conv_id, old)
        pending.append(rules.unassigned(s, old))
    if to_category is not None:
        conn.execute("UPDATE service_sessions SET category=? WHERE id=?", (to_category, s.id))
        s = msgspec.structs.replace(s, category=to_category)
    if to_agent is not None:
        forced = rules.ForcedChoice(to_agent)
        _route(conn, s, ServiceCtx(is_connected=ctx.is_connected, policy=forced), now, pending)
    else:
        _route(conn, s, ctx, now, pending, exclude=old)
    if old is not None:
        _drain(conn, s.shop_id, ctx, now, pending)  # the old agent has a free slot now
    return _flush(conn, pending, now)


def close(conn: sqlite3.Connection, session_id: int, actor_id: int, now: int, ctx: ServiceCtx) -> list[InboxWrite]:
    s = _session(conn, session_id)
    if not rules.check_close(s, actor_id, _role(conn, s.shop_id, actor_id)):
        return []
    conn.execute("UPDATE service_sessions SET status='closed', closed_at=?, agent_id=NULL WHERE id=?", (now, s.id))
    pending: Pending = rules.closed(s, actor_id)
    if s.agent_id is not None:
        _leave_conv(conn, s.conv_id, s.agent_id)
        _drain(conn, s.shop_id, ctx, now, pending)
    return _flush(conn, pending, now)


def rate(
    conn: sqlite3.Connection, session_id: int, customer_id: int, rating: int, comment: str, now: int
) -> ServiceSessionRec:
    s = _session(conn, session_id)
    rules.check_rate(s, customer_id)
    conn.execute("UPDATE service_sessions SET rating=?, comment=? WHERE id=?", (rating, comment, s.id))
    return _session(conn, session_id)


# --- reads ---------------------------------------------------------------------------------------


def shop(conn: sqlite3.Connection, shop_id: int) -> ShopRec | None:
    r = conn.execute("SELECT id, name, owner_id, created_at FROM shops WHERE id=?", (shop_id,)).fetchone()
    return ShopRec(*r) if r else None


def shops_of(conn: sqlite3.Connection, user_id: int) -> list[ShopRec]:
    return [
        ShopRec(*r)
        for r in conn.execute(
            "SELECT s.id, s.name, s.owner_id, s.created_at FROM shops s JOIN shop_agents a ON a.shop_id=s.id"
            " WHERE a.user_id=? ORDER BY s.id",
            (user_id,),
        )
    ]


def search_shops(conn: sqlite3.Connection, q: str, offset: int, limit: int) -> list[ShopRec]:
    # instr, not the trigram index: a 1- or 2-character CJK query never matches a trigram.
    # A scan of the shops table, which holds one row per shop (not per message).
    return [
        ShopRec(*r)
        for r in conn.execute(
            "SELECT s.id, s.name, s.owner_id, s.created_at FROM shops s"
            f" WHERE instr(lower(s.name), ?1) > 0 AND {rules.ACCEPTS_CUSTOMERS_SQL}"
            " ORDER BY instr(lower(s.name), ?1) <> 1, length(s.name), s.id LIMIT ?2 OFFSET ?3",
            (rules.shop_name_query(q), limit, offset),
        )
    ]


def agents(conn: sqlite3.Connection, shop_id: int, viewer_id: int) -> list[AgentRec]:
    rules.require_shop_agent(_role(conn, shop_id, viewer_id))
    ids = [r[0] for r in conn.execute("SELECT user_id FROM shop_agents WHERE shop_id=? ORDER BY user_id", (shop_id,))]
    return [_agent(conn, shop_id, uid) for uid in ids]


def sessions(
    conn: sqlite3.Connection, viewer_id: int, shop_id: int | None, status: str | None, limit: int
) -> list[ServiceSessionRec]:
    args: list[int | str]
    if shop_id is not None and _role(conn, shop_id, viewer_id) == "admin":
        where, args = "shop_id=?", [shop_id]  # supervisors see every session of their shop
    else:
        # An agent's own sessions: the ones they serve, and closed ones they served last.
        where, args = "(agent_id=? OR (status='closed' AND last_agent_id=?))", [viewer_id, viewer_id]
        if shop_id is not None:
            where += " AND shop_id=?"
            args.append(shop_id)
    if status is not None:
        where += " AND status=?"
        args.append(status)
    # The queue in its FIFO order; everything else newest first.
    order = "queued_at, id" if status == "queued" else "id DESC"
    rows = [
        ServiceSessionRec(*r)
        for r in conn.execute(
            f"SELECT {_SESSION_COLS} FROM service_sessions WHERE {where} ORDER BY {order} LIMIT ?", (*args, limit)
        )
    ]
    return [msgspec.structs.replace(s, position=_position(conn, s)) for s in rows]


def customer_session(conn: sqlite3.Connection, shop_id: int, customer_id: int) -> ServiceSessionRec | None:
    r = conn.execute(
        f"SELECT {_SESSION_COLS} FROM service_sessions WHERE shop_id=? AND customer_id=? ORDER BY id DESC LIMIT 1",
        (shop_id, customer_id),
    ).fetchone()
    if r is None:
        return None
    s = ServiceSessionRec(*r)
    return msgspec.structs.replace(s, position=_position(conn, s))


def stats(conn: sqlite3.Connection, shop_id: int, viewer_id: int, now: int) -> ShopStats:
    rules.require_dashboard(_role(conn, shop_id, viewer_id))
    by_cat = dict(
        conn.execute(
            "SELECT category, COUNT(*) FROM service_sessions WHERE shop_id=? AND status='queued' GROUP BY category",
            (shop_id,),
        ).fetchall()
    )
    oldest = conn.execute(
        "SELECT MIN(queued_at) FROM service_sessions WHERE shop_id=? AND status='queued'", (shop_id,)
    ).fetchone()[0]
    active = conn.execute(
        "SELECT COUNT(*) FROM service_sessions WHERE shop_id=? AND status='active'", (shop_id,)
    ).fetchone()[0]
    day_start = now - now % 86_400_000
    closed_today, avg = conn.execute(
        "SELECT COUNT(*), AVG(rating) FROM service_sessions WHERE shop_id=? AND status='closed' AND closed_at>=?",
        (shop_id, day_start),
    ).fetchone()
    return rules.shop_stats(by_cat, oldest, active, closed_today, avg, agents(conn, shop_id, viewer_id), now)


def _agent_ids(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM shop_agents")]


class SqliteServiceStore(ServiceJobs):
    def __init__(self, store: SqliteJobs) -> None:
        super().__init__(sys.modules[__name__], SqliteRunner(store))
        self._s = store
        #: ⊇ every user with a shop_agents row: loaded at open, added to before a job that
        #: may insert one, never shrunk. Presence changes of everyone else — nearly every
        #: user — need no writer job at all (one embedded store = one process, so this set
        #: sees every insert).
        self._maybe_agents: set[int] = set()

    async def load(self) -> None:
        self._maybe_agents = set(await self._s.read(_agent_ids))

    def may_become_agent(self, user_id: int) -> None:
        """Before a job that may give the user a shop_agents row (here or in the admin store)."""
        self._maybe_agents.add(user_id)

    async def create_shop(self, shop_id: int, name: str, owner_id: int, now: int) -> ShopRec:
        self.may_become_agent(owner_id)  # the owner becomes the shop's first admin agent
        return await super().create_shop(shop_id, name, owner_id, now)

    async def set_agent(
        self, shop_id: int, actor_id: int, user_id: int, role: str, skills: list[str], capacity: int, now: int
    ) -> tuple[AgentRec, list[InboxWrite]]:
        self.may_become_agent(user_id)
        return await super().set_agent(shop_id, actor_id, user_id, role, skills, capacity, now)

    def may_be_agent(self, user_id: int) -> bool:
        return user_id in self._maybe_agents

    async def agent_presence(self, user_id: int, online: bool, now: int) -> list[InboxWrite]:
        if not self.may_be_agent(user_id):
            return []  # not an agent: nothing to route, and no writer job for it
        return await super().agent_presence(user_id, online, now)
