"""The client's inbox algorithm as a state machine without I/O (docs/protocol.md §12).

:class:`ClientCore` keeps what a device knows of its timelines — the inbox cursor, the
events held above a hole, one cursor per read-fan-out group, the message ids already
delivered — and decides what to hand to the application and what to ask the server for.
It does no I/O and knows no event loop: a driver (the SDK's :class:`~yim.client.Client`,
or any other) feeds it decoded frames and carries out what it asks for:

- ``receive_event``, ``receive_group_entry``, ``sent``, ``read_replied``,
  ``other_reply``: an inbox event, a read-fan-out entry, or a reply that stands for one;
- ``begin_sync`` / ``next_request`` / ``sync_page`` / ``group_page`` / ``pull_failed``:
  one catch-up round, as a series of requests (:class:`SyncInbox`, :class:`PullGroup`)
  whose replies the driver feeds back; ``abort_sync`` when the connection is lost;
- ``gap_expired``: the driver's grace timer for a hole ran out;
- after each of these, ``poll`` says what to deliver (in order), whether to start a
  catch-up round, and whether a hole opened (start the grace timer, then call
  ``gap_expired``).

Every buffer is bounded, with its worst-case memory written next to it. A bound reached
drops entries that the server still has (inbox events above the cursor, group entries
above a group cursor) and asks for a catch-up, which fetches them again: nothing is lost,
and the state never grows with what a server or a network pushes.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from msgspec import Struct

from yim.protocol.frames import AuthOk, GroupHeadOut, MessageOut, Notice, ReadMarker, ReadResult, SendAck

#: message ids remembered to drop a message delivered twice (by two paths, e.g. an inbox
#: entry of a read-fan-out group and its group pull): ~160 bytes each (measured: a 19-digit
#: id and its slot in an OrderedDict), so ~16 MiB at the bound
SEEN_MSG_IDS_MAX: Final = 100_000
#: inbox events held above a hole: each is one decoded event, ~1 KiB for a short text
#: message (measured; a larger body costs its size, bounded by the server's frame limit),
#: so ~10 MiB at the bound for text
HELD_MAX: Final = 10_000
#: read-fan-out entries held above their group cursor, over all groups (same cost per entry)
GROUP_HELD_MAX: Final = 10_000
#: the longest wait between two syncs while a held event sits above a seq the server's head
#: does not cover yet (it commits shortly): 10 ms doubling up to this
HEAD_WAIT_MAX_S: Final = 1.0


class InboxItem(Struct, frozen=True):
    """One durable inbox event, delivered once, in seq order.

    ``data`` is a :class:`MessageOut` for ``type == "message"``, a :class:`ReadMarker` for
    ``"read"``, and the decoded JSON value for event types this SDK does not know yet.
    """

    seq: int
    type: str
    data: Any


class GroupItem(Struct, frozen=True):
    """One entry of a read-fan-out group, delivered once, in ``seq`` order per group.

    ``seq`` is the entry's conversation seq (not an inbox seq); ``data`` is the entry.
    """

    conv_id: str
    seq: int
    data: MessageOut


StreamItem = InboxItem | GroupItem | Notice


# --- what the core asks the driver to request -------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncInbox:
    """Send ``sync(since, limit)`` and feed the page to :meth:`ClientCore.sync_page`, after
    waiting ``delay_s`` (a held event waits for the server's head to cover the seq below it)."""

    since: int
    limit: int
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PullGroup:
    """Send ``history(conv_id, after=after, limit=limit)`` and feed the page to
    :meth:`ClientCore.group_page` (or call :meth:`ClientCore.pull_failed` on an error reply)."""

    conv_id: str
    after: int
    limit: int


SyncRequest = SyncInbox | PullGroup


@dataclass(slots=True)
class Output:
    """What the last inputs produced (see :meth:`ClientCore.poll`)."""

    #: items for the application, in the order they must be seen
    deliver: list[InboxItem | GroupItem] = field(default_factory=list)
    #: start a catch-up round (begin_sync / next_request) unless one runs
    sync: bool = False
    #: entries wait above a hole: start the grace timer, then call gap_expired()
    hole: bool = False
    #: something waits to be placed: the client is not caught up
    unsettled: bool = False


class _Phase(enum.Enum):
    IDLE = enum.auto()  # no catch-up round runs
    INBOX = enum.auto()  # paging the inbox from the cursor
    GROUPS = enum.auto()  # pulling the read-fan-out groups the last page named


@dataclass(slots=True)
class _Pull:
    """A group pull in progress: up to seq ``upto`` (None: to the end); ``forget`` drops the
    group's cursor afterwards (the user is no longer a member)."""

    conv_id: str
    upto: int | None
    forget: bool = False


class ClientCore:
    """The inbox cursor, held events and read-fan-out group cursors of one device.

    ``cursor`` resumes from a stored cursor (0: the whole inbox; None: from the inbox head
    at the first authentication). ``group_cursors`` resumes the read-fan-out groups the
    same way. ``sync_limit`` is the page size of the requests it makes.
    """

    def __init__(
        self,
        *,
        cursor: int | None = 0,
        group_cursors: Mapping[str, int] | None = None,
        sync_limit: int = 100,
        held_max: int = HELD_MAX,
        group_held_max: int = GROUP_HELD_MAX,
        seen_max: int = SEEN_MSG_IDS_MAX,
    ) -> None:
        if sync_limit < 1 or held_max < 1 or group_held_max < 1 or seen_max < 1:
            raise ValueError("sync_limit and the bounds must be at least 1")
        #: highest inbox seq delivered with no hole below it
        self.cursor: int = cursor or 0
        #: read-fan-out groups: conv_id -> highest conversation seq delivered with no hole below
        #: (one per group the user is in: the server bounds the memberships)
        self.group_cursors: dict[str, int] = dict(group_cursors or {})
        self.sync_limit = sync_limit
        self.user_id = ""
        self.device_id = ""
        self._held_max = held_max
        self._group_held_max = group_held_max
        self._seen_max = seen_max
        # with cursor None the first authentication moves the cursors to the heads
        self._from_head = cursor is None
        self._groups_from_head = cursor is None
        #: inbox events above the cursor, by seq, waiting for the hole below them (HELD_MAX)
        self._held: dict[int, InboxItem] = {}
        #: read-fan-out entries above their group cursor, or of a group without a cursor yet,
        #: by conv_id and seq (GROUP_HELD_MAX in all)
        self._group_held: dict[str, dict[int, MessageOut]] = {}
        self._group_held_count = 0
        #: message ids delivered lately, oldest first (SEEN_MSG_IDS_MAX)
        self._seen: OrderedDict[str, None] = OrderedDict()
        # what poll() hands over; emptied by every poll, so it holds what one input produced
        # (at most one sync page, one history page, or the held entries it released)
        self._out = Output()
        # the catch-up round
        self._phase = _Phase.IDLE
        #: events of the last sync page not yet taken (one page: at most sync_limit events)
        self._page: deque[InboxItem] = deque()
        self._page_wanted = False  # the next inbox request is due
        self._page_has_more = False
        self._page_groups: list[GroupHeadOut] = []
        self._since = 0  # the `since` of the last sync request
        self._idle_rounds = 0  # syncs in a row that did not move the cursor while events wait
        self._request_out = False  # a request of the round awaits its reply
        self._pull: _Pull | None = None  # the pull in progress
        self._pulled_for_head = False  # the pull before the page's first event is done
        self._group_work: deque[_Pull] = deque()  # pulls left in the GROUPS phase (one per group)

    # -- state -----------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        """Entries wait above a hole (inbox or group), or for their group's cursor."""
        return bool(self._held or self._group_held)

    @property
    def syncing(self) -> bool:
        return self._phase is not _Phase.IDLE

    def poll(self) -> Output:
        """What the inputs since the last poll produced; the driver delivers ``deliver`` in
        order and acts on the flags."""
        out, self._out = self._out, Output()
        return out

    # -- inputs: the connection --------------------------------------------------------------------
    def authenticated(self, auth: AuthOk) -> None:
        """A connection is authenticated. The first one places a cursor of None at the head."""
        self.user_id = auth.user_id
        self.device_id = auth.device_id
        if self._from_head:
            self._from_head = False
            self.cursor = max(self.cursor, auth.inbox_seq)

    def abort_sync(self) -> None:
        """The connection was lost: the round in progress is dropped (the next connection
        starts a new one from the cursor; nothing taken so far is taken again)."""
        self._phase = _Phase.IDLE
        self._page.clear()
        self._page_groups = []
        self._request_out = False
        self._pull = None
        self._pulled_for_head = False
        self._group_work.clear()

    def gap_expired(self) -> bool:
        """The grace timer of a hole ran out. Returns whether entries still wait (a gap: the
        core then asks for a catch-up)."""
        if self.holding:
            self._out.sync = True
            return True
        return False

    # -- inputs: events and replies ------------------------------------------------------------------
    def receive_event(self, item: InboxItem) -> None:
        """An inbox event: pushed, or the device's own event stood for by a reply."""
        self._accept(item)

    def receive_group_entry(self, entry: MessageOut) -> None:
        """An entry of a read-fan-out group: a ``group_message`` notice, or the device's own."""
        self._group_accept(entry)

    def sent(
        self,
        ack: SendAck,
        *,
        kind: str,
        body: Any,
        client_msg_id: str,
        mentions: Sequence[str] = (),
        mention_all: bool = False,
    ) -> MessageOut:
        """The reply to this device's ``send``: it stands for the message's event (§12.2),
        which the server does not push to this connection. Returns the message built."""
        message = MessageOut(
            msg_id=ack.msg_id,
            conv_id=ack.conv_id,
            seq=ack.seq,
            sender_id=self.user_id,
            sender_device=self.device_id,
            kind=kind,
            body=body,
            client_msg_id=client_msg_id,
            created_at=ack.created_at,
            mentions=list(mentions),
            mention_all=mention_all,
        )
        if ack.inbox_seq == 0:  # a read-fan-out group: the entry is in the group timeline only
            self._group_accept(message)
        else:
            self._accept(InboxItem(seq=ack.inbox_seq, type="message", data=message))
        return message

    def read_replied(self, result: ReadResult) -> None:
        """The reply to this device's ``read``: it stands for its ``read`` event."""
        if result.inbox_seq > 0:
            marker = ReadMarker(conv_id=result.conv_id, read_seq=result.read_seq)
            self._accept(InboxItem(seq=result.inbox_seq, type="read", data=marker))

    def other_reply(self, result: Mapping[str, Any]) -> None:
        """The reply to any other op (a recall, a group change): if it names an entry this
        device has not got (its event is not pushed to the acting connection), catch up."""
        seq = result.get("inbox_seq")
        if isinstance(seq, int) and seq > self.cursor:
            self._out.sync = True
            return
        # A change in a read-fan-out group names its entry by conversation seq only, with
        # inbox_seq 0: pull the group if that entry is news.
        group = result.get("group")
        conv_id = result.get("conv_id") or (group.get("conv_id") if isinstance(group, dict) else None)
        entry_seq = result.get("recall_seq") or result.get("seq")
        if seq == 0 and isinstance(conv_id, str) and isinstance(entry_seq, int):
            cursor = self.group_cursors.get(conv_id)
            is_read_group = isinstance(group, dict) and group.get("fanout") == "read"
            if (cursor is not None and entry_seq > cursor) or (cursor is None and is_read_group):
                self._out.sync = True

    # -- the catch-up round ------------------------------------------------------------------------
    def begin_sync(self) -> None:
        """Start a round: page the inbox from the cursor to the head until no hole is left,
        then bring every read-fan-out group the last page names up to its head."""
        self.abort_sync()
        self._phase = _Phase.INBOX
        self._page_wanted = True
        self._idle_rounds = 0

    def next_request(self) -> SyncRequest | None:
        """The next request of the round, or None once the round is over. Call again after
        feeding each reply (or ``pull_failed``)."""
        if self._request_out:
            raise RuntimeError("the reply to the last request has not been fed yet")
        request: SyncRequest | None = None
        if self._phase is _Phase.INBOX:
            request = self._next_inbox_request()
        if request is None and self._phase is _Phase.GROUPS:
            request = self._next_group_request()
        self._request_out = request is not None
        return request

    def sync_page(self, events: Iterable[InboxItem], *, has_more: bool, groups: Sequence[GroupHeadOut]) -> None:
        """The reply to a :class:`SyncInbox` request (events decoded, in page order)."""
        if self._phase is not _Phase.INBOX or not self._request_out or self._pull is not None:
            raise RuntimeError("no sync request is out")
        self._request_out = False
        self._page.extend(events)
        self._page_has_more = has_more
        self._page_groups = list(groups)
        self._pulled_for_head = False

    def group_page(self, conv_id: str, messages: Sequence[MessageOut], *, has_more: bool) -> None:
        """The reply to a :class:`PullGroup` request."""
        self._check_pull(conv_id)
        before = self.group_cursors.get(conv_id)
        for entry in messages:
            self._group_accept(entry)
        after = self.group_cursors.get(conv_id)
        # the pull goes on while the page says there is more and the cursor moved (a page
        # that moves nothing would be asked for again and again)
        if not (has_more and messages and after is not None and after != before):
            self._end_pull()

    def pull_failed(self, conv_id: str) -> None:
        """The server refused a :class:`PullGroup` (e.g. removed meanwhile): that pull ends,
        the round goes on (the next round forgets a group the server no longer names)."""
        self._check_pull(conv_id)
        self._end_pull()

    def _check_pull(self, conv_id: str) -> None:
        pull = self._pull
        if not self._request_out or pull is None or pull.conv_id != conv_id:
            raise RuntimeError(f"no pull of {conv_id} is out")
        self._request_out = False

    def _end_pull(self) -> None:
        pull = self._pull
        assert pull is not None
        self._pull = None
        if self._phase is _Phase.INBOX:
            self._pulled_for_head = True
        elif pull.forget:
            self.group_cursors.pop(pull.conv_id, None)
            self._drop_group_held(pull.conv_id)

    def _next_inbox_request(self) -> SyncRequest | None:
        while self._page:
            item = self._page[0]
            entry = item.data
            if (
                not self._pulled_for_head
                and item.seq > self.cursor
                and isinstance(entry, MessageOut)
                and entry.conv_id in self.group_cursors
            ):
                # an inbox entry of a read-fan-out group (left, removed, dissolved): the
                # group's earlier entries go first
                request = self._pull_request(_Pull(entry.conv_id, upto=entry.seq - 1))
                if request is not None:
                    return request
            self._page.popleft()
            self._pulled_for_head = False
            self._accept(item)
        if self._page_wanted or self._page_has_more:
            return self._sync_request(0.0)
        if self._held:
            # Held events sit above a seq the head did not cover yet: it commits shortly.
            self._idle_rounds = self._idle_rounds + 1 if self.cursor == self._since else 0
            return self._sync_request(min(HEAD_WAIT_MAX_S, 0.01 * 2**self._idle_rounds))
        self._start_groups()
        return None

    def _sync_request(self, delay_s: float) -> SyncInbox:
        self._page_wanted = False
        self._page_has_more = False
        self._since = self.cursor
        return SyncInbox(since=self.cursor, limit=self.sync_limit, delay_s=delay_s)

    def _start_groups(self) -> None:
        """Place every group the last page named, then queue the pulls that bring them to
        their heads, and those of groups no longer named (to take what is still visible up
        to the end of the membership, then forget them)."""
        self._phase = _Phase.GROUPS
        from_head, self._groups_from_head = self._groups_from_head, False
        listed: set[str] = set()
        for head in self._page_groups:
            listed.add(head.conv_id)
            start = head.last_seq if from_head else head.from_seq
            self.group_cursors[head.conv_id] = max(self.group_cursors.get(head.conv_id, start), head.from_seq)
            self._group_drain(head.conv_id)
            if head.last_seq > self.group_cursors[head.conv_id]:
                self._group_work.append(_Pull(head.conv_id, upto=None))
        for conv_id in self.group_cursors:
            if conv_id not in listed:
                self._group_work.append(_Pull(conv_id, upto=None, forget=True))
        self._page_groups = []

    def _next_group_request(self) -> SyncRequest | None:
        if self._pull is not None:  # the pull before goes on (its last page had more)
            request = self._pull_request(self._pull)
            if request is not None:
                return request
        while self._group_work:
            pull = self._group_work.popleft()
            request = self._pull_request(pull)
            if request is not None:
                return request
        # Held entries of groups no page named (e.g. a notice that raced the sync): they are
        # ahead of their head or no longer ours.
        for conv_id in [c for c in self._group_held if c not in self.group_cursors]:
            self._drop_group_held(conv_id)
        self._phase = _Phase.IDLE
        return None

    def _pull_request(self, pull: _Pull) -> PullGroup | None:
        """The next page of a pull, or None if it has nothing left to fetch."""
        after = self.group_cursors.get(pull.conv_id)
        if after is None:
            self._pull = None
            return None
        limit = self.sync_limit
        if pull.upto is not None:
            if after >= pull.upto:
                self._pull = None
                if self._phase is _Phase.INBOX:
                    self._pulled_for_head = True
                return None
            limit = min(limit, pull.upto - after)
        self._pull = pull
        return PullGroup(conv_id=pull.conv_id, after=after, limit=limit)

    # -- placing entries -------------------------------------------------------------------------
    def _accept(self, item: InboxItem) -> None:
        """Take one inbox event (pushed, synced, or stood for by a reply)."""
        seq = item.seq
        if seq <= self.cursor or seq in self._held:
            return  # a duplicate
        held = self._held
        if len(held) >= self._held_max:
            # Full: keep the seqs nearest the cursor; the dropped one is fetched again by the
            # catch-up the hole causes.
            highest = max(held)
            if seq > highest:
                self._out.sync = True
                self._out.hole = self._out.unsettled = True
                return
            del held[highest]
            self._out.sync = True
        held[seq] = item
        nxt = self.cursor + 1
        while nxt in held:
            self.cursor = nxt
            self._deliver(held.pop(nxt))
            nxt += 1
        if held:
            self._out.hole = self._out.unsettled = True

    def _deliver(self, item: InboxItem | GroupItem) -> None:
        if isinstance(item.data, MessageOut):
            msg_id = item.data.msg_id
            if msg_id in self._seen:
                return
            self._seen[msg_id] = None
            if len(self._seen) > self._seen_max:
                self._seen.popitem(last=False)
            conv_id = item.data.conv_id
            if isinstance(item, InboxItem) and conv_id in self.group_cursors:
                # an inbox entry of a read-fan-out group (left, removed, dissolved): the
                # membership changed, so reconcile the group cursors with a sync soon
                if item.data.seq == self.group_cursors[conv_id] + 1:
                    self.group_cursors[conv_id] = item.data.seq
                self._out.sync = True
        self._out.deliver.append(item)

    def _group_accept(self, entry: MessageOut) -> None:
        """Take one entry of a read-fan-out group (notice, pull, or own reply)."""
        conv_id, seq = entry.conv_id, entry.seq
        cursor = self.group_cursors.get(conv_id)
        if cursor is not None and seq <= cursor:
            return  # a duplicate
        held = self._group_held.setdefault(conv_id, {})
        if seq not in held:
            next_in_line = cursor is not None and seq == cursor + 1  # taken at once, never kept
            if self._group_held_count >= self._group_held_max and not next_in_line:
                # Full: keep the group's seqs nearest its cursor; the dropped entry stays in
                # the group timeline, and the catch-up pulls it.
                self._out.sync = self._out.unsettled = True
                highest = max(held, default=0)
                if seq > highest:
                    if not held:
                        del self._group_held[conv_id]
                    return
                del held[highest]
                self._group_held_count -= 1
            held[seq] = entry
            self._group_held_count += 1
        if cursor is None:
            # not known yet: the next sync page says where this group's entries start
            self._out.unsettled = True
            self._out.sync = True
            return
        self._group_drain(conv_id)

    def _group_drain(self, conv_id: str) -> None:
        """Deliver the held entries of a group that follow its cursor without a hole."""
        held = self._group_held.get(conv_id)
        cursor = self.group_cursors.get(conv_id)
        if held is None or cursor is None:
            return
        for seq in [s for s in held if s <= cursor]:
            del held[seq]
            self._group_held_count -= 1
        nxt = cursor + 1
        while nxt in held:
            entry = held.pop(nxt)
            self._group_held_count -= 1
            self._deliver(GroupItem(conv_id=conv_id, seq=nxt, data=entry))
            self.group_cursors[conv_id] = nxt
            nxt += 1
        if held:
            self._out.hole = self._out.unsettled = True
        else:
            del self._group_held[conv_id]

    def _drop_group_held(self, conv_id: str) -> None:
        held = self._group_held.pop(conv_id, None)
        if held:
            self._group_held_count -= len(held)
