"""The customer-service rules both stores apply (yim.storage.rules.service), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.records import AgentLoad
from yim.storage.rules import service as rules
from yim.storage.service import ServiceCtx, ServiceSessionRec

CUSTOMER, AGENT, ADMIN, OTHER = 10, 20, 30, 40


def session(status: str = "active", agent_id: int | None = AGENT) -> ServiceSessionRec:
    return msgspec.structs.replace(
        rules.new_session(1, 2, CUSTOMER, 3, "pre_sale", 100), status=status, agent_id=agent_id
    )


def load(user_id: int, *, online: bool = True, open_sessions: int = 0, capacity: int = 2) -> AgentLoad:
    return AgentLoad(
        user_id=user_id,
        skills=frozenset({"pre_sale"}),
        capacity=capacity,
        open_sessions=open_sessions,
        last_assigned_at=0,
        online=online,
    )


def code_of(fn: object, *args: object) -> str | None:
    try:
        fn(*args)  # type: ignore[operator]
    except YimError as exc:
        return exc.code
    return None


def told(events: list[tuple[int, int, bytes]]) -> list[tuple[int, int, str]]:
    return [(user, actor, msgspec.json.decode(payload)["event"]) for user, actor, payload in events]


# actor, actor's role in the shop -> error code (transfer: serving agent or admin)
MANAGE = [
    (AGENT, "agent", None),
    (ADMIN, "admin", None),
    (AGENT, "admin", None),
    (OTHER, "agent", "forbidden"),
    (OTHER, None, "forbidden"),
    (CUSTOMER, None, "forbidden"),
]


@pytest.mark.parametrize(("actor", "role", "code"), MANAGE)
def test_manage(actor: int, role: str | None, code: str | None) -> None:
    assert code_of(rules.check_manage, session(), actor, role) == code


# session status, actor, role -> error code, or whether there is anything to close
CLOSE = [
    ("active", CUSTOMER, None, True),
    ("active", AGENT, "agent", True),
    ("queued", ADMIN, "admin", True),
    ("active", OTHER, "agent", "forbidden"),
    ("active", OTHER, None, "forbidden"),
    ("closed", CUSTOMER, None, False),  # closing twice does nothing
    ("closed", OTHER, None, "forbidden"),  # but only for those who may close it
]


@pytest.mark.parametrize(("status", "actor", "role", "outcome"), CLOSE)
def test_close(status: str, actor: int, role: str | None, outcome: bool | str) -> None:
    try:
        got: bool | str = rules.check_close(session(status), actor, role)
    except YimError as exc:
        got = exc.code
    assert got == outcome


# status, customer -> error code
RATE = [
    ("closed", CUSTOMER, None),
    ("active", CUSTOMER, "bad_request"),
    ("queued", CUSTOMER, "bad_request"),
    ("closed", AGENT, "forbidden"),
    ("active", OTHER, "forbidden"),  # who rates is checked before when
]


@pytest.mark.parametrize(("status", "customer", "code"), RATE)
def test_rate(status: str, customer: int, code: str | None) -> None:
    assert code_of(rules.check_rate, session(status), customer) == code


# status, to agent, loads -> error code
TRANSFER = [
    ("active", None, [], None),
    ("queued", None, [], None),
    ("closed", None, [], "bad_request"),
    ("closed", OTHER, [load(OTHER)], "bad_request"),
    ("active", OTHER, [load(OTHER)], None),
    ("active", OTHER, [load(AGENT)], "not_found"),
    ("active", OTHER, [load(OTHER, online=False)], "forbidden"),
    ("active", OTHER, [load(OTHER, open_sessions=2, capacity=2)], "forbidden"),
    ("active", OTHER, [load(OTHER, open_sessions=1, capacity=2)], None),
]


@pytest.mark.parametrize(("status", "to_agent", "loads", "code"), TRANSFER)
def test_transfer(status: str, to_agent: int | None, loads: list[AgentLoad], code: str | None) -> None:
    assert code_of(rules.check_transfer, session(status), to_agent, loads) == code


# role -> (admin-only action, agent list, dashboard) error codes
ROLES = [
    ("admin", None, None, None),
    ("agent", "forbidden", None, "forbidden"),
    (None, "forbidden", "forbidden", "forbidden"),
]


@pytest.mark.parametrize(("role", "admin_only", "agent_list", "dashboard"), ROLES)
def test_roles(role: str | None, admin_only: str | None, agent_list: str | None, dashboard: str | None) -> None:
    assert code_of(rules.require_admin, role) == admin_only
    assert code_of(rules.require_shop_agent, role) == agent_list
    assert code_of(rules.require_dashboard, role) == dashboard


# mentions, mention all, serving -> error code
@pytest.mark.parametrize(
    ("mentions", "mention_all", "code"), [((), False, None), ((5,), False, "bad_request"), ((), True, "bad_request")]
)
def test_send(mentions: tuple[int, ...], mention_all: bool, code: str | None) -> None:
    assert code_of(rules.check_send, mentions, mention_all) == code


def test_lookups() -> None:
    assert code_of(rules.running, None) == "unavailable"
    ctx = ServiceCtx(is_connected=lambda _u: True, policy=None)
    assert rules.running(ctx) is ctx
    assert code_of(rules.require_shop, False, 5) == "not_found"
    assert code_of(rules.require_session, None, 5) == "not_found"
    assert code_of(rules.require_agent, None, 5, 6) == "not_found"
    assert code_of(rules.require_agent_shops, []) == "not_found"
    assert rules.require_agent_shops([3]) == [3]
    assert code_of(rules.require_serving, False) == "not_member"
    assert code_of(rules.require_serving, True) is None


@pytest.mark.parametrize(
    ("kind", "body", "text"),
    [("text", b'{"text":"refund #123456"}', "refund #123456"), ("image", b'{"url":"x"}', ""), ("text", b"{}", "")],
)
def test_first_text(kind: str, body: bytes, text: str) -> None:
    assert rules.first_text(kind, body) == text


def test_new_session_is_queued() -> None:
    s = rules.new_session(1, 2, CUSTOMER, 3, "after_sale", 100)
    assert (s.status, s.agent_id, s.queued_at, s.category, s.assigned_at, s.rating) == (
        "queued",
        None,
        100,
        "after_sale",
        None,
        None,
    )


def test_events() -> None:
    s = session()
    assert told(rules.assigned(session("queued", None), OTHER)) == [
        (OTHER, CUSTOMER, "assigned"),
        (CUSTOMER, OTHER, "assigned"),
    ]
    assert msgspec.json.decode(rules.assigned(s, OTHER)[0][2])["agent_id"] == str(OTHER)
    assert told([rules.unassigned(s, AGENT)]) == [(AGENT, CUSTOMER, "unassigned")]
    assert told(rules.closed(s, CUSTOMER)) == [(CUSTOMER, CUSTOMER, "closed"), (AGENT, CUSTOMER, "closed")]
    assert told(rules.closed(session("queued", None), ADMIN)) == [(CUSTOMER, ADMIN, "closed")]
    user, actor, payload = rules.queued(s, 4)
    assert (user, actor) == (CUSTOMER, CUSTOMER)
    assert msgspec.json.decode(payload) == {
        "event": "queued",
        "session_id": "1",
        "shop_id": "2",
        "conv_id": "3",
        "customer_id": str(CUSTOMER),
        "category": "pre_sale",
        "position": 4,
    }


def test_forced_choice_picks_the_named_agent() -> None:
    assert rules.ForcedChoice(7).choose("pre_sale", [load(8)], 8) == 7


# status, connected, excluded -> online
ONLINE = [
    ("online", True, None, True),
    ("online", False, None, False),
    ("online", True, AGENT, False),  # the agent a session is taken from is not a candidate
    ("busy", True, None, False),
    ("away", True, None, False),
    ("offline", True, None, False),
]


@pytest.mark.parametrize(("status", "connected", "exclude", "online"), ONLINE)
def test_agent_loads(status: str, connected: bool, exclude: int | None, online: bool) -> None:
    ctx = ServiceCtx(is_connected=lambda _u: connected, policy=None)
    [got] = rules.agent_loads([(AGENT, '["pre_sale","vip"]', 3, status, 55, 2)], ctx, exclude)
    assert got == AgentLoad(
        user_id=AGENT,
        skills=frozenset({"pre_sale", "vip"}),
        capacity=3,
        open_sessions=2,
        last_assigned_at=55,
        online=online,
    )


def test_agent_row() -> None:
    agent = rules.require_agent((2, AGENT, "agent", '["pre_sale"]', 3, "online", 1), AGENT, 2)
    assert (agent.shop_id, agent.user_id, agent.skills, agent.open_sessions) == (2, AGENT, ["pre_sale"], 1)


@pytest.mark.parametrize(("oldest", "wait"), [(None, 0), (400, 600)])
def test_shop_stats(oldest: int | None, wait: int) -> None:
    stats = rules.shop_stats({"pre_sale": 2, "after_sale": 1}, oldest, 4, 5, 4.5, [], 1000)
    assert (stats.queued, stats.longest_wait_ms, stats.active, stats.closed_today, stats.avg_rating) == (
        3,
        wait,
        4,
        5,
        4.5,
    )
