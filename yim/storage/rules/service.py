"""Customer-service rules: who may manage, transfer, close and rate a session, when an
agent can take a transfer, what a new session looks like, and the ``service`` events
each transition tells (see :mod:`yim.storage.service` for the concepts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import AgentLoad
from yim.storage.service import AgentRec, ServiceCtx, ServiceSessionRec, ShopStats

_enc = msgspec.json.Encoder()
_skills = msgspec.json.Decoder(list[str])


def running(ctx: ServiceCtx | None) -> ServiceCtx:
    """Routing needs the live node (who is connected, the policy)."""
    if ctx is None:
        raise YimError("unavailable", "customer service is not running on this node")
    return ctx


def require_shop(exists: bool, shop_id: int) -> None:
    if not exists:
        raise YimError("not_found", f"no shop {shop_id}")


def require_open(closed_at: int | None, shop_id: int) -> None:
    """A closed shop takes no more customers' messages: nobody is left to read them."""
    if closed_at is not None:
        raise YimError("shop_closed", f"shop {shop_id} is closed")


def require_admin(role: str | None) -> None:
    if role != "admin":
        raise YimError("forbidden", "only the shop's admins may do this")


def require_agent(row: Sequence[Any] | None, user_id: int, shop_id: int) -> AgentRec:
    """An agent from a row of (shop_id, user_id, role, skills JSON, capacity, status,
    active sessions); there must be one."""
    if row is None:
        raise YimError("not_found", f"user {user_id} is not an agent of shop {shop_id}")
    return AgentRec(row[0], row[1], row[2], _skills.decode(row[3]), row[4], row[5], row[6])


def require_agent_shops(shops: list[int]) -> list[int]:
    """The shops an agent sets their status in: at least one."""
    if not shops:
        raise YimError("not_found", "you are not an agent of that shop")
    return shops


def require_session(session: ServiceSessionRec | None, session_id: int) -> ServiceSessionRec:
    if session is None:
        raise YimError("not_found", f"no service session {session_id}")
    return session


def check_send(mentions: Sequence[int], mention_all: bool) -> None:
    if mentions or mention_all:
        raise YimError("bad_request", "mentions are for group messages")


def require_serving(serving: bool) -> None:
    """An agent writes into a service conversation only while serving it."""
    if not serving:
        raise YimError("not_member", "you are not serving this customer now")


def check_manage(session: ServiceSessionRec, actor_id: int, actor_role: str | None) -> ServiceSessionRec:
    """Transfers are for the serving agent and the shop's admins."""
    if session.agent_id != actor_id and actor_role != "admin":
        raise YimError("forbidden", "only the serving agent or a shop admin may do this")
    return session


def check_transfer(session: ServiceSessionRec, to_agent: int | None, loads: list[AgentLoad]) -> None:
    """A transfer of an open session, to an agent (if named) of the shop who can take it now."""
    if session.status == "closed":
        raise YimError("bad_request", "the session is closed")
    if to_agent is None:
        return
    target = next((a for a in loads if a.user_id == to_agent), None)
    if target is None:
        raise YimError("not_found", f"user {to_agent} is not an agent of this shop")
    if not target.online or target.open_sessions >= target.capacity:
        raise YimError("forbidden", "that agent is not available (offline, busy or at capacity)")


def check_close(session: ServiceSessionRec, actor_id: int, actor_role: str | None) -> bool:
    """May the actor close the session? False: it is closed already (nothing to do)."""
    if actor_id not in (session.agent_id, session.customer_id) and actor_role != "admin":
        raise YimError("forbidden", "only the customer, the serving agent or a shop admin may close a session")
    return session.status != "closed"


def check_rate(session: ServiceSessionRec, customer_id: int) -> None:
    if session.customer_id != customer_id:
        raise YimError("forbidden", "only the customer may rate a session")
    if session.status != "closed":
        raise YimError("bad_request", "a session is rated once it is closed")


def require_shop_agent(role: str | None) -> None:
    """The agent list is for the shop's own agents."""
    if role is None:
        raise YimError("forbidden", "only the shop's agents may list its agents")


def require_dashboard(role: str | None) -> None:
    if role != "admin":
        raise YimError("forbidden", "only the shop's admins see its dashboard")


def agent_loads(rows: Iterable[Sequence[Any]], ctx: ServiceCtx, exclude: int | None) -> list[AgentLoad]:
    """The loads routing chooses from, from rows of (user_id, skills JSON, capacity,
    status, last_assigned_at, active sessions). An agent is online when their status says
    so and they are connected; ``exclude`` (an agent a session is taken from) is not."""
    return [
        AgentLoad(
            user_id=r[0],
            skills=frozenset(_skills.decode(r[1])),
            capacity=r[2],
            open_sessions=r[5],
            last_assigned_at=r[4],
            online=r[3] == "online" and r[0] != exclude and ctx.is_connected(r[0]),
        )
        for r in rows
    ]


