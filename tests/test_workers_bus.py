"""The bus and shared state of a node of several worker processes (yim/bus/workers.py,
yim/bus/workers_hub.py): a WorkerHub and three WorkerBus instances in this process, each
worker on its own real channel (a Unix socketpair, yim/ipc/channel.py), each with the
gateway's real Hub of connections; one more worker in a process of its own, killed. The
connections are recorders (they keep the frames a WebSocket would have sent); everything
between them and the hub is the real thing. HubState, the pure part, has table-driven tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from tests.bus_devices import RecordingDevice, connect_through, disconnect_through
from yim.bus.workers import WorkerBus
from yim.bus.workers_hub import (
    BackoffOp,
    Field,
    HubState,
    Kick,
    PolicyIn,
    PresenceIn,
    PresenceReadIn,
    Route,
    RouteIn,
    TakeIn,
    UnrouteIn,
    WorkerHub,
)
from yim.config import Settings
from yim.gateway.hub import Hub
from yim.gateway.limits import Limits
from yim.ids.snowflake import node_of
from yim.ipc.channel import Channel, connect
from yim.metrics import Metrics
from yim.protocol.close import CLOSE_POLICY, CLOSE_REPLACED, CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.services.context import LocalDevices, PresenceChange
from yim.storage.records import GroupChange, GroupRec, MessageRec, SendResult

WORKERS = 3


def _settings() -> Settings:
    return Settings(
        max_online_mobile=1,
        max_connections_per_user=4,
        # refills a token in 100 s: a spent budget stays spent however long a loaded machine
        # takes between the spending and another worker's check (1/s refilled one in a 1 s pause)
        rate_send_per_user_s=0.01,
        rate_send_burst=10,
        rate_register_per_ip_s=0.01,
        rate_register_ip_burst=2,
        limits_exempt_networks="",
        cluster_limits_sync_s=0.02,
    )


Device = RecordingDevice


class Hooks:
    """The node's cache invalidations as the bus calls them (what a worker forgot)."""

    fenced: str | None = None

    def __init__(self) -> None:
        self.sessions: list[list[str] | None] = []
        self.rosters: list[int | None] = []

    def forget_sessions(self, session_ids: list[str] | None = None) -> None:
        self.sessions.append(session_ids)

    def forget_rosters(self, conv_id: int | None = None) -> None:
        self.rosters.append(conv_id)


class Worker:
    def __init__(self, k: int, settings: Settings) -> None:
        self.k = k
        self.hub = Hub(Metrics(), settings)
        self.hooks = Hooks()
        self.bus = WorkerBus(self.hub, Metrics(), settings, self.hooks, k, WORKERS)  # type: ignore[arg-type]
        self.limits = Limits(settings)
        self.limits.share(self.bus.state)
        self.resynced: list[PresenceChange] = []

    def local(self, user_id: int) -> LocalDevices:
        return {
            d: (c.presence, c.platform, int(c.connected_at * 1000)) for d, c in self.hub.devices_of(user_id).items()
        }

    async def resync(self, users: Iterable[int], swept: set[str]) -> bool:
        """What the presence service does when asked: write this worker's devices of the
        users and keep the aggregates that changed (it would publish them)."""
        found = await self.bus.state.presence_sync({u: self.local(u) for u in users}, swept)
        self.resynced += [ch for ch in found if ch.changed]
        return True

    async def connect(self, dev: Device) -> Device:
        return await connect_through(self.bus, self.hub, dev)

    def disconnect(self, dev: Device) -> None:
        disconnect_through(self.bus, self.hub, dev)


def _hub_side(hub: WorkerHub, k: int) -> tuple[Callable[[str, msgspec.Raw], Any], Callable[[str, msgspec.Raw], None]]:
    return (lambda op, body: hub.on_call(k, op, body)), (lambda op, body: hub.on_cast(k, op, body))


async def _attach(hub: WorkerHub, k: int, sock: socket.socket) -> Channel:
    on_call, on_cast = _hub_side(hub, k)
    channel = await connect(sock, on_call=on_call, on_cast=on_cast, name=f"hub-{k}")
    hub.attach(k, channel)
    return channel


class Node:
    def __init__(self, hub: WorkerHub, workers: list[Worker]) -> None:
        self.hub = hub
        self.workers = workers


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def node() -> AsyncIterator[Node]:
    settings = _settings()
    hub = WorkerHub(settings)
    workers = [Worker(k, settings) for k in range(WORKERS)]
    channels: list[Channel] = []
    for w in workers:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ch = await connect(a, on_call=w.bus.on_call, on_cast=w.bus.on_cast, name=f"worker-{w.k}")
        w.bus.bind(ch)
        channels += [ch, await _attach(hub, w.k, b)]
    for w in workers:
        await w.bus.start()  # the hub's snapshot came
        await w.bus.state.start(w.resync)
    yield Node(hub, workers)
    for w in workers:
        await w.bus.state.stop()
        await w.bus.stop()
    for ch in channels:
        ch.close()
    await hub.stop()


