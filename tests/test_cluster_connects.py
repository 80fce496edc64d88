"""A device's connects in cluster mode (yim/bus/redis.py): two RedisBus instances in this
process on one real Redis, each with the gateway's real Hub; the connections are recorders
(the frames a WebSocket would have sent). A device with a registered connection and a
reconnect still in its auth checks on one node: the reconnect failing leaves the older one
routed (and signs no other device out), a kick of its route closes it, a connect cancelled mid-registration leaves no
route behind, and a field a failed register left behind is renewed for the connection held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
import redis.asyncio as aioredis

from tests.bus_devices import RecordingDevice, connect_through, disconnect_through
from yim.bus.redis import RedisBus, _Close
from yim.config import Settings
from yim.gateway.hub import Hub
from yim.metrics import Metrics
from yim.protocol.close import CLOSE_POLICY, CLOSE_REPLACED

from .services import RedisServer

Device = RecordingDevice


class Hooks:
    """The node's side of the bus: never fenced; the caches it would drop are none here."""

    fenced: str | None = None

    def __init__(self) -> None:
        self.rosters: list[int | None] = []

    def forget_sessions(self, session_ids: list[str] | None = None) -> None:
        pass

    def forget_rosters(self, conv_id: int | None = None) -> None:
        self.rosters.append(conv_id)


class Node:
    def __init__(self, url: str) -> None:
        # a route TTL long enough that no periodic refresh runs within a test
        settings = Settings(redis_url=url, cluster_route_ttl_s=600.0)
        self.hub = Hub(Metrics(), settings)
        self.hooks = Hooks()
        # The store is read only by a heal after Redis restarts, which these tests never cause.
        self.bus = RedisBus(self.hub, Metrics(), settings, None, self.hooks, url)  # type: ignore[arg-type]

    async def connect(self, dev: Device) -> Device:
        return await connect_through(self.bus, self.hub, dev)

    def disconnect(self, dev: Device) -> None:
        disconnect_through(self.bus, self.hub, dev)

    async def flushed(self, other: Node) -> None:
        """Everything this node queued is done in Redis: a broadcast queued now reaches
        ``other`` only after the batches before it (each batch's unroutes run first)."""
        seen = len(other.hooks.rosters)
        self.bus.roster_changed(len(self.hooks.rosters) + 1000)
        await _until(lambda: len(other.hooks.rosters) > seen)


async def _until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest_asyncio.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[tuple[Node, Node]]:
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.flushall()
    finally:
        await r.aclose()
    a, b = Node(redis_server.url), Node(redis_server.url)
    await a.bus.start()
    await b.bus.start()
    yield a, b
    await a.bus.stop()
    await b.bus.stop()


async def _route_of(node: Node, user_id: int, device_id: str) -> str | None:
    got = await node.bus._redis.hget(RedisBus.route_key(user_id), device_id)
    return got.decode() if got is not None else None


async def test_a_connect_that_fails_its_checks_leaves_the_older_connection_routed(nodes: tuple[Node, Node]) -> None:
    n0, n1 = nodes
    old = await n0.connect(Device(1, "d"))
    new = Device(1, "d")
    await n0.bus.connected(new)  # type: ignore[arg-type]  # its route replaces the older one's
    n0.bus.disconnected(new)  # type: ignore[arg-type]  # what ws.py does when the re-check fails
    await n0.flushed(n1)
    route = await _route_of(n0, 1, "d")
    assert route is not None and route.startswith(f"{n0.bus.node_name}|")
    n1.bus.publish_event([(1, 1)], "message", b"{}")
    await _until(lambda: old.events() == [1])
    assert old.closed is None
    n0.disconnect(old)  # and its own end drops the route it kept
    await n0.flushed(n1)
    assert await _route_of(n0, 1, "d") is None


