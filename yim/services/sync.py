"""Multi-device sync: a device pulls its user's inbox after its cursor.

Every device keeps a cursor — the highest inbox seq it holds. Pushes are a shortcut; the
inbox is the truth: on (re)connect, or on seeing a gap in pushed seqs, the device asks for
``sync(since=cursor)`` and pages until ``has_more`` is false. Seqs are gap-free, so
``next_since`` is always the last event's seq and a device can never skip an event.

Read-fan-out groups are not in the inbox: each sync page also lists them with their head
seq, and the device pulls ``history(after=its group cursor)`` where the head is ahead.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from yim.protocol.frames import Event, GroupHeadOut, SyncPage
from yim.services.wire import event_payload
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context

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


#: What one page needs from the store: inbox events, the inbox head, read-fan-out groups.
PageRead = tuple[list[Any], int, list[Any]]


class ReadAhead:
    """The next sync page of devices that are paging through a backlog, read while the
    device is busy with the current one.

    A device catching up asks for page after page, each waiting for the previous reply;
    reading page k+1 while page k travels and is processed overlaps the store's work with
    the client's. The inbox is append-only, so a page read early holds the same events;
    its ``head`` may be a little older, which is the same race as any page read just
    before new events: they reach the device by push, since it was connected already.

    Invariant: a page serves a connection only if it was read after that connection was
    registered for pushes. A page read before then (for the device's previous connection,
    cut while paging) may end below events committed while no connection of the device
    was registered: they were pushed to no one, and that page would tell the new
    connection it is caught up (``has_more`` false) without them. So registering a
    connection drops its device's page (:meth:`forget`), in the same loop turn.

    Bounded: at most ``max_devices`` pages are held (≈ 1 MiB each at worst, by the reply
    budget); past that, the oldest is dropped (its device just reads its page itself).
    A page is used only by the same device asking for exactly that cursor and limit.
    """

    def __init__(self, max_devices: int = 64) -> None:
        self.max_devices = max_devices
        self._pages: OrderedDict[tuple[int, str], tuple[int, int, asyncio.Task[PageRead]]] = OrderedDict()
        self.hits = 0

    def take(self, user_id: int, device_id: str, since: int, limit: int) -> asyncio.Task[Any] | None:
        entry = self._pages.pop((user_id, device_id), None)
        if entry is None:
            return None
        at, size, task = entry
        if at == since and size == limit:
            self.hits += 1
            return task
        task.cancel()
        return None

    def forget(self, user_id: int, device_id: str) -> None:
        """A connection of the device was registered: no page read before it may serve it."""
        entry = self._pages.pop((user_id, device_id), None)
        if entry is not None:
            entry[2].cancel()

    def start(self, node: Context, user_id: int, device_id: str, since: int, limit: int) -> None:
        key = (user_id, device_id)
        old = self._pages.pop(key, None)
        if old is not None:
            old[2].cancel()
        while len(self._pages) >= self.max_devices:
            _key, (_at, _size, dropped) = self._pages.popitem(last=False)
            dropped.cancel()
        task = asyncio.get_running_loop().create_task(_read_page(node, user_id, since, limit))
        task.add_done_callback(_consume)
        self._pages[key] = (since, limit, task)

    async def close(self) -> None:
        """Drop every page held (the store is about to close)."""
        tasks = [task for _at, _size, task in self._pages.values()]
        self._pages.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _consume(task: asyncio.Task[Any]) -> None:
    """A dropped read-ahead's outcome is nobody's: do not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _read_page(node: Context, user_id: int, since: int, limit: int) -> PageRead:
    """A page's inbox events and head, and the read-fan-out groups, read side by side (two
    reader threads): the groups list is a snapshot of its own either way."""
    (events, head), groups = await asyncio.gather(
        node.store.sync(user_id, since, limit), node.store.read_groups(user_id)
    )
    return events, head, groups


async def sync(node: Context, session: SessionRec, since: int, limit: int) -> SyncPage:
    limit = min(limit, node.settings.sync_page_max)
    early = node.read_ahead.take(session.user_id, session.device_id, since, limit)
    events, head, heads = await (early if early is not None else _read_page(node, session.user_id, since, limit))
    payloads = within_budget([(e, event_payload(e)) for e in events], lambda pair: len(pair[1]))
    # What did not fit comes with the next page (has_more).
    out = [Event(seq=e.seq, type=e.type, data=msgspec.Raw(payload)) for e, payload in payloads]
    next_since = out[-1].seq if out else since
    # A group the user left is listed on the page that carries their leave entry, so a
    # device that was offline then pulls the entries before it (§12.3); never again after.
    left_here = {(e.conv_id, e.conv_seq) for e, _payload in payloads if e.type == "message"}
    listed = [g for g in heads if not g.left or (g.conv_id, g.last_seq) in left_here]
    # Reactions in read-fan-out groups are in no inbox: the version tells a device to pull them.
    versions = await node.store.reactions.versions([g.conv_id for g in listed]) if listed else {}
    groups = [
        GroupHeadOut(
            conv_id=str(g.conv_id), last_seq=g.last_seq, from_seq=g.from_seq, reaction_ver=versions.get(g.conv_id, 0)
        )
        for g in listed
    ]
    if next_since < head:  # more to come: read the next page while this one travels
        node.read_ahead.start(node, session.user_id, session.device_id, next_since, limit)
    return SyncPage(events=out, next_since=next_since, head=head, has_more=next_since < head, groups=groups)
