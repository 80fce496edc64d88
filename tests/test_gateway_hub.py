"""The gateway's table of live connections (yim/gateway/hub.py) as a data structure: a user
with one device online is kept as that connection itself, a user with several as a dict of
them, and every way of reading the table sees the same connections whichever form it is in."""

from __future__ import annotations

from yim.config import Settings
from yim.gateway.hub import Hub
from yim.metrics import Metrics
from yim.protocol.close import CLOSE_POLICY, CLOSE_REPLACED
from yim.protocol.codec import JSON


class Conn:
    """What the hub reads and calls of a connection."""

    def __init__(self, user_id: int, device_id: str, platform: str, connected_at: float) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.platform = platform
        self.connected_at = connected_at
        self.session_id = f"s-{device_id}"
        self.acked_seq = 0
        self.closing = False
        self.closed: int | None = None
        self.codec = JSON
        self.sent: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    def close(self, code: int, reason: str) -> None:
        self.closing = True
        self.closed = code


def _same_views(hub: Hub, metrics: Metrics, expected: dict[int, list[Conn]]) -> None:
    for user_id, conns in expected.items():
        assert hub.devices_of(user_id) == {c.device_id: c for c in conns}
        assert list(hub.connections_of(user_id)) == conns
    assert sorted(map(id, hub.connections())) == sorted(id(c) for cs in expected.values() for c in cs)
    assert len(hub) == sum(map(len, expected.values())) == metrics.connections._value.get()
    assert hub.online_users() == sum(1 for cs in expected.values() if cs)


def test_a_lone_connection_is_kept_bare_and_every_view_agrees() -> None:
    metrics = Metrics()
    hub = Hub(metrics, Settings(max_online_mobile=1, max_connections_per_user=3))
    phone = Conn(1, "phone", "android", 1.0)
    hub.register(phone)  # type: ignore[arg-type]
    assert hub._by_user[1] is phone  # no dict for a user's only device
    _same_views(hub, metrics, {1: [phone]})

    web = Conn(1, "web", "web", 2.0)
    hub.register(web)  # type: ignore[arg-type]
    _same_views(hub, metrics, {1: [phone, web]})
    assert hub.deliver(1, {"json": b"x"}, exclude=web) == 1 and phone.sent == [b"x"] and not web.sent

    tablet = Conn(1, "tablet", "ios", 3.0)  # one mobile at a time: the phone is closed, then leaves
    hub.register(tablet)  # type: ignore[arg-type]
    assert phone.closed == CLOSE_POLICY
    hub.unregister(phone)  # type: ignore[arg-type]
    _same_views(hub, metrics, {1: [web, tablet]})

    hub.unregister(web)  # type: ignore[arg-type]
    assert hub._by_user[1] is tablet  # back to bare when one is left
    _same_views(hub, metrics, {1: [tablet]})

    again = Conn(1, "tablet", "ios", 4.0)  # the same device again: replaces it, still bare
    hub.register(again)  # type: ignore[arg-type]
    assert tablet.closed == CLOSE_REPLACED and hub._by_user[1] is again
    hub.unregister(tablet)  # type: ignore[arg-type]  # the replaced one leaving takes nothing
    _same_views(hub, metrics, {1: [again]})
    assert hub.deliver(1, {"json": b"y"}) == 1 and again.sent == [b"y"]
    assert hub.close_sessions(1, {"s-tablet"}, 4003, "revoked") == 1 and again.closed == 4003

    hub.unregister(again)  # type: ignore[arg-type]
    _same_views(hub, metrics, {1: []})
    assert 1 not in hub._by_user


def test_the_device_that_registers_last_wins_also_when_its_socket_opened_first() -> None:
    """A phone whose socket opened first (1.0) but whose auth was slow registers after a
    tablet (2.0): the tablet is closed, as any other device older in registration would be.
    Sorting the newest into the slice of victims and skipping it left both online."""
    metrics = Metrics()
    hub = Hub(metrics, Settings(max_online_mobile=1, max_connections_per_user=2))
    tablet = Conn(1, "tablet", "ios", 2.0)
    hub.register(tablet)  # type: ignore[arg-type]
    phone = Conn(1, "phone", "android", 1.0)
    hub.register(phone)  # type: ignore[arg-type]
    assert tablet.closed == CLOSE_POLICY and phone.closed is None
    hub.unregister(tablet)  # type: ignore[arg-type]
    web = Conn(1, "web", "web", 3.0)
    hub.register(web)  # type: ignore[arg-type]
    early = Conn(1, "desktop", "desktop", 0.5)  # the per-user limit (2): the same rule
    hub.register(early)  # type: ignore[arg-type]
    assert phone.closed == CLOSE_POLICY and web.closed is None and early.closed is None


def test_a_connection_closed_during_its_checks_signs_no_one_out() -> None:
    """Kicked or replaced from another worker or node while in its checks, a connection
    that registers all the same closes no other device: its replacer decides."""
    hub = Hub(Metrics(), Settings(max_online_mobile=1))
    phone = Conn(1, "phone", "android", 1.0)
    hub.register(phone)  # type: ignore[arg-type]
    tablet = Conn(1, "tablet", "ios", 2.0)
    tablet.close(CLOSE_REPLACED, "replaced elsewhere")
    hub.register(tablet)  # type: ignore[arg-type]
    assert phone.closed is None