async def _until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- the pure state ----------------------------------------------------------------------
def _consistent(state: HubState) -> None:
    """The table kept beside the routes agrees with them; a user's routes and presence
    fields name each device once, and no user is left with none."""
    assert {u: state.workers_of(u) for u in state.routes} == {
        u: tuple(sorted({r.worker for r in state.routes_of(u)})) for u in state.routes
    }
    assert set(state.placed) == {u for u in state.routes if len(state.routes_of(u)) > 1}
    for u in state.routes:
        assert len({r.device_id for r in state.routes_of(u)}) == len(state.routes_of(u)) > 0
    for u in state.presence:
        assert len({f.device_id for f in state.fields_of(u)}) == len(state.fields_of(u)) > 0


def _route(user: int, device: str, platform: str, ms: int, serial: int = 1) -> RouteIn:
    return RouteIn(user, device, platform, ms, serial)


def _connect_in_state(state: HubState, worker: int, r: RouteIn) -> tuple[list[Kick], list[int] | None]:
    """What a connect that passes its checks makes the hub do: ``hub.route``, then, if it
    answered that the policy has devices to sign out, ``hub.policy``. Returns every kick
    and the user's workers as last changed (None: unchanged)."""
    kicks, changed, policy_due = state.register(worker, r)
    policy, policy_changed = state.apply_policy(worker, PolicyIn(r.user_id, r.device_id, r.serial))
    assert policy_due or not policy  # it may find none: connects in their checks are not counted
    return kicks + policy, policy_changed if policy_changed is not None else changed


@pytest.mark.parametrize(
    ("existing", "new", "kicks", "workers_after"),
    [
        # a lone device: nothing to close; the user is now on worker 0
        ([], (0, _route(1, "a", "web", 10)), [], [0]),
        # the same device again on another worker: the older connection is replaced there
        ([(0, _route(1, "a", "web", 10))], (1, _route(1, "a", "web", 20)), [(0, "a", CLOSE_REPLACED, 10)], [1]),
        # the same device again on the same worker: its Hub replaces it, no kick
        ([(0, _route(1, "a", "web", 10))], (0, _route(1, "a", "web", 20, 2)), [], None),
        # one mobile at a time, counted over every worker
        ([(2, _route(1, "p", "android", 10))], (0, _route(1, "q", "ios", 20)), [(2, "p", CLOSE_POLICY, 10)], [0]),
        # a web device next to a mobile one: both stay
        ([(2, _route(1, "p", "android", 10))], (0, _route(1, "w", "web", 20)), [], [0, 2]),
        # beyond the per-user limit (4): the oldest goes, wherever it is
        (
            [
                (0, _route(1, "a", "web", 10)),
                (1, _route(1, "b", "web", 11)),
                (2, _route(1, "c", "desktop", 12)),
                (1, _route(1, "d", "desktop", 13)),
            ],
            (2, _route(1, "e", "web", 20)),
            [(0, "a", CLOSE_POLICY, 10)],
            [1, 2],
        ),
    ],
)
def test_state_register_kicks_by_the_rules_of_one_node(
    existing: list[tuple[int, RouteIn]], new: tuple[int, RouteIn], kicks: list[tuple[Any, ...]], workers_after: Any
) -> None:
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    for w, r in existing:
        _connect_in_state(state, w, r)
    got, changed = _connect_in_state(state, *new)
    assert [(k.worker, k.device_id, k.code, k.before_ms) for k in got] == kicks
    assert all(isinstance(k, Kick) for k in got)
    assert changed == workers_after
    for k in got:  # a device kicked by the policy is no longer routed to; a replaced one is re-routed
        if k.code == CLOSE_POLICY:
            assert not state.device_present(1, k.device_id)
    assert state.device_present(1, new[1].device_id)
    _consistent(state)


def test_state_applies_the_policy_only_for_a_connect_that_passed_its_checks() -> None:
    """``hub.route`` only says the policy has a device to sign out; the device stays routed
    until ``hub.policy``, which counts the devices registered then, not the connects still
    in their checks: those count this one when they register (the last to register wins)."""
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    _connect_in_state(state, 2, _route(1, "p", "android", 10, 1))
    kicks, changed, policy_due = state.register(0, _route(1, "q", "ios", 20, 2))
    assert (kicks, changed, policy_due) == ([], [0, 2], True)
    assert state.device_present(1, "p")  # still routed: the connect may yet fail
    state.register(1, _route(1, "r", "android", 30, 3))  # another mobile, in its checks
    got, changed = state.apply_policy(0, PolicyIn(1, "q", 2))
    assert [(k.worker, k.device_id, k.code, k.serial) for k in got] == [(2, "p", CLOSE_POLICY, 1)]
    assert changed == [0, 1] and state.device_present(1, "r")
    got, changed = state.apply_policy(1, PolicyIn(1, "r", 3))
    assert [(k.worker, k.device_id, k.code, k.serial) for k in got] == [(0, "q", CLOSE_POLICY, 2)]
    assert changed == [1] and state.routes_of(1) == (Route("r", 1, 3, "android", 30),)
    assert not state._checking
    _consistent(state)