async def test_a_connect_that_fails_its_checks_signs_no_device_out(nodes: tuple[Node, Node]) -> None:
    """One mobile at a time: a tablet connecting on another node while the phone is online,
    whose connect then fails its checks, leaves the phone connected, as on one node; the
    same connect passing them signs the phone out (4006)."""
    n0, n1 = nodes
    phone = await n0.connect(Device(6, "phone", "android"))
    failing = Device(6, "tablet", "ios")
    await n1.bus.connected(failing)  # type: ignore[arg-type]
    n1.bus.disconnected(failing)  # type: ignore[arg-type]  # what ws.py does when the re-check fails
    await n1.flushed(n0)
    assert phone.closed is None
    assert await _route_of(n0, 6, "phone") is not None
    assert not n1.bus._policy_due
    tablet = await n1.connect(Device(6, "tablet", "ios"))
    await _until(lambda: phone.closed is not None)
    assert phone.closed is not None and phone.closed[0] == CLOSE_POLICY
    assert tablet.closed is None and not n1.bus._policy_due
    n0.disconnect(phone)
    n1.disconnect(tablet)


async def test_a_connect_replaced_during_its_checks_signs_no_device_out(nodes: tuple[Node, Node]) -> None:
    """A tablet's connect on one node is replaced (4002) by the same tablet connecting on
    the other while the first is still in its checks: the closed one, registering after
    all, signs no one out; the phone stays."""
    n0, n1 = nodes
    phone = await n0.connect(Device(7, "phone", "android"))
    first = Device(7, "tablet", "ios")
    await n1.bus.connected(first)  # type: ignore[arg-type]  # the policy has the phone to sign out
    again = Device(7, "tablet", "ios")
    await n0.bus.connected(again)  # type: ignore[arg-type]  # replaces the first (4002), in its checks
    await _until(lambda: first.closed is not None)
    assert first.closed is not None and first.closed[0] == CLOSE_REPLACED
    n1.hub.register(first)  # type: ignore[arg-type]  # its own checks pass all the same
    n1.bus.registered(first)  # type: ignore[arg-type]
    n0.bus.disconnected(again)  # type: ignore[arg-type]  # and the second fails its checks
    await n1.flushed(n0)
    await n0.flushed(n1)
    assert phone.closed is None
    assert not n0.bus._policy_due and not n1.bus._policy_due
    n1.disconnect(first)
    n0.disconnect(phone)


async def _a_second_mobile_and_a_reconnect(n0: Node, n1: Node, user_id: int) -> tuple[Device, Device, Device]:
    """Phone "d" registered on ``n0``; a second mobile "e" routed on ``n1`` (its policy has
    "d"'s route to sign out); "d" reconnecting on ``n0``, routed and still in its checks."""
    first = await n0.connect(Device(user_id, "d", "android"))
    e = Device(user_id, "e", "ios")
    await n1.bus.connected(e)  # type: ignore[arg-type]
    again = Device(user_id, "d", "android")
    await n0.bus.connected(again)  # type: ignore[arg-type]
    return first, e, again


async def test_a_policy_kick_for_a_connection_whose_route_a_reconnect_took_closes_it(
    nodes: tuple[Node, Node],
) -> None:
    """ "d" is online on one node; "e", a second mobile, connects on the other (its policy
    has "d"'s route to sign out); "d" reconnects on its node, newer than "e", so its route
    now names the reconnect. "e" registers: its kick names the route "d" had, and closes
    the connection that route stood for. The reconnect then fails: "e", the newest device
    that passed its checks, stays alone."""
    n0, n1 = nodes
    first, e, again = await _a_second_mobile_and_a_reconnect(n0, n1, 8)
    n1.hub.register(e)  # type: ignore[arg-type]
    n1.bus.registered(e)  # type: ignore[arg-type]
    await _until(lambda: first.closed is not None)
    assert first.closed is not None and first.closed[0] == CLOSE_POLICY
    n0.bus.disconnected(again)  # type: ignore[arg-type]  # fails its checks
    await n0.flushed(n1)
    assert e.closed is None
    assert await _route_of(n0, 8, "d") is None
    assert not n0.bus._took_over and not n0.bus._policy_due
    n0.disconnect(first)
    n1.disconnect(e)


async def test_a_policy_kick_read_before_a_failed_reconnect_closes_the_connection_it_handed_back_to(
    nodes: tuple[Node, Node],
) -> None:
    """As above, but the reconnect fails before "e" registers: the route goes back to the
    first connection under the reconnect's serial, and "e"'s kick, naming the serial it
    read, still closes it."""
    n0, n1 = nodes
    first, e, again = await _a_second_mobile_and_a_reconnect(n0, n1, 9)
    n0.bus.disconnected(again)  # type: ignore[arg-type]  # fails its checks: the route goes back
    assert n0.bus._aliases
    n1.hub.register(e)  # type: ignore[arg-type]
    n1.bus.registered(e)  # type: ignore[arg-type]
    await _until(lambda: first.closed is not None)
    assert first.closed is not None and first.closed[0] == CLOSE_POLICY
    assert e.closed is None
    n0.disconnect(first)
    n1.disconnect(e)
    assert not n0.bus._aliases and not n0.bus._took_over


