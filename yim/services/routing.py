"""Message routing (消息分流): which agent of a shop serves a customer's session.

The policy is one object with two pure methods, so a shop can swap in its own:
``classify`` picks a session's category (the skill it needs) from the first message,
``choose`` picks an agent among candidates. The store calls ``choose`` *inside* the
transaction that assigns the session, with loads read in that same transaction — so two
sessions can never both take an agent's last free slot.

Default rules, in order:
1. only agents whose status is online (set by the agent and connected) and who have the
   session's skill, and who are below their capacity;
2. the customer's previous agent first, if eligible (sticky);
3. otherwise the least busy (open sessions / capacity), ties broken round-robin — the
   agent assigned least recently goes first;
4. nobody eligible -> ``None``: the session waits in the shop's queue (FIFO by wait time).
"""

from __future__ import annotations

import re
from typing import Protocol

from yim.storage.records import AgentLoad


class RoutingPolicy(Protocol):
    def classify(self, text: str, requested: str | None) -> str: ...

    def choose(self, category: str, agents: list[AgentLoad], previous_agent: int | None) -> int | None: ...


_AFTER_SALE = re.compile(r"订单|退款|退货|售后|物流|快递|order|refund|return|tracking|#\s*\d{6,}|\b\d{10,}\b", re.I)


class DefaultRouting:
    categories = ("pre_sale", "after_sale")

    def classify(self, text: str, requested: str | None) -> str:
        if requested:
            return requested
        # Mentioning an order (a word about orders, or an order-number-like digit run) means after-sale.
        return "after_sale" if _AFTER_SALE.search(text) else "pre_sale"

    def choose(self, category: str, agents: list[AgentLoad], previous_agent: int | None) -> int | None:
        eligible = [a for a in agents if a.online and category in a.skills and a.open_sessions < a.capacity]
        if not eligible:
            return None
        for a in eligible:
            if a.user_id == previous_agent:
                return a.user_id
        best = min(eligible, key=lambda a: (a.open_sessions / a.capacity, a.last_assigned_at, a.user_id))
        return best.user_id