def test_state_a_route_handed_back_is_counted_as_the_registrations_meanwhile_would_have() -> None:
    """Device "d" is on worker 1 (connection 5); "e", a second mobile, routes; "d"
    reconnects on worker 1 (6, in its checks). "e" registers: 6 is not counted. 6 fails and
    its route goes back to 5, which "e", registered after it, would have closed on one
    node: it is closed now. Had 6 registered instead, it would have closed "e"."""
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    _connect_in_state(state, 1, _route(1, "d", "android", 10, 5))
    assert state.register(2, _route(1, "e", "ios", 20, 1))[2]
    assert state.register(1, _route(1, "d", "android", 30, 6))[2]
    assert state.apply_policy(2, PolicyIn(1, "e", 1)) == ([], None)
    got = state.hand_back(1, UnrouteIn(1, "d", 6, _route(1, "d", "android", 10, 5)))
    assert [(k.worker, k.device_id, k.code, k.serial) for k in got] == [(1, "d", CLOSE_POLICY, 5)]
    assert not state._checking and state.routes_of(1) == (Route("e", 2, 1, "ios", 20),)
    _consistent(state)
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    _connect_in_state(state, 1, _route(1, "d", "android", 10, 5))
    state.register(2, _route(1, "e", "ios", 20, 1))
    state.register(1, _route(1, "d", "android", 30, 6))
    assert state.apply_policy(2, PolicyIn(1, "e", 1)) == ([], None)
    got, _ = state.apply_policy(1, PolicyIn(1, "d", 6))
    assert [(k.worker, k.device_id, k.serial) for k in got] == [(2, "e", 1)]
    _consistent(state)


def test_state_the_last_registration_wins_whichever_connect_routed_first() -> None:
    """A phone online on worker 0; a second phone connects on worker 1 and the first one
    reconnects on worker 0, both in their checks. Whichever registers last stays."""
    for last in ("a", "b"):
        state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
        _connect_in_state(state, 0, _route(1, "a", "android", 10, 1))
        state.register(1, _route(1, "b", "android", 20, 2))
        state.register(0, _route(1, "a", "android", 30, 3))
        order = [(1, PolicyIn(1, "b", 2)), (0, PolicyIn(1, "a", 3))]
        if last == "b":
            order.reverse()
        for w, p in order:
            state.apply_policy(w, p)
        assert [r.device_id for r in state.routes_of(1)] == [last]
        assert not state._checking
        _consistent(state)


def test_state_the_device_that_routes_last_wins_whatever_its_connect_time() -> None:
    """ "p" opened its socket first (10 ms) but registered after "e" (20 ms): it signs "e"
    out, as one node's Hub does (the newest registration wins)."""
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    _connect_in_state(state, 0, _route(1, "e", "ios", 20, 1))
    got, _ = _connect_in_state(state, 1, _route(1, "p", "android", 10, 2))
    assert [(k.worker, k.device_id) for k in got] == [(0, "e")]
    assert state.routes_of(1) == (Route("p", 1, 2, "android", 10),)
    _consistent(state)


def test_state_a_dead_workers_connects_in_their_checks_are_forgotten() -> None:
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 4)
    _connect_in_state(state, 0, _route(1, "a", "android", 10, 1))
    state.register(1, _route(1, "b", "android", 20, 2))
    assert state._checking == {(1, 1, "b", 2)}
    state.drop_worker(1)
    assert not state._checking and state.routes_of(1) == (Route("a", 0, 1, "android", 10),)


@pytest.mark.parametrize(
    ("unroute", "present", "workers_change"),
    [
        ((0, UnrouteIn(1, "a", 1)), False, [1]),  # its own connection: gone; the user is only on worker 1
        ((0, UnrouteIn(1, "a", 9)), True, None),  # an older serial: a newer connection stays
        ((1, UnrouteIn(1, "a", 1)), True, None),  # another worker's: not its to remove
        ((0, UnrouteIn(2, "a", 1)), True, None),  # another user: nothing
    ],
)
def test_state_unregister_removes_only_its_own_connection(
    unroute: tuple[int, UnrouteIn], present: bool, workers_change: Any
) -> None:
    state = HubState({}, 16)
    state.register(0, _route(1, "a", "web", 10))
    state.register(1, _route(1, "b", "web", 11))
    assert state.unregister(*unroute) == workers_change
    assert state.device_present(1, "a") is present
    assert state.is_connected(1)
    _consistent(state)


@pytest.mark.parametrize(
    ("taken_by", "kick"),
    [
        (None, None),  # still the failed connect's: the older connection gets it back
        ((1, _route(1, "a", "web", 30, 7)), (CLOSE_REPLACED, 10, 5)),  # a newer one elsewhere took it
        ((0, _route(1, "a", "web", 30, 7)), None),  # another connect here took it: that one decides
        ((0, _route(1, "p", "android", 30, 7)), (CLOSE_POLICY, 10, 5)),  # the policy dropped it
    ],
)
def test_state_hand_back_gives_a_failed_connects_route_to_the_older_connection(
    taken_by: tuple[int, RouteIn] | None, kick: tuple[int, int, int] | None
) -> None:
    """Connection 5 (made at 10 ms) of device "a" is registered on worker 0; connection 6
    of the device routed from there too, then failed its checks."""
    state = HubState({"mobile": 1, "desktop": 0, "web": 0}, 16)
    state.register(0, _route(1, "a", "android", 10, 5))
    state.register(0, _route(1, "a", "android", 20, 6))
    if taken_by is not None:
        _connect_in_state(state, *taken_by)
    before = dict(state.routes)
    got = state.hand_back(0, UnrouteIn(1, "a", 6, _route(1, "a", "android", 10, 5)))
    assert [(k.worker, k.device_id, k.code, k.before_ms, k.serial) for k in got] == (
        [] if kick is None else [(0, "a", *kick)]
    )
    if taken_by is None:
        assert state.routes_of(1) == (Route("a", 0, 5, "android", 10),)
    else:
        assert state.routes == before
    _consistent(state)


