"""Multi-device sync: a device pulls its user's inbox after its cursor.

Every device keeps a cursor — the highest inbox seq it holds. Pushes are a shortcut; the
inbox is the truth: on (re)connect, or on seeing a gap in pushed seqs, the device asks for
``sync(since=cursor)`` and pages until ``has_more`` is false. Seqs are gap-free, so
``next_since`` is always the last event's seq and a device can never skip an event.

Read-fan-out groups are not in the inbox: each sync page also lists them with their head
seq, and the device pulls ``history(after=its group cursor)`` where the head is ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from yim.protocol.frames import Event, GroupHeadOut, SyncPage
from yim.services.wire import event_payload
from yim.storage.base import SessionRec

if TYPE_CHECKING:
    from yim.node import Node

#: A page stops growing past this many payload bytes, so a reply of long messages always
#: fits a connection's send buffer (max_send_buffer_bytes) with room to spare.
REPLY_BUDGET_BYTES = 1024 * 1024
T = TypeVar("T")


def within_budget(items: list[T], size: Callable[[T], int], budget: int = REPLY_BUDGET_BYTES) -> list[T]:
    """The longest prefix of items whose sizes add up to the budget (at least one item)."""
    total = 0
    for i, item in enumerate(items):
        total += size(item)
        if i and total > budget:
            return items[:i]
    return items


async def sync(node: Node, session: SessionRec, since: int, limit: int) -> SyncPage:
    limit = min(limit, node.settings.sync_page_max)
    events, head = await node.store.sync(session.user_id, since, limit)
    payloads = within_budget([(e, event_payload(e)) for e in events], lambda pair: len(pair[1]))
    # What did not fit comes with the next page (has_more).
    out = [Event(seq=e.seq, type=e.type, data=msgspec.Raw(payload)) for e, payload in payloads]
    next_since = out[-1].seq if out else since
    groups = [
        GroupHeadOut(conv_id=str(g.conv_id), last_seq=g.last_seq, from_seq=g.from_seq)
        for g in await node.store.read_groups(session.user_id)
    ]
    return SyncPage(events=out, next_since=next_since, head=head, has_more=next_since < head, groups=groups)
