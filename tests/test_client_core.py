"""The client core (yim/client/core.py) without a node: docs/protocol.md §12 as a table.

Each case feeds the core decoded frames, answers the requests it makes from a timeline
written out in the case (what the server holds), and checks what reaches the application
and what was asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yim.client.core import ClientCore, GroupItem, InboxItem, PullGroup, SyncInbox, SyncRequest
from yim.protocol.frames import AuthOk, GroupHeadOut, MessageOut, ReadResult, SendAck


def message(seq: int, conv_id: str = "c1", msg_id: str | None = None) -> MessageOut:
    return MessageOut(
        msg_id=msg_id or f"{conv_id}-{seq}",
        conv_id=conv_id,
        seq=seq,
        sender_id="u2",
        sender_device="d2",
        kind="text",
        body={"text": f"m{seq}"},
        client_msg_id=f"k{conv_id}{seq}",
        created_at=seq,
    )


def event(seq: int, msg_id: str | None = None) -> InboxItem:
    return InboxItem(seq=seq, type="message", data=message(seq, "c1", msg_id or f"m{seq}"))


def auth(inbox_seq: int = 0) -> AuthOk:
    return AuthOk(
        user_id="u1",
        device_id="d1",
        platform="desktop",
        inbox_seq=inbox_seq,
        heartbeat_s=25,
        idle_timeout_s=60,
        max_frame_bytes=1 << 20,
        server_time=0,
    )


@dataclass
class Timeline:
    """What the server holds: the inbox up to ``head`` and the read-fan-out groups."""

    inbox: list[InboxItem] = field(default_factory=list)
    head: int | None = None  # committed up to here (default: all of ``inbox``)
    groups: dict[str, list[MessageOut]] = field(default_factory=dict)
    from_seq: dict[str, int] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # groups whose history is refused

    def answer(self, core: ClientCore, request: SyncRequest) -> None:
        if isinstance(request, SyncInbox):
            head = len(self.inbox) if self.head is None else self.head
            events = [e for e in self.inbox if request.since < e.seq <= head]
            page = events[: request.limit]
            heads = [
                GroupHeadOut(conv_id=c, last_seq=len(entries), from_seq=self.from_seq.get(c, 0))
                for c, entries in self.groups.items()
            ]
            core.sync_page(page, has_more=len(events) > request.limit, groups=heads)
        elif request.conv_id in self.refused:
            core.pull_failed(request.conv_id)
        else:
            entries = [m for m in self.groups[request.conv_id] if m.seq > request.after]
            core.group_page(request.conv_id, entries[: request.limit], has_more=len(entries) > request.limit)


@dataclass
class Run:
    core: ClientCore
    timeline: Timeline
    delivered: list[InboxItem | GroupItem] = field(default_factory=list)
    requests: list[SyncRequest] = field(default_factory=list)
    sync_asked: int = 0
    holes: int = 0

    def take(self) -> None:
        out = self.core.poll()
        self.delivered.extend(out.deliver)
        self.sync_asked += out.sync
        self.holes += out.hole

    def round(self, *, abort_after: int | None = None) -> None:
        """One catch-up round, answered from the timeline (``abort_after`` requests: the
        connection drops before the reply to the next)."""
        self.core.begin_sync()
        for n in range(1000):
            request = self.core.next_request()
            self.take()
            if request is None:
                return
            self.requests.append(request)
            if abort_after is not None and n == abort_after:
                self.core.abort_sync()
                return
            self.timeline.answer(self.core, request)
            self.take()
        raise AssertionError("the round never ended")

    def seqs(self) -> list[int]:
        return [i.seq for i in self.delivered if isinstance(i, InboxItem)]

    def group_seqs(self, conv_id: str) -> list[int]:
        return [i.seq for i in self.delivered if isinstance(i, GroupItem) and i.conv_id == conv_id]


def play(steps: list[tuple[Any, ...]], timeline: Timeline, **core_args: Any) -> Run:
    run = Run(ClientCore(**core_args), timeline)
    run.core.authenticated(auth(len(timeline.inbox)))
    for step in steps:
        match step:
            case ("push", int(seq)):
                run.core.receive_event(timeline.inbox[seq - 1])
            case ("push", InboxItem() as item):
                run.core.receive_event(item)
            case ("notice", MessageOut() as entry):
                run.core.receive_group_entry(entry)
            case ("round",):
                run.round()
            case ("drop", int(after)):
                run.round(abort_after=after)
            case ("expire",):
                run.core.gap_expired()
            case _:
                raise AssertionError(f"unknown step {step}")
        run.take()
    return run


INBOX5 = Timeline(inbox=[event(s) for s in range(1, 6)])

# (name, steps, timeline, core arguments, delivered inbox seqs, requests, cursor, sync asked)
CASES: list[tuple[str, list[tuple[Any, ...]], Timeline, dict[str, Any], list[int], list[SyncRequest], int, bool]] = [
    ("in order", [("push", 1), ("push", 2), ("push", 3)], INBOX5, {}, [1, 2, 3], [], 3, False),
    ("held until the hole fills", [("push", 3), ("push", 2), ("push", 1)], INBOX5, {}, [1, 2, 3], [], 3, False),
    (
        "a gap, then the sync reply fills it",
        [("push", 1), ("push", 4), ("expire",), ("round",)],
        INBOX5,
        {},
        [1, 2, 3, 4, 5],
        [SyncInbox(since=1, limit=100)],
        5,
        True,
    ),
    (
        "duplicate seqs",
        [("push", 1), ("push", 1), ("push", 2), ("push", 1), ("push", 2)],
        INBOX5,
        {},
        [1, 2],
        [],
        2,
        False,
    ),
    (
        "the same message id at two seqs is delivered once",
        [("push", event(1, "same")), ("push", event(2, "same")), ("push", event(3, "other"))],
        INBOX5,
        {},
        [1, 3],
        [],
        3,
        False,
    ),
    (
        "sync pages from the cursor until has_more is false",
        [("push", 1), ("round",)],
        INBOX5,
        {"sync_limit": 2},
        [1, 2, 3, 4, 5],
        [SyncInbox(since=1, limit=2), SyncInbox(since=3, limit=2)],
        5,
        False,
    ),
    (
        "reconnect: the round after a drop resumes from the cursor",
        [("push", 1), ("drop", 0), ("push", 2), ("round",)],
        INBOX5,
        {},
        [1, 2, 3, 4, 5],
        [SyncInbox(since=1, limit=100), SyncInbox(since=2, limit=100)],
        5,
        False,
    ),
    (
        "bound reached: the furthest held events are dropped and fetched again",
        [("push", 5), ("push", 4), ("push", 3), ("round",)],
        INBOX5,
        {"held_max": 2},
        [1, 2, 3, 4, 5],
        [SyncInbox(since=0, limit=100)],
        5,
        True,
    ),
]


@pytest.mark.parametrize(
    ("steps", "timeline", "core_args", "seqs", "requests", "cursor", "asked"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_inbox_table(
    steps: list[tuple[Any, ...]],
    timeline: Timeline,
    core_args: dict[str, Any],
    seqs: list[int],
    requests: list[SyncRequest],
    cursor: int,
    asked: bool,
) -> None:
    run = play(steps, timeline, **core_args)
    assert run.seqs() == seqs
    assert run.requests == requests
    assert run.core.cursor == cursor
    assert (run.sync_asked > 0) == asked
    assert not run.core.holding


def test_a_held_event_above_the_head_makes_the_round_wait_and_ask_again() -> None:
    timeline = Timeline(inbox=[event(s) for s in range(1, 4)], head=1)
    run = Run(ClientCore(), timeline)
    run.core.receive_event(timeline.inbox[2])
    run.take()
    assert run.holes == 1 and run.core.holding
    run.core.begin_sync()
    delays = []
    for _ in range(4):  # the head stays at 1: the core keeps asking, waiting longer each time
        request = run.core.next_request()
        assert isinstance(request, SyncInbox) and request.since == (0 if not delays else 1)
        delays.append(request.delay_s)
        timeline.answer(run.core, request)
        run.take()
    assert delays == [0.0, 0.01, 0.02, 0.04]
    timeline.head = 3  # the seq below the held event commits
    request = run.core.next_request()
    assert isinstance(request, SyncInbox)
    timeline.answer(run.core, request)
    assert run.core.next_request() is None
    run.take()
    assert run.seqs() == [1, 2, 3] and not run.core.holding


def test_from_the_head_and_own_replies_stand_for_their_events() -> None:
    core = ClientCore(cursor=None)
    core.authenticated(auth(inbox_seq=7))
    assert core.cursor == 7
    core.sent(
        SendAck(msg_id="mine", conv_id="c1", seq=3, inbox_seq=8, created_at=1), kind="text", body={}, client_msg_id="k"
    )
    core.read_replied(ReadResult(conv_id="c1", read_seq=3, unread=0, total_unread=0, inbox_seq=9))
    out = core.poll()
    assert [(i.seq, getattr(i, "type", "")) for i in out.deliver] == [(8, "message"), (9, "read")]
    sent = out.deliver[0].data
    assert isinstance(sent, MessageOut) and (sent.sender_id, sent.sender_device) == ("u1", "d1")
    # the push of the same event (another path) is a duplicate
    core.receive_event(InboxItem(seq=8, type="message", data=message(3, msg_id="mine")))
    assert core.poll().deliver == [] and core.cursor == 9
    # a reply naming an inbox seq this device has not got asks for a catch-up
    core.other_reply({"inbox_seq": 10, "recall_seq": 4})
    assert core.poll().sync
    core.other_reply({"inbox_seq": 9})
    assert not core.poll().sync


def test_group_cursors() -> None:
    """A read-fan-out group: placed by the sync page, pulled to its head, then notices by
    seq; a notice past a hole is held until the hole is pulled."""
    entries = [message(s, "g1") for s in range(1, 8)]
    timeline = Timeline(groups={"g1": entries[:4]}, from_seq={"g1": 1})
    run = Run(ClientCore(sync_limit=2), timeline)
    run.core.authenticated(auth())
    # a notice before the group has a cursor: kept, and a catch-up is asked for
    run.core.receive_group_entry(entries[2])
    out = run.core.poll()
    assert out.sync and out.unsettled and run.core.holding
    run.round()
    assert run.requests == [
        SyncInbox(since=0, limit=2),
        PullGroup(conv_id="g1", after=1, limit=2),
        PullGroup(conv_id="g1", after=3, limit=2),
    ]
    assert run.group_seqs("g1") == [2, 3, 4] and run.core.group_cursors == {"g1": 4}
    holes = run.holes
    run.core.receive_group_entry(entries[4])  # 5: next in line
    run.core.receive_group_entry(entries[4])  # again: a duplicate
    run.core.receive_group_entry(entries[6])  # 7: past a hole
    run.take()
    assert run.group_seqs("g1") == [2, 3, 4, 5] and run.holes == holes + 1
    timeline.groups["g1"] = entries
    assert run.core.gap_expired()
    run.requests.clear()
    run.round()
    assert run.requests == [SyncInbox(since=0, limit=2), PullGroup(conv_id="g1", after=5, limit=2)]
    assert run.group_seqs("g1") == [2, 3, 4, 5, 6, 7] and not run.core.holding


def test_a_group_no_longer_named_is_pulled_to_its_end_then_forgotten() -> None:
    entries = [message(s, "g1") for s in range(1, 4)]
    left = InboxItem(seq=1, type="message", data=message(4, "g1", "left"))
    timeline = Timeline(inbox=[left], groups={"g1": entries})
    run = Run(ClientCore(group_cursors={"g1": 1}), timeline)
    run.core.authenticated(auth())
    del timeline.groups["g1"]  # the page no longer names it ...
    timeline.groups["g2"] = []
    run.core.begin_sync()
    request = run.core.next_request()
    timeline.answer(run.core, request)  # type: ignore[arg-type]
    # ... and its inbox entry (left) waits for the earlier entries of the group
    assert run.core.next_request() == PullGroup(conv_id="g1", after=1, limit=2)
    run.core.group_page("g1", entries[1:], has_more=False)
    run.take()
    assert run.group_seqs("g1") == [2, 3] and run.seqs() == []
    # then the entry is taken (it moves the group cursor), and the group, no longer named,
    # is pulled to its end and forgotten
    assert run.core.next_request() == PullGroup(conv_id="g1", after=4, limit=100)
    run.take()
    assert run.seqs() == [1]
    run.core.group_page("g1", [], has_more=False)
    assert run.core.next_request() is None
    assert run.core.group_cursors == {"g2": 0}


def test_a_refused_pull_ends_that_pull_and_the_round_goes_on() -> None:
    timeline = Timeline(inbox=[event(1)], groups={"g1": [message(1, "g1")], "g2": [message(1, "g2")]})
    timeline.refused.add("g1")
    run = play([("round",)], timeline)
    assert run.seqs() == [1] and run.group_seqs("g2") == [1] and run.group_seqs("g1") == []
    assert run.core.group_cursors == {"g1": 0, "g2": 1}


def test_group_bound_reached_drops_entries_the_pull_fetches_again() -> None:
    entries = [message(s, "g1") for s in range(1, 6)]
    timeline = Timeline(groups={"g1": entries})
    run = Run(ClientCore(group_cursors={"g1": 0}, group_held_max=2), timeline)
    for seq in (5, 4, 3):
        run.core.receive_group_entry(entries[seq - 1])
    out = run.core.poll()
    assert out.sync and out.hole and run.core._group_held_count == 2
    run.round()
    assert run.group_seqs("g1") == [1, 2, 3, 4, 5] and run.core._group_held_count == 0


def test_the_round_refuses_replies_nobody_asked_for() -> None:
    core = ClientCore()
    with pytest.raises(RuntimeError):
        core.sync_page([], has_more=False, groups=[])
    core.begin_sync()
    assert core.next_request() == SyncInbox(since=0, limit=100)
    with pytest.raises(RuntimeError):
        core.next_request()  # the page is not in yet
    with pytest.raises(RuntimeError):
        core.group_page("g1", [], has_more=False)


# --- the property: whatever order and repeats the pushes come in, each event once, in order ---


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=30),
    data=st.data(),
)
def test_any_order_and_repeats_deliver_each_event_once_in_seq_order(n: int, data: st.DataObject) -> None:
    timeline = Timeline(inbox=[event(s) for s in range(1, n + 1)])
    pushed = data.draw(st.lists(st.integers(min_value=1, max_value=n), max_size=3 * n), label="pushes")
    sync_limit = data.draw(st.integers(min_value=1, max_value=8), label="sync_limit")
    held_max = data.draw(st.integers(min_value=1, max_value=8), label="held_max")
    run = Run(ClientCore(sync_limit=sync_limit, held_max=held_max), timeline)
    run.core.authenticated(auth(n))
    for seq in pushed:
        run.core.receive_event(timeline.inbox[seq - 1])
        out = run.core.poll()
        run.delivered.extend(out.deliver)
        # the core asked for a catch-up, or the grace timer of a hole may run out now
        if out.sync or (out.hole and data.draw(st.booleans(), label="timer fires")):
            run.round()
    if run.core.holding:
        assert run.core.gap_expired()
        run.round()
    seqs = run.seqs()
    assert seqs == list(range(1, len(seqs) + 1))  # in order, each once
    assert len(seqs) >= max(pushed, default=0)  # everything pushed arrived
    run.round()  # a reconnect: the rest of the inbox
    assert run.seqs() == list(range(1, n + 1))
    assert not run.core.holding and run.core.cursor == n


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=25), data=st.data())
def test_any_order_and_repeats_of_group_notices_deliver_each_entry_once_in_seq_order(
    n: int, data: st.DataObject
) -> None:
    entries = [message(s, "g1") for s in range(1, n + 1)]
    timeline = Timeline(groups={"g1": entries})
    notices = data.draw(st.lists(st.integers(min_value=1, max_value=n), max_size=3 * n), label="notices")
    known = data.draw(st.booleans(), label="cursor known before the first notice")
    core = ClientCore(
        group_cursors={"g1": 0} if known else None,
        sync_limit=data.draw(st.integers(min_value=1, max_value=8), label="sync_limit"),
        group_held_max=data.draw(st.integers(min_value=1, max_value=8), label="group_held_max"),
    )
    run = Run(core, timeline)
    for seq in notices:
        run.core.receive_group_entry(entries[seq - 1])
        out = run.core.poll()
        run.delivered.extend(out.deliver)
        if out.sync or (out.hole and data.draw(st.booleans(), label="timer fires")):
            run.round()
    if run.core.holding:
        assert run.core.gap_expired()
        run.round()
    seqs = run.group_seqs("g1")
    assert seqs == list(range(1, len(seqs) + 1))
    run.round()  # a reconnect: the rest of the group
    assert run.group_seqs("g1") == list(range(1, n + 1))
    assert not run.core.holding and run.core.group_cursors == {"g1": n}