def test_state_drop_worker_removes_its_routes_and_presence() -> None:
    state = HubState({}, 16)
    state.register(0, _route(1, "a", "web", 10))
    state.register(1, _route(1, "b", "web", 11))
    state.register(1, _route(2, "c", "web", 12))
    state.presence_sync(1, PresenceIn([(1, [("b", "away", "web", 11)]), (2, [("c", "online", "web", 12)])], 5))
    state.presence_sync(0, PresenceIn([(1, [("a", "online", "android", 10)])], 5))
    changes, stale = state.drop_worker(1)
    assert changes == [(1, [0]), (2, [])]
    assert sorted(stale) == [1, 2]
    assert not state.is_connected(2) and state.workers_of(1) == (0,)
    _consistent(state)
    read = state.presence_read(0, PresenceReadIn([1, 2]))
    assert read == [(1, "online", ["android"], None), (2, "offline", [], None)]  # 2: published online still
    out = state.presence_sync(0, PresenceIn([(2, [])], 99))  # a live worker syncs it: offline, seen now
    assert out == [(2, True, "offline", [], "online", ["web"], 99, True)]


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        # (worker, [(device, status, platform, connected_ms)]) in turn -> the last sync's answer
        ([(0, [("a", "online", "web", 1)])], (True, "online", ["web"], "offline", [], None)),
        (
            [(0, [("a", "away", "web", 1)]), (1, [("b", "online", "ios", 2)])],
            (True, "online", ["ios", "web"], "away", ["web"], None),
        ),
        (
            [(0, [("a", "online", "web", 1)]), (1, [("b", "online", "web", 2)])],
            (False, "online", ["web"], "online", ["web"], None),
        ),
        ([(0, [("a", "online", "web", 1)]), (0, [])], (True, "offline", [], "online", ["web"], 7)),
        # the same device newer on worker 1: worker 0's older write of it does not win
        (
            [(1, [("a", "away", "web", 5)]), (0, [("a", "online", "web", 1)])],
            (False, "away", ["web"], "away", ["web"], None),
        ),
    ],
)
def test_state_presence_aggregates_every_worker(writes: list[tuple[int, list[Any]]], expected: tuple[Any, ...]) -> None:
    state = HubState({}, 16)
    out: list[Any] = []
    for worker, devices in writes:
        out = state.presence_sync(worker, PresenceIn([(9, devices)], 7))
    assert out == [(9, *expected, expected[0])]  # without the store's answer, any change may be an agent's
    # a read from any worker agrees with what was published
    for worker in range(3):
        assert state.presence_read(worker, PresenceReadIn([9]))[0][1:3] == expected[1:3]
    _consistent(state)


def test_state_keeps_one_copy_of_what_online_users_share() -> None:
    """Per online user the hub keeps its own records only: the sets of workers and the
    platform and status strings are shared objects, and a device's presence field holds
    its route's device id and time."""
    state = HubState({}, 16)
    users = range(1, 41)
    ms = 1_700_000_000_000  # an int of its own per decode (small ones are shared anyway)
    for u in users:
        # decoded from the wire, as the hub gets them: equal strings, distinct objects
        state.register(
            u % 2, msgspec.msgpack.decode(msgspec.msgpack.encode(_route(u, f"d{u}", "web", ms + u)), type=RouteIn)
        )
    body = msgspec.msgpack.encode(PresenceIn([(u, [(f"d{u}", "online", "web", ms + u)]) for u in users], 5))
    state.presence_sync(0, msgspec.msgpack.decode(body, type=PresenceIn))
    assert len({id(state.workers_of(u)) for u in users}) == 2  # (0,) and (1,)
    # a lone device's records are kept bare, not in a tuple of their own
    assert all(isinstance(state.routes[u], Route) and isinstance(state.presence[u], Field) for u in users)
    routes = [r for u in users for r in state.routes_of(u)]
    fields = [f for u in users for f in state.fields_of(u)]
    assert len({id(r.platform) for r in routes} | {id(f.platform) for f in fields}) == 1
    assert len({id(f.status) for f in fields}) == 1
    assert all(f.device_id is r.device_id for f, r in zip(fields, routes, strict=True))
    assert all(f.connected_ms is r.connected_ms for f, r in zip(fields, routes, strict=True))
    _consistent(state)


