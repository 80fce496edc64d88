"""Customer service (客服): shops, agents and routing customers' sessions to agents.

A customer messages a *shop* (``send`` with ``shop_id``), never an agent; the first
message after the last session closed opens a session, which the routing policy
(:mod:`yim.services.routing`) assigns to an agent or queues. Messages use the same
pipeline as every chat (ids, seqs, durable ACK, sync, unread). Agents' availability
follows their connection (debounced presence) and the status they set; when an agent
goes offline — including a connection that died without a close and timed out — their
open sessions are re-routed by the same rules, and the new agent sees the full history.

Cluster mode: an agent counts as connected when online on any node (the shared copy of
online agents, :mod:`yim.bus.cluster_state`), so a shop's routing on one node sees agents
connected to another; their load (open sessions) is in the shared store already. The one
node that sees an agent's cluster-wide presence change updates the copy, then drains or
re-routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import (
    AgentOut,
    AgentStatus,
    DashboardOut,
    ServiceClose,
    ServiceRate,
    ServiceSessionOut,
    ServiceSessions,
    ServiceStatus,
    ServiceTransfer,
    ShopAgentRemove,
    ShopAgents,
    ShopAgentSet,
    ShopCreate,
    ShopDashboard,
    ShopInfo,
    ShopOut,
    ShopPage,
    Shops,
    ShopSearch,
)
from yim.protocol.ids import parse_id
from yim.services.routing import DefaultRouting, RoutingPolicy
from yim.storage.records import SessionRec
from yim.storage.relations import InboxWrite
from yim.storage.service import AgentRec, ServiceCtx, ServiceSessionRec, ShopRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device

log = logging.getLogger("yim.service")
_event_decoder = msgspec.json.Decoder(dict)


def session_event(ev: dict[str, Any]) -> dict[str, Any]:
    """The data of a session_opened / session_closed webhook event, from the service event."""
    return {k: ev.get(k) for k in ("session_id", "shop_id", "conv_id", "customer_id", "category")}


def _now() -> int:
    return int(time.time() * 1000)


class CustomerService:
    """Wires routing to the live node: who is connected, which users are agents."""

    def __init__(self, node: Context, policy: RoutingPolicy | None = None) -> None:
        self._node = node
        self.policy: RoutingPolicy = policy or DefaultRouting()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._node.store.service.ctx = ServiceCtx(is_connected=self.is_connected, policy=self.policy)

    def is_connected(self, user_id: int) -> bool:
        """Is this agent connected to this node or (cluster mode) to any node."""
        if self._node.hub.devices_of(user_id):
            return True
        cluster = self._node.cluster
        return cluster is not None and cluster.agent_connected(user_id)

    def publish(self, events: list[InboxWrite], origin: Device | None = None) -> None:
        metrics = self._node.metrics
        closed: dict[str, Any] = {}  # session id -> its "closed" event (told to several users)
        for user_id, inbox_seq, payload in events:
            # Pushed to the requesting connection too, so its cursor sees no gap.
            self._node.bus.publish_event([(user_id, inbox_seq)], "service", payload)
            ev = _event_decoder.decode(payload)
            if ev["event"] in ("assigned", "unassigned", "closed"):
                self._node.rosters.invalidate(int(ev["conv_id"]))
            if ev["event"] == "closed" and ev["session_id"] not in closed:
                closed[ev["session_id"]] = ev
            if ev["event"] == "assigned" and ev.get("agent_id") == str(user_id):
                metrics.service_assignments.inc()
            elif ev["event"] == "queued":
                metrics.service_queued.inc()
        hooks = self._node.hooks
        if closed and hooks is not None and hooks.takes("session_closed"):
            for ev in closed.values():
                hooks.emit_soon("session_closed", int(ev["session_id"]), session_event(ev))

    def presence_changed(self, user_id: int, online: bool) -> None:
        """Called with debounced presence; a no-op for users who are not agents (one
        indexed read in the writer, only when someone's presence really changed)."""
        if not self._node.store.service.may_be_agent(user_id):
            return  # nearly every user: not even a task (a burst of connects calls this per user)
        task = asyncio.get_running_loop().create_task(self._presence(user_id, online))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def agent_added(self, user_id: int) -> None:
        """Cluster mode: a user just became an agent; if they are online on some node, every
        node's copy of online agents must count them from now on."""
        cluster = self._node.cluster
        if cluster is None or cluster.agent_connected(user_id):
            return
        state, _ = (await self._node.presence.view([user_id]))[user_id]
        if state[0] != "offline":
            await self._presence(user_id, True)

    async def _presence(self, user_id: int, online: bool) -> None:
        try:
            cluster = self._node.cluster
            if cluster is not None:
                if not await self._node.store.service.shops_of(user_id):
                    return  # no agent: nothing to share, nothing to route
                try:
                    await cluster.agent_online(user_id, online)
                except Exception as exc:  # the local copy is updated; other nodes catch up
                    cluster.unavailable(exc)
            self.publish(await self._node.store.service.agent_presence(user_id, online, _now()))
        except YimError:
            pass
        except Exception:
            log.exception("re-routing after a presence change of %d failed", user_id)


def shop_out(s: ShopRec) -> ShopOut:
    return ShopOut(shop_id=str(s.id), name=s.name, owner_id=str(s.owner_id), created_at=s.created_at)


def agent_out(node: Context, a: AgentRec) -> AgentOut:
    return AgentOut(
        shop_id=str(a.shop_id),
        user_id=str(a.user_id),
        role=a.role,
        skills=a.skills,
        capacity=a.capacity,
        status=a.status,
        online=node.service.is_connected(a.user_id),
        open_sessions=a.open_sessions,
    )


def session_out(s: ServiceSessionRec) -> ServiceSessionOut:
    return ServiceSessionOut(
        session_id=str(s.id),
        shop_id=str(s.shop_id),
        customer_id=str(s.customer_id),
        conv_id=str(s.conv_id),
        category=s.category,
        status=s.status,
        agent_id=str(s.agent_id) if s.agent_id else None,
        queued_at=s.queued_at,
        assigned_at=s.assigned_at,
        closed_at=s.closed_at,
        rating=s.rating,
        comment=s.comment,
        position=s.position,
    )


async def shop_create(node: Context, session: SessionRec, req: ShopCreate, origin: Device | None = None) -> ShopOut:
    return shop_out(await node.store.service.create_shop(node.ids.next_id(), req.name, session.user_id, _now()))


async def shop_info(node: Context, session: SessionRec, req: ShopInfo, origin: Device | None = None) -> ShopOut:
    """A shop's public card (any signed-in user: customers look a shop up before writing)."""
    shop = await node.store.service.shop(parse_id(req.shop_id, "shop"))
    if shop is None:
        raise YimError("not_found", f"no shop {req.shop_id}")
    return shop_out(shop)


async def shop_search(node: Context, session: SessionRec, req: ShopSearch, origin: Device | None = None) -> ShopPage:
    """Shops a customer can write to, by a part of their name (any signed-in user)."""
    found = await node.store.service.search_shops(req.q, req.offset, req.limit + 1)
    more = len(found) > req.limit
    next_offset = req.offset + req.limit if more and req.offset + req.limit <= SHOP_SEARCH_DEPTH else None
    return ShopPage(shops=[shop_out(s) for s in found[: req.limit]], next_offset=next_offset)


# How deep paging goes (ShopSearch.offset's bound): past the first thousand matches a
# customer types more of the name, and no deeper OFFSET scan is ever asked for.
SHOP_SEARCH_DEPTH = 1000


async def shops(node: Context, session: SessionRec, req: Shops, origin: Device | None = None) -> dict[str, list]:
    return {"shops": [shop_out(s) for s in await node.store.service.shops_of(session.user_id)]}


async def agent_set(node: Context, session: SessionRec, req: ShopAgentSet, origin: Device | None = None) -> AgentOut:
    agent, events = await node.store.service.set_agent(
        parse_id(req.shop_id, "shop"),
        session.user_id,
        parse_id(req.user_id, "user"),
        req.role,
        list(dict.fromkeys(req.skills)),
        req.capacity,
        _now(),
    )
    node.service.publish(events, origin)
    await node.service.agent_added(agent.user_id)
    return agent_out(node, agent)


async def agent_remove(
    node: Context, session: SessionRec, req: ShopAgentRemove, origin: Device | None = None
) -> dict[str, bool]:
    events = await node.store.service.remove_agent(
        parse_id(req.shop_id, "shop"), session.user_id, parse_id(req.user_id, "user"), _now()
    )
    node.service.publish(events, origin)
    return {"removed": True}


async def agents(node: Context, session: SessionRec, req: ShopAgents, origin: Device | None = None) -> dict[str, list]:
    rows = await node.store.service.agents(parse_id(req.shop_id, "shop"), session.user_id)
    return {"agents": [agent_out(node, a) for a in rows]}


async def agent_status(
    node: Context, session: SessionRec, req: AgentStatus, origin: Device | None = None
) -> dict[str, str]:
    shop_id = parse_id(req.shop_id, "shop") if req.shop_id else None
    events = await node.store.service.set_agent_status(session.user_id, shop_id, req.status, _now())
    node.service.publish(events, origin)
    return {"status": req.status}


async def sessions(
    node: Context, session: SessionRec, req: ServiceSessions, origin: Device | None = None
) -> dict[str, list]:
    shop_id = parse_id(req.shop_id, "shop") if req.shop_id else None
    rows = await node.store.service.sessions(session.user_id, shop_id, req.status, req.limit)
    return {"sessions": [session_out(s) for s in rows]}


async def status(
    node: Context, session: SessionRec, req: ServiceStatus, origin: Device | None = None
) -> ServiceSessionOut:
    found = await node.store.service.customer_session(parse_id(req.shop_id, "shop"), session.user_id)
    if found is None:
        raise YimError("not_found", "you have no service session with this shop")
    return session_out(found)


async def transfer(
    node: Context, session: SessionRec, req: ServiceTransfer, origin: Device | None = None
) -> dict[str, bool]:
    if (req.to_agent is None) == (req.to_category is None):
        raise YimError("bad_request", "give exactly one of `to_agent` or `to_category`")
    events = await node.store.service.transfer(
        parse_id(req.session_id, "session"),
        session.user_id,
        parse_id(req.to_agent, "user") if req.to_agent else None,
        req.to_category,
        _now(),
    )
    node.service.publish(events, origin)
    return {"transferred": True}


async def close(node: Context, session: SessionRec, req: ServiceClose, origin: Device | None = None) -> dict[str, bool]:
    events = await node.store.service.close(parse_id(req.session_id, "session"), session.user_id, _now())
    node.service.publish(events, origin)
    return {"closed": True}


async def rate(node: Context, session: SessionRec, req: ServiceRate, origin: Device | None = None) -> ServiceSessionOut:
    rec = await node.store.service.rate(
        parse_id(req.session_id, "session"), session.user_id, req.rating, req.comment, _now()
    )
    return session_out(rec)


async def dashboard(
    node: Context, session: SessionRec, req: ShopDashboard, origin: Device | None = None
) -> DashboardOut:
    st = await node.store.service.stats(parse_id(req.shop_id, "shop"), session.user_id, _now())
    return DashboardOut(
        shop_id=req.shop_id,
        queued=st.queued,
        queued_by_category=st.queued_by_category,
        longest_wait_ms=st.longest_wait_ms,
        active=st.active,
        closed_today=st.closed_today,
        avg_rating=st.avg_rating,
        agents=[agent_out(node, a) for a in st.agents],
    )