def shop_stats(
    by_category: dict[str, int],
    oldest_queued_at: int | None,
    active: int,
    closed_today: int,
    avg_rating: float | None,
    agents: list[AgentRec],
    now: int,
) -> ShopStats:
    return ShopStats(
        queued=sum(by_category.values()),
        queued_by_category=by_category,
        longest_wait_ms=now - oldest_queued_at if oldest_queued_at else 0,
        active=active,
        closed_today=closed_today,
        avg_rating=avg_rating,
        agents=agents,
    )


def new_session(
    session_id: int, shop_id: int, customer_id: int, conv_id: int, category: str, now: int
) -> ServiceSessionRec:
    """The session a customer's first message after the last closed one opens: queued
    until routing assigns it."""
    return ServiceSessionRec(
        id=session_id,
        shop_id=shop_id,
        customer_id=customer_id,
        conv_id=conv_id,
        category=category,
        status="queued",
        agent_id=None,
        queued_at=now,
        assigned_at=None,
        closed_at=None,
        rating=None,
        comment=None,
    )


def first_text(kind: str, body: bytes) -> str:
    """What the routing policy classifies a session by: the text of a text message."""
    if kind != "text":
        return ""
    text = msgspec.json.decode(body).get("text", "")
    return text if isinstance(text, str) else ""


class ForcedChoice:
    """A routing policy that picks one given agent: a transfer to a named agent."""

    def __init__(self, agent_id: int) -> None:
        self.agent_id = agent_id

    def choose(self, category: str, agents: list[AgentLoad], previous_agent: int | None) -> int | None:
        return self.agent_id


def event(name: str, session: ServiceSessionRec, **extra: object) -> bytes:
    payload = {
        "event": name,
        "session_id": str(session.id),
        "shop_id": str(session.shop_id),
        "conv_id": str(session.conv_id),
        "customer_id": str(session.customer_id),
        "category": session.category,
        **extra,
    }
    return _enc.encode(payload)


def queued(session: ServiceSessionRec, position: int | None) -> tuple[int, int, bytes]:
    """Told to the customer when their session waits in the queue."""
    waiting = msgspec.structs.replace(session, status="queued", agent_id=None)
    return (session.customer_id, session.customer_id, event("queued", waiting, position=position))


def assigned(session: ServiceSessionRec, agent_id: int) -> list[tuple[int, int, bytes]]:
    """Told to the agent and to the customer when the session is assigned."""
    now_active = msgspec.structs.replace(session, status="active", agent_id=agent_id)
    payload = event("assigned", now_active, agent_id=str(agent_id))
    return [(agent_id, session.customer_id, payload), (session.customer_id, agent_id, payload)]


def unassigned(session: ServiceSessionRec, agent_id: int) -> tuple[int, int, bytes]:
    """Told to the agent a session is taken from."""
    return (agent_id, session.customer_id, event("unassigned", session, agent_id=str(agent_id)))


def closed(session: ServiceSessionRec, actor_id: int) -> list[tuple[int, int, bytes]]:
    """Told to the customer, and to the agent who was serving, when a session closes."""
    payload = event("closed", msgspec.structs.replace(session, status="closed"))
    told = [(session.customer_id, actor_id, payload)]
    if session.agent_id is not None:
        told.append((session.agent_id, actor_id, payload))
    return told


# --- finding a shop by name ----------------------------------------------------------------------

# A shop accepts customers when someone could ever serve them: an agent with a capacity and a
# skill. A shop nobody serves (just created: its creator is an admin with capacity 0 and no
# skills) would only queue a customer forever, so a search does not offer it, nor a closed
# shop. One SQL
# condition on ``shops s``, the same text in both dialects (it takes no parameters).
ACCEPTS_CUSTOMERS_SQL = (
    "s.closed_at IS NULL"
    " AND EXISTS (SELECT 1 FROM shop_agents a WHERE a.shop_id = s.id AND a.capacity > 0 AND a.skills <> '[]')"
)

# ASCII letters only: both stores fold the stored name the same way in SQL (SQLite's lower()
# knows only ASCII; PostgreSQL's lower() under COLLATE "C" likewise), so the query is folded
# exactly so here. Other scripts match as written; CJK has no case, so a 1- or 2-character
# CJK query is an ordinary substring.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def shop_name_query(q: str) -> str:
    """The text a shop search looks for in the stored names, as both stores fold them: the
    query trimmed and its ASCII letters lower-cased. A query of nothing but spaces is refused."""
    folded = q.strip().translate(_ASCII_LOWER)
    if not folded:
        raise YimError("bad_request", "the shop search needs a name, or part of one")
    return folded