def test_state_buckets_and_backoff() -> None:
    state = HubState({}, 16)
    take = TakeIn("register_ip", "1.2.3.4", 1.0, 2.0)
    assert [state.take(take, 100.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert state.take(take, 101.0) == 0.0  # one token back a second later
    # debits always take, down to the debt limit; the level is what every worker follows
    assert state.debit([("send_user", 7, 1.0, 10.0, 4.0)], 0.0) == [6.0]
    assert state.debit([("send_user", 7, 1.0, 10.0, 1000.0)], 0.0) == [-80.0]
    assert state.debit([("send_user", 7, 1.0, 10.0, 0.0)], 10.0) == [-70.0]
    fail = BackoffOp("login_user", "bob", "fail", 2, 1.0, 60.0, 300.0)
    check = BackoffOp("login_user", "bob", "check", 2, 1.0, 60.0, 300.0)
    assert state.backoff([fail, fail], 0.0) == [0.0, 0.0]  # two free failures
    assert state.backoff([fail], 0.0) == [1.0]
    assert state.backoff([fail], 0.0) == [2.0]
    assert state.backoff([check], 1.5) == [0.5]
    assert state.backoff([check], 400.0) == [0.0]  # forgotten after the window
    with pytest.raises(YimError):
        state.backoff([BackoffOp("login_user", "bob", "nonsense", 2, 1.0, 60.0, 300.0)], 0.0)


def test_state_limit_tables_are_bounded() -> None:
    state = HubState({}, 16, max_limit_keys=100)
    for i in range(1000):
        state.take(TakeIn("register_ip", f"ip{i}", 1.0, 5.0), 0.0)
    assert len(state.buckets) <= 100


# --- workers over real channels --------------------------------------------------------------
async def test_push_reaches_devices_on_two_other_workers_in_order_once(node: Node) -> None:
    w0, w1, w2 = node.workers
    a = await w1.connect(Device(100, "a", "web"))
    b = await w2.connect(Device(100, "b", "desktop"))
    await w0.bus.ping()  # after this reply, w0 has heard of both routes (one FIFO channel)
    assert w0.bus.remote[100] == (1, 2)
    for seq in range(1, 51):
        w0.bus.publish_event([(100, seq)], "message", b'{"n":%d}' % seq)
    w0.bus.publish_notice([100], "typing", b"{}")
    await _until(lambda: len(a.frames) == 51 and len(b.frames) == 51)
    await w0.bus.ping()
    for dev in (a, b):
        assert dev.events() == list(range(1, 51))
        assert [f["data"]["n"] for f in dev.frames[:50]] == list(range(1, 51))
        assert dev.frames[50]["type"] == "typing"
    await asyncio.sleep(0.05)  # nothing more arrives (once)
    assert len(a.frames) == len(b.frames) == 51
    w1.disconnect(a)
    w2.disconnect(b)


async def test_one_publish_is_split_between_workers_by_their_devices(node: Node) -> None:
    w0, w1, w2 = node.workers
    a = await w1.connect(Device(110, "a", "web"))
    b = await w2.connect(Device(111, "b", "web"))
    both = [await w1.connect(Device(112, "c", "web")), await w2.connect(Device(112, "d", "web"))]
    await w0.bus.ping()
    w0.bus.publish_event([(110, 1), (111, 2), (112, 3), (113, 4)], "message", b"{}")
    w0.bus.publish_notice({110, 111, 113}, "typing", b"{}")
    await _until(lambda: len(a.frames) == len(b.frames) == 2 and all(len(d.frames) == 1 for d in both))
    assert a.events() == [1] and b.events() == [2] and [d.events() for d in both] == [[3], [3]]
    assert a.frames[1]["type"] == b.frames[1]["type"] == "typing"
    for w, dev in ((w1, a), (w2, b), (w1, both[0]), (w2, both[1])):
        w.disconnect(dev)


def _entry(seq: int, deliveries: list[tuple[int, int]], duplicate: bool = False) -> SendResult:
    m = MessageRec(900 + seq, 77, seq, 122, "c", "text", b'{"text":"x"}', f"e{seq}", 1)
    return SendResult(m, 1, duplicate, deliveries)


async def test_committed_entries_are_routed_from_the_store_process(node: Node) -> None:
    """A timeline entry committed for worker 0 is pushed to the recipients' devices on the
    other workers by the hub, from the store's answer (a Future, a coroutine's result, a
    value, an entry inside a group change); not to worker 0, whose own publish_entry pushes
    its devices; a resend nowhere."""
    w0, w1, w2 = node.workers
    r1 = await w1.connect(Device(120, "a"))
    r2 = await w2.connect(Device(121, "b"))
    here = await w0.connect(Device(122, "c"))
    await w0.bus.ping()
    forwarded = node.hub.forwarded
    fut: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
    assert node.hub.entries_routed(0, "store.send_message", fut) is fut
    fut.set_result(_entry(1, [(120, 5), (121, 6), (122, 7)]))
    await _until(lambda: r1.events() == [5] and r2.events() == [6])
    assert r1.frames[0]["data"]["msg_id"] == "901" and r1.frames[0]["type"] == "message"
    assert node.hub.forwarded == forwarded + 2

    async def group_change() -> GroupChange:
        group = GroupRec(77, "g", "", "", 122, "open", False, 500, 3, "write", 0, 2, 1, False)
        return GroupChange(group, _entry(2, [(120, 6), (122, 8)]))

    change = await node.hub.entries_routed(0, "store.add_members", group_change())
    assert isinstance(change, GroupChange)
    assert node.hub.entries_routed(0, "store.recall", _entry(3, [(121, 7)])).message.seq == 3
    node.hub.entries_routed(0, "store.send_message", _entry(1, [(120, 5), (121, 6)], duplicate=True))
    await _until(lambda: r1.events() == [5, 6] and r2.events() == [6, 7])
    await w1.bus.ping()
    await w2.bus.ping()
    assert r1.events() == [5, 6] and r2.events() == [6, 7]  # the resend: nowhere
    assert here.frames == []
    w0.bus.publish_entry([(122, 7), (120, 5)], b"{}")  # the sending worker: its own devices only
    assert here.events() == [7]
    await w0.bus.ping()
    assert node.hub.forwarded == forwarded + 4
    for w, dev in ((w1, r1), (w2, r2), (w0, here)):
        w.disconnect(dev)


async def test_sender_other_device_on_another_worker_gets_the_message(node: Node) -> None:
    w0, w1, _ = node.workers
    origin = await w0.connect(Device(101, "phone", "android"))
    other = await w1.connect(Device(101, "laptop", "desktop"))
    friend = await w0.connect(Device(102, "web", "web"))
    await w0.bus.ping()
    w0.bus.publish_event([(101, 7), (102, 3)], "message", b'{"x":1}', origin=origin)  # type: ignore[arg-type]
    await _until(lambda: other.events() == [7])
    assert origin.frames == []  # the sending connection learns it from its reply
    assert friend.events() == [3]
    for w, dev in ((w0, origin), (w1, other), (w0, friend)):
        w.disconnect(dev)


async def test_route_exists_before_the_registering_call_returns(node: Node) -> None:
    w0, w1, _ = node.workers
    dev = Device(103, "d", "web")
    await w1.bus.connected(dev)  # type: ignore[arg-type]
    # No await in between: the route is in the hub, and any later reply to w0 comes after
    # the route change on its channel, so an event committed from now on reaches the device.
    assert node.hub.state.device_present(103, "d")
    assert node.hub.is_connected(103)
    await w0.bus.ping()
    assert w0.bus.remote.get(103) == (1,)
    w1.hub.register(dev)  # type: ignore[arg-type]
    w0.bus.publish_event([(103, 1)], "message", b"{}")
    await _until(lambda: dev.events() == [1])
    w1.disconnect(dev)
    await w0.bus.ping()
    assert 103 not in w0.bus.remote and not node.hub.is_connected(103)


async def test_a_kick_finds_a_connection_still_in_its_auth_checks(node: Node) -> None:
    """Routed, not yet in its worker's hub (the revocation re-check may still await): the
    same device connecting on another worker still closes it. A worker remembers only such
    connects in progress, not every connection it holds."""
    w0, w1, _ = node.workers
    early = Device(110, "d", "web")
    await w0.bus.connected(early)  # type: ignore[arg-type]
    late = await w1.connect(Device(110, "d", "web"))
    await _until(lambda: early.closed is not None)
    assert early.closed is not None and early.closed[0] == CLOSE_REPLACED
    assert late.closed is None
    assert not w1.bus._routing  # registered: forgotten
    w0.bus.disconnected(early)  # type: ignore[arg-type]
    assert not w0.bus._routing
    w1.disconnect(late)
    await w1.bus.ping()
    assert not node.hub.is_connected(110)


async def test_a_connect_that_fails_its_checks_leaves_the_older_connection_routed(node: Node) -> None:
    """The device's older connection stays registered on its worker while a newer one
    routes (its hub.route replaces the older one's route) and then fails its checks, as the
    revocation re-check of gateway/ws.py does: the older one keeps its pushes from the
    other workers, as on one node, where the failed connect never touched it."""
    w0, w1, _ = node.workers
    old = await w0.connect(Device(111, "d", "web", session_id="s1"))
    new = Device(111, "d", "web", session_id="s2")
    await w0.bus.connected(new)  # type: ignore[arg-type]
    w0.bus.disconnected(new)  # type: ignore[arg-type]  # what ws.py does when the re-check fails
    await w0.bus.ping()
    assert node.hub.state.routes_of(111) == (Route("d", 0, id(old), "web", int(old.connected_at * 1000)),)
    assert old.closed is None
    await w1.bus.ping()
    assert w1.bus.remote.get(111) == (0,)
    w1.bus.publish_event([(111, 1)], "message", b"{}")
    await _until(lambda: old.events() == [1])
    w0.disconnect(old)  # and its own end drops the route it got back
    await w0.bus.ping()
    assert not node.hub.is_connected(111)


async def test_a_kick_closes_exactly_the_connection_it_names(node: Node) -> None:
    """A device with a registered connection and a newer one still in its auth checks on
    one worker, connecting a third time on another: the kick names the route the hub knows,
    the one in its checks, and closes it, not the registered one. That one goes when the
    named one ends its connect: replaced when it registers, or here, when it fails, closed
    by the hub, which saw its route taken."""
    w0, w1, _ = node.workers
    registered = await w0.connect(Device(112, "d", "web"))
    checking = Device(112, "d", "web")
    await w0.bus.connected(checking)  # type: ignore[arg-type]
    newest = await w1.connect(Device(112, "d", "web"))
    await _until(lambda: checking.closed is not None)
    assert checking.closed is not None and checking.closed[0] == CLOSE_REPLACED
    await w0.bus.ping()
    assert registered.closed is None
    w0.bus.disconnected(checking)  # type: ignore[arg-type]  # its connect fails
    await _until(lambda: registered.closed is not None)
    assert registered.closed is not None and registered.closed[0] == CLOSE_REPLACED
    assert newest.closed is None
    w0.disconnect(registered)
    await w0.bus.ping()
    assert node.hub.state.routes_of(112) == (Route("d", 1, id(newest), "web", int(newest.connected_at * 1000)),)
    w1.disconnect(newest)
    await w1.bus.ping()
    assert not node.hub.is_connected(112)


async def test_a_connect_cancelled_while_routing_leaves_no_route(node: Node) -> None:
    """``hub.route`` is written at once and served even if its caller gave up (the
    connection's task cancelled before the reply came): the route is dropped again."""
    w0, w1, _ = node.workers
    dev = Device(113, "d", "web")
    routing = asyncio.ensure_future(w0.bus.connected(dev))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the call is written; its reply needs the hub's turn and one more
    assert not routing.done()
    routing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await routing
    await w0.bus.ping()  # behind whatever w0 wrote: the hub has served the route and its end
    assert not node.hub.is_connected(113)
    await w1.bus.ping()
    assert 113 not in w1.bus.remote
    assert not w0.bus._routing


async def test_multi_device_policy_and_replacement_across_workers(node: Node) -> None:
    w0, w1, w2 = node.workers
    phone = await w0.connect(Device(104, "phone", "android"))
    tablet = await w1.connect(Device(104, "tablet", "ios"))  # one mobile at a time: the phone goes
    await _until(lambda: phone.closed is not None)
    assert phone.closed is not None and phone.closed[0] == CLOSE_POLICY
    assert tablet.closed is None
    again = await w2.connect(Device(104, "tablet", "ios"))  # the same device elsewhere: replaced
    await _until(lambda: tablet.closed is not None)
    assert tablet.closed is not None and tablet.closed[0] == CLOSE_REPLACED
    assert again.closed is None
    w0.disconnect(phone)
    w1.disconnect(tablet)  # the old connection's unroute leaves the new route alone
    await w2.bus.ping()
    assert node.hub.state.workers_of(104) == (2,)
    w2.disconnect(again)


async def test_a_connect_that_fails_its_checks_signs_no_device_out(node: Node) -> None:
    """One mobile at a time: a tablet connecting on another worker while the phone is
    online, whose connect then fails its checks (the revocation re-check of gateway/ws.py),
    leaves the phone connected and routed, as on one node; the same connect passing them
    signs the phone out."""
    w0, w1, _ = node.workers
    phone = await w0.connect(Device(114, "phone", "android"))
    failing = Device(114, "tablet", "ios")
    await w1.bus.connected(failing)  # type: ignore[arg-type]
    w1.bus.disconnected(failing)  # type: ignore[arg-type]  # what ws.py does when the re-check fails
    await w1.bus.ping()
    await w0.bus.ping()
    assert phone.closed is None
    assert node.hub.state.device_present(114, "phone") and not node.hub.state.device_present(114, "tablet")
    assert not w1.bus._policy_due
    tablet = await w1.connect(Device(114, "tablet", "ios"))
    await _until(lambda: phone.closed is not None)
    assert phone.closed is not None and phone.closed[0] == CLOSE_POLICY
    assert not w1.bus._policy_due
    w0.disconnect(phone)
    w1.disconnect(tablet)
    await w1.bus.ping()
    assert not node.hub.is_connected(114)


async def test_presence_agrees_whichever_worker_asks(node: Node) -> None:
    w0, w1, w2 = node.workers
    a = await w1.connect(Device(105, "a", "web"))
    b = await w2.connect(Device(105, "b", "android"))
    b.presence = "away"
    got1 = await w1.bus.state.presence_sync({105: w1.local(105)}, set())
    got2 = await w2.bus.state.presence_sync({105: w2.local(105)}, set())
    assert got1[0].changed and got1[0].state == ("online", ("web",))
    assert got2[0].changed and got2[0].state == ("online", ("android", "web"))
    for w in node.workers:
        view = await w.bus.state.presence_read([105])
        assert view == {105: (("online", ("android", "web")), None)}
    a.presence = "away"  # not synced yet: only the asking worker's fresh view counts it
    assert (await w1.bus.state.presence_read([105], w1.local))[105][0] == ("away", ("android", "web"))
    assert (await w0.bus.state.presence_read([105], w0.local))[105][0] == ("online", ("android", "web"))
    assert await w0.bus.state.device_present(105, "b")
    assert not await w0.bus.state.device_present(105, "zzz")
    w1.disconnect(a)
    w2.disconnect(b)
    await w1.bus.state.presence_sync({105: {}}, set())
    gone = await w2.bus.state.presence_sync({105: {}}, set())
    assert gone[0].changed and gone[0].state == ("offline", ()) and gone[0].last_seen is not None
    assert not await w0.bus.state.device_present(105, "b")


async def test_revocation_closes_sessions_on_every_worker(node: Node) -> None:
    w0, w1, w2 = node.workers
    keep = await w1.connect(Device(106, "keep", "web", session_id="s-keep"))
    a = await w1.connect(Device(106, "a", "desktop", session_id="s-a"))
    b = await w2.connect(Device(106, "b", "web", session_id="s-b"))
    w0.bus.sessions_revoked(106, ["s-a", "s-b"], "logged out")
    w0.bus.roster_changed(5555)
    await _until(lambda: a.closing and b.closing)
    assert a.closed is not None and a.closed[0] == CLOSE_REVOKED and "logged out" in a.closed[1]
    assert b.closed is not None and b.closed[0] == CLOSE_REVOKED
    assert keep.closed is None
    await _until(lambda: 5555 in w2.hooks.rosters and 5555 in w1.hooks.rosters)
    assert ["s-a", "s-b"] in w1.hooks.sessions and ["s-a", "s-b"] in w2.hooks.sessions
    assert 5555 not in w0.hooks.rosters  # the sender's own caches are its own business
    for w, dev in ((w1, keep), (w1, a), (w2, b)):
        w.disconnect(dev)


async def test_online_agents_are_shared(node: Node) -> None:
    w0, w1, w2 = node.workers
    await w1.bus.state.agent_online(107, True)
    await w0.bus.ping()
    await w2.bus.ping()
    assert all(w.bus.state.agent_connected(107) for w in node.workers)
    await w2.bus.state.agent_online(107, False)
    await w0.bus.ping()
    await w1.bus.ping()
    assert not any(w.bus.state.agent_connected(107) for w in node.workers)


async def test_send_budget_is_shared_not_multiplied(node: Node) -> None:
    w0, w1, w2 = node.workers
    user = 108
    for _ in range(10):  # the whole burst, spent on worker 0
        w0.limits.check_send(user, None)
    with pytest.raises(YimError):
        w0.limits.check_send(user, None)
    # Within one sync period the spending reaches the hub, and from it the other workers.
    await _until(lambda: node.hub.state.buckets.get(("send_user", user), [10.0])[0] < 1.0)
    await w1.bus.ping()
    await w2.bus.ping()
    for w in (w1, w2):
        with pytest.raises(YimError) as info:
            w.limits.check_send(user, None)
        assert info.value.code == "rate_limited"


async def test_registration_limit_is_exact_across_workers(node: Node) -> None:
    w0, w1, w2 = node.workers
    await w0.limits.check_register("10.0.0.1")
    await w1.limits.check_register("10.0.0.1")
    with pytest.raises(YimError) as info:
        await w2.limits.check_register("10.0.0.1")
    assert info.value.code == "rate_limited"


async def test_each_worker_issues_ids_of_its_own_node_id(node: Node) -> None:
    ids = [w.bus.make_ids(1023, floor=0).next_id() for w in node.workers]
    assert [node_of(i) for i in ids] == [1023, 0, 1]


_CHILD = """
import asyncio, socket, sys, time
sys.path.insert(0, {root!r})
from yim.bus.workers import WorkerBus
from yim.config import Settings
from yim.gateway.hub import Hub
from yim.ipc.channel import connect
from yim.metrics import Metrics
from yim.protocol.codec import JSON

class Device:
    def __init__(self):
        self.user_id, self.device_id, self.platform, self.presence = 109, "dead", "web", "online"
        self.session_id, self.acked_seq, self.codec, self.closing = "s", 0, JSON, False
        self.connected_at = time.time()
    def send(self, payload): pass
    def close(self, code, reason): self.closing = True

class Hooks:
    fenced = None
    def forget_sessions(self, ids=None): pass
    def forget_rosters(self, conv_id=None): pass

async def main():
    settings = Settings()
    hub = Hub(Metrics(), settings)
    bus = WorkerBus(hub, Metrics(), settings, Hooks(), {k}, {n})
    bus.bind(await connect(socket.socket(fileno={fd}), on_call=bus.on_call, on_cast=bus.on_cast))
    await bus.start()
    dev = Device()
    await bus.connected(dev)
    hub.register(dev)
    await bus.state.presence_sync({{109: {{"dead": ("online", "web", int(dev.connected_at * 1000))}}}}, set())
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_dead_workers_routes_and_presence_go(node: Node) -> None:
    w0, w1, _ = node.workers
    k = 3  # a fourth worker, in a process of its own
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = textwrap.dedent(_CHILD).format(root=os.getcwd(), k=k, n=k + 1, fd=b.fileno())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", child, pass_fds=[b.fileno()], stdout=asyncio.subprocess.PIPE
    )
    b.close()
    try:
        await _attach(node.hub, k, a)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        assert node.hub.state.workers_of(109) == (k,)
        await w1.bus.ping()
        assert w1.bus.remote.get(109) == (k,)
        assert (await w1.bus.state.presence_read([109]))[109][0] == ("online", ("web",))
        w0.resynced.clear()
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        await _until(lambda: k not in node.hub.workers)
        # at once: no route, no presence, and every worker's replica forgot the user
        assert not node.hub.is_connected(109)
        assert not await w1.bus.state.device_present(109, "dead")
        await w1.bus.ping()
        assert 109 not in w1.bus.remote
        # a live worker (the lowest) was asked to publish what the dead one's users look like now
        await _until(lambda: any(ch.user_id == 109 for ch in w0.resynced))
        change = next(ch for ch in w0.resynced if ch.user_id == 109)
        assert change.state == ("offline", ()) and change.before == ("online", ("web",))
        for w in node.workers:
            assert (await w.bus.state.presence_read([109]))[109][0] == ("offline", ())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