async def test_a_kick_of_a_connect_in_its_checks_closes_it(nodes: tuple[Node, Node]) -> None:
    """The same device connecting on another node names the route of the connect still in
    its checks: that one is closed (it would otherwise register with no route), and with it
    the older connection its route took over."""
    n0, n1 = nodes
    registered = await n0.connect(Device(2, "d"))
    checking = Device(2, "d")
    await n0.bus.connected(checking)  # type: ignore[arg-type]
    newest = await n1.connect(Device(2, "d"))
    await _until(lambda: checking.closed is not None and registered.closed is not None)
    assert checking.closed is not None and checking.closed[0] == CLOSE_REPLACED
    assert registered.closed is not None and registered.closed[0] == CLOSE_REPLACED
    assert newest.closed is None
    n0.bus.disconnected(checking)  # type: ignore[arg-type]
    n0.disconnect(registered)
    await n0.flushed(n1)
    route = await _route_of(n1, 2, "d")
    assert route is not None and route.startswith(f"{n1.bus.node_name}|")
    n1.disconnect(newest)


async def test_a_kick_of_a_route_replaced_since_closes_nothing(nodes: tuple[Node, Node]) -> None:
    """A kick naming a route this node replaced since (a newer connect here registered
    after the kick's sender did) leaves the newer connection alone."""
    n0, _ = nodes
    older = Device(3, "d")
    await n0.bus.connected(older)  # type: ignore[arg-type]
    stale = n0.bus._local[(3, "d")][1]
    newer = await n0.connect(Device(3, "d"))
    n0.bus.disconnected(older)  # type: ignore[arg-type]
    n0.bus._apply(_Close(3, "d", CLOSE_REPLACED, "replaced", int(time.time() * 1000), stale))
    assert newer.closed is None
    n0.bus._apply(_Close(3, "d", CLOSE_REPLACED, "replaced", int(time.time() * 1000), n0.bus._local[(3, "d")][1]))
    assert newer.closed is not None
    n0.disconnect(newer)


async def test_a_connect_cancelled_while_registering_leaves_no_route(nodes: tuple[Node, Node]) -> None:
    n0, n1 = nodes
    dev = Device(4, "d")
    registering = asyncio.ensure_future(n0.bus.connected(dev))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the script is sent; its answer needs Redis
    assert not registering.done()
    registering.cancel()
    await asyncio.gather(registering, return_exceptions=True)
    await _until(lambda: (4, "d") not in n0.bus._local)
    await n0.flushed(n1)
    assert await _route_of(n0, 4, "d") is None


async def test_a_field_a_failed_register_left_is_renewed_for_the_connection_held(nodes: tuple[Node, Node]) -> None:
    """A reconnect whose register script failed (Redis away; the connect goes on without it)
    leaves the device's field naming the older connection's serial on this node. The next
    refresh writes the route of the connection the node holds, so the field does not lapse
    unrenewed and a newer connection elsewhere closes that connection by its serial."""
    n0, n1 = nodes
    await n0.connect(Device(5, "d"))
    left = await _route_of(n0, 5, "d")
    held = await n0.connect(Device(5, "d"))
    serial = n0.bus._local[(5, "d")][1]
    assert left is not None and not left.startswith(f"{n0.bus.node_name}|{serial}|")
    # the field as the failed script leaves it: the older connection's
    await n0.bus._redis.hset(RedisBus.route_key(5), "d", left)
    assert await n0.bus._refresh_routes() == (1, 0, [])
    route = await _route_of(n0, 5, "d")
    assert route is not None and route.startswith(f"{n0.bus.node_name}|{serial}|")
    newest = await n1.connect(Device(5, "d"))
    await _until(lambda: held.closed is not None)
    assert held.closed is not None and held.closed[0] == CLOSE_REPLACED
    assert newest.closed is None
    n0.disconnect(held)
    n1.disconnect(newest)
