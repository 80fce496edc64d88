"""The customer-service store interface: shops, agents, service sessions and routing.

A customer has one conversation (type ``service``) with a shop; its members are the
customer and the agent currently serving it. A *session* is one episode of service in
that conversation: opened by the customer's first message after the last one closed,
queued or assigned by the routing policy, transferred, closed, rated.

Every routing decision runs inside one store transaction that reads agent loads and
writes the assignment, so capacity can never be exceeded by concurrent decisions.
Write methods return inbox events ``(user_id, inbox_seq, payload_json)`` of type
``service`` for the customer and the agents concerned.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import msgspec

from yim.storage.relations import InboxWrite


class ShopRec(msgspec.Struct, frozen=True):
    id: int
    name: str
    owner_id: int
    created_at: int


class AgentRec(msgspec.Struct, frozen=True):
    shop_id: int
    user_id: int
    role: str
    skills: list[str]
    capacity: int
    status: str
    open_sessions: int


class ServiceSessionRec(msgspec.Struct, frozen=True):
    id: int
    shop_id: int
    customer_id: int
    conv_id: int
    category: str
    status: str
    agent_id: int | None
    queued_at: int
    assigned_at: int | None
    closed_at: int | None
    rating: int | None
    comment: str | None
    position: int | None = None  # 1-based place in the shop's queue while queued


class ServiceCtx(msgspec.Struct, frozen=True):
    """What routing needs from the live node: who is connected, and the policy."""

    is_connected: Callable[[int], bool]
    policy: Any


class ShopStats(msgspec.Struct, frozen=True):
    queued: int
    queued_by_category: dict[str, int]
    longest_wait_ms: int
    active: int
    closed_today: int
    avg_rating: float | None
    agents: list[AgentRec]


class ServiceStore(abc.ABC):
    ctx: ServiceCtx | None = None

    def may_become_agent(self, user_id: int) -> None:
        """Called before a job that may give the user a shop_agents row (here or in the admin
        store): a backend that remembers who may be an agent adds them; by default nothing."""
        return None

    @abc.abstractmethod
    async def create_shop(self, shop_id: int, name: str, owner_id: int, now: int) -> ShopRec: ...

    @abc.abstractmethod
    async def set_agent(
        self, shop_id: int, actor_id: int, user_id: int, role: str, skills: list[str], capacity: int, now: int
    ) -> tuple[AgentRec, list[InboxWrite]]: ...

    @abc.abstractmethod
    async def remove_agent(self, shop_id: int, actor_id: int, user_id: int, now: int) -> list[InboxWrite]: ...

    @abc.abstractmethod
    async def set_agent_status(self, user_id: int, shop_id: int | None, status: str, now: int) -> list[InboxWrite]:
        """Set an agent's own status in one shop (or all); re-routes or drains as needed."""

    @abc.abstractmethod
    async def agent_presence(self, user_id: int, online: bool, now: int) -> list[InboxWrite]:
        """The agent connected (drain queues) or went offline (re-route their sessions)."""

    def may_be_agent(self, user_id: int) -> bool:
        """False only when the user is certainly no agent, so their presence changes need
        no ``agent_presence`` at all. A store that cannot tell cheaply says True."""
        return True

    @abc.abstractmethod
    async def transfer(
        self, session_id: int, actor_id: int, to_agent: int | None, to_category: str | None, now: int
    ) -> list[InboxWrite]: ...

    @abc.abstractmethod
    async def close(self, session_id: int, actor_id: int, now: int) -> list[InboxWrite]: ...

    @abc.abstractmethod
    async def rate(
        self, session_id: int, customer_id: int, rating: int, comment: str, now: int
    ) -> ServiceSessionRec: ...

    @abc.abstractmethod
    async def shop(self, shop_id: int) -> ShopRec | None: ...

    @abc.abstractmethod
    async def shops_of(self, user_id: int) -> list[ShopRec]: ...

    @abc.abstractmethod
    async def search_shops(self, q: str, offset: int, limit: int) -> list[ShopRec]:
        """Shops that accept customers whose name contains ``q``, ASCII letters in any case
        (``rules.service.shop_name_query``; ``bad_request`` if ``q`` is blank): names that
        start with it first, then shorter names, then older shops; ``limit`` of them from
        ``offset`` of that order."""

    @abc.abstractmethod
    async def agents(self, shop_id: int, viewer_id: int) -> list[AgentRec]: ...

    @abc.abstractmethod
    async def sessions(
        self, viewer_id: int, shop_id: int | None, status: str | None, limit: int
    ) -> list[ServiceSessionRec]:
        """Sessions the viewer serves (agents), or all of a shop's (its admins)."""

    @abc.abstractmethod
    async def customer_session(self, shop_id: int, customer_id: int) -> ServiceSessionRec | None: ...

    @abc.abstractmethod
    async def stats(self, shop_id: int, viewer_id: int, now: int) -> ShopStats: ...
