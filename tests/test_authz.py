"""Authorization matrix: operations x actors, table-driven. Nobody reads or writes what they
should not; the sender of a message is always the authenticated user; ids are Snowflakes.

Actors around a group (owner, admin, member, removed member, non-member, a user blocked by
a member), around a direct chat (its two parties, a third user) and around credentials
(anonymous, expired, revoked, forged and tampered tokens). Each cell of the group table runs
against a fresh group, so one cell's change cannot mask another's outcome.

Extension point: ``EXTRA_ACTORS`` / ``EXTRA_CASES`` below. Customer service adds its
actors there: shop A's admin and agent and a customer of shop A (who must be able to do
their part, so a refusal is known to be about the actor), and ``other_shop_agent`` and
``other_shop_admin`` of shop B, who act on shop A's sessions, dashboard, agents,
transfers, closes and ratings and are refused every one (``not_member``, ``forbidden`` or
``not_found``; ``service_sessions``, which answers anyone with their own sessions, must
not list shop A's). Each shop cell runs on a fresh session of the customer with shop A,
served by shop A's agent. To the groups, the extra actors are strangers: they get what
``outsider`` gets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, login, make_users
from tests.report import record
from yim.ids.snowflake import EPOCH_MS, SEQ_BITS
from yim.node import NodeServer

OK = "ok"

# --- the world each cell acts in ----------------------------------------------------------------


@dataclass
class World:
    dev: dict[str, Device]
    ids: dict[str, str]
    gid: str = ""
    owner_seq: int = 0  # a message of the owner in the group
    member_seq: int = 0  # a message of the member in the group
    dm: str = ""  # direct conversation of target and peer
    extra: dict[str, Any] = field(default_factory=dict)


GROUP_ACTORS = ["owner", "admin", "member", "removed", "outsider", "blocked"]


async def new_group(w: World) -> None:
    """A fresh group: owner, admin, member, target; `removed` was a member until removed."""
    o = w.dev["owner"]
    members = [w.ids[n] for n in ("admin", "member", "removed", "target")]
    g = await o.request("group_create", name="secret plans", members=members)
    w.gid = g["group"]["conv_id"]
    await o.request("group_role", conv_id=w.gid, user_id=w.ids["admin"], role="admin")
    body = {"kind": "text", "conv_id": w.gid}
    w.owner_seq = (await o.request("send", **body, body={"text": "owner's"}, client_msg_id=f"o-{w.gid}"))["seq"]
    m = await w.dev["member"].request("send", **body, body={"text": "member's"}, client_msg_id=f"m-{w.gid}")
    w.member_seq = m["seq"]
    await o.request("group_remove", conv_id=w.gid, user_id=w.ids["removed"])


Op = Callable[[World, Device], Awaitable[Any]]


def _send(conv: str) -> Op:
    return lambda w, d: d.request(
        "send", conv_id=getattr(w, conv), kind="text", body={"text": "hi"}, client_msg_id=f"s-{time.monotonic_ns()}"
    )


NM = "not_member"
FB = "forbidden"
# op -> (the request, {actor: expected outcome}); every group actor must be listed.
GROUP_CASES: dict[str, tuple[Op, dict[str, str]]] = {
    "group_info": (
        lambda w, d: d.request("group_info", conv_id=w.gid),
        # a removed member still sees the group it was in (as inactive), not its members
        {"owner": OK, "admin": OK, "member": OK, "removed": OK, "outsider": NM, "blocked": NM},
    ),
    "group_members": (
        lambda w, d: d.request("group_members", conv_id=w.gid),
        {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "history": (
        lambda w, d: d.request("history", conv_id=w.gid),
        {"owner": OK, "admin": OK, "member": OK, "removed": OK, "outsider": NM, "blocked": NM},
    ),
    "receipts": (
        lambda w, d: d.request("receipts", conv_id=w.gid, seq=w.owner_seq),
        {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "send": (_send("gid"), {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM}),
    "read": (
        lambda w, d: d.request("read", conv_id=w.gid, seq=w.owner_seq),
        {"owner": OK, "admin": OK, "member": OK, "removed": OK, "outsider": NM, "blocked": NM},
    ),
    "typing": (
        lambda w, d: d.request("typing", conv_id=w.gid),
        {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "recall the member's message": (
        lambda w, d: d.request("recall", conv_id=w.gid, seq=w.member_seq),
        {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "recall the owner's message": (
        lambda w, d: d.request("recall", conv_id=w.gid, seq=w.owner_seq),
        {"owner": OK, "admin": OK, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "invite": (
        lambda w, d: d.request("group_invite", conv_id=w.gid, user_ids=[w.ids["peer"]]),
        {"owner": OK, "admin": OK, "member": OK, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "remove a member": (
        lambda w, d: d.request("group_remove", conv_id=w.gid, user_id=w.ids["target"]),
        {"owner": OK, "admin": OK, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "remove the owner": (
        lambda w, d: d.request("group_remove", conv_id=w.gid, user_id=w.ids["owner"]),
        {"owner": "bad_request", "admin": FB, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "make a member admin": (
        lambda w, d: d.request("group_role", conv_id=w.gid, user_id=w.ids["target"], role="admin"),
        {"owner": OK, "admin": FB, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "take ownership": (
        lambda w, d: d.request("group_role", conv_id=w.gid, user_id=d.user_id, role="owner"),
        {"owner": "bad_request", "admin": FB, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "mute a member": (
        lambda w, d: d.request("group_mute", conv_id=w.gid, user_id=w.ids["target"], duration_s=60),
        {"owner": OK, "admin": OK, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "change settings": (
        lambda w, d: d.request("group_update", conv_id=w.gid, announcement="mine now"),
        {"owner": OK, "admin": OK, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "dissolve": (
        lambda w, d: d.request("group_dissolve", conv_id=w.gid),
        {"owner": OK, "admin": FB, "member": FB, "removed": NM, "outsider": NM, "blocked": NM},
    ),
    "join by id (invitation-only group)": (
        lambda w, d: d.request("group_join", conv_id=w.gid),
        {"owner": FB, "admin": FB, "member": FB, "removed": FB, "outsider": FB, "blocked": FB},
    ),
}

# --- customer service: shop A (admin, agent, a customer) and shop B (admin, agent) -------------------


async def _user(http: aiohttp.ClientSession, name: str) -> Device:
    (made,) = await make_users(http, [name])
    device = Device(http, made)
    await device.connect()
    return device


async def _shop_admin(http: aiohttp.ClientSession, w: World) -> Device:
    d = await _user(http, "shop_a_admin")
    w.extra["shop_a"] = (await d.request("shop_create", name="Shop A"))["shop_id"]
    return d


async def _shop_agent(http: aiohttp.ClientSession, w: World) -> Device:
    d = await _user(http, "shop_a_agent")
    await w.dev["shop_admin"].request("shop_agent_set", shop_id=w.extra["shop_a"], user_id=d.user_id, capacity=1000)
    return d


async def _customer(http: aiohttp.ClientSession, w: World) -> Device:
    return await _user(http, "shop_a_customer")


async def _other_shop_admin(http: aiohttp.ClientSession, w: World) -> Device:
    d = await _user(http, "shop_b_admin")
    w.extra["shop_b"] = (await d.request("shop_create", name="Shop B"))["shop_id"]
    return d


async def _other_shop_agent(http: aiohttp.ClientSession, w: World) -> Device:
    d = await _user(http, "shop_b_agent")
    await w.dev["other_shop_admin"].request(
        "shop_agent_set", shop_id=w.extra["shop_b"], user_id=d.user_id, capacity=1000
    )
    return d


async def new_service_session(w: World) -> None:
    """A fresh active session of the customer with shop A, served by shop A's agent."""
    if "session" in w.extra:
        await w.dev["shop_admin"].request("service_close", session_id=w.extra["session"])
    customer = w.dev["customer"]
    ack = await customer.request(
        "send",
        shop_id=w.extra["shop_a"],
        category="pre_sale",
        kind="text",
        body={"text": "hello?"},
        client_msg_id=f"c-{time.monotonic_ns()}",
    )
    session = await customer.request("service_status", shop_id=w.extra["shop_a"])
    assert (session["status"], session["agent_id"]) == ("active", w.ids["shop_agent"]), session
    w.extra["service_conv"], w.extra["session"] = ack["conv_id"], session["session_id"]


async def _listed(w: World, d: Device) -> None:
    """``service_sessions`` of shop A: "listed" when the caller's answer holds the session."""
    page = await d.request("service_sessions", shop_id=w.extra["shop_a"])
    if w.extra["session"] in {x["session_id"] for x in page["sessions"]}:
        raise ProtocolError("listed", "the session is in the caller's list")


async def _rate(w: World, d: Device) -> Any:
    await w.dev["shop_admin"].request("service_close", session_id=w.extra["session"])  # rated once closed
    return await d.request("service_rate", session_id=w.extra["session"], rating=1, comment="by someone")


#: Extension point: more actors (name -> async factory making a Device in the world, in
#: order) and more cases (same shape as GROUP_CASES, with expectations for every actor).
EXTRA_ACTORS: dict[str, Callable[[aiohttp.ClientSession, World], Awaitable[Device]]] = {
    "shop_admin": _shop_admin,
    "shop_agent": _shop_agent,
    "customer": _customer,
    "other_shop_admin": _other_shop_admin,
    "other_shop_agent": _other_shop_agent,
}


def _shop(outcomes: dict[str, str], strangers: str = FB) -> dict[str, str]:
    """Expectations of a shop-A case: the group actors, strangers to shop A, all get ``strangers``."""
    return {**dict.fromkeys(GROUP_ACTORS, strangers), **outcomes}


NF = "not_found"
EXTRA_CASES: dict[str, tuple[Op, dict[str, str]]] = {
    "service: history of the customer's conversation": (
        lambda w, d: d.request("history", conv_id=w.extra["service_conv"]),
        _shop(
            {"shop_admin": OK, "shop_agent": OK, "customer": OK, "other_shop_admin": NM, "other_shop_agent": NM},
            NM,
        ),
    ),
    "service: send to the customer's conversation": (
        lambda w, d: d.request(
            "send",
            conv_id=w.extra["service_conv"],
            kind="text",
            body={"text": "hi"},
            client_msg_id=f"s-{time.monotonic_ns()}",
        ),
        # a supervisor reads every conversation of the shop but writes in none
        _shop(
            {"shop_admin": NM, "shop_agent": OK, "customer": OK, "other_shop_admin": NM, "other_shop_agent": NM},
            NM,
        ),
    ),
    "service: read the customer's conversation": (
        lambda w, d: d.request("read", conv_id=w.extra["service_conv"], seq=1),
        _shop(
            {"shop_admin": NM, "shop_agent": OK, "customer": OK, "other_shop_admin": NM, "other_shop_agent": NM},
            NM,
        ),
    ),
    "service: shop A's sessions": (
        _listed,
        # answered for everyone (with the caller's own sessions), but lists A's session only
        # to A's admin and to the agent serving it
        _shop(
            {
                "shop_admin": "listed",
                "shop_agent": "listed",
                "customer": OK,
                "other_shop_admin": OK,
                "other_shop_agent": OK,
            },
            OK,
        ),
    ),
    "service: the customer's session status": (
        lambda w, d: d.request("service_status", shop_id=w.extra["shop_a"]),
        _shop(
            {"shop_admin": NF, "shop_agent": NF, "customer": OK, "other_shop_admin": NF, "other_shop_agent": NF},
            NF,
        ),
    ),
    "service: shop A's dashboard": (
        lambda w, d: d.request("shop_dashboard", shop_id=w.extra["shop_a"]),
        _shop({"shop_admin": OK, "shop_agent": FB, "customer": FB, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: shop A's agents": (
        lambda w, d: d.request("shop_agents", shop_id=w.extra["shop_a"]),
        _shop({"shop_admin": OK, "shop_agent": OK, "customer": FB, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: make oneself an admin of shop A": (
        lambda w, d: d.request(
            "shop_agent_set", shop_id=w.extra["shop_a"], user_id=d.user_id, role="admin", skills=[], capacity=0
        ),
        _shop({"shop_admin": OK, "shop_agent": FB, "customer": FB, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: transfer the session to another category": (
        lambda w, d: d.request("service_transfer", session_id=w.extra["session"], to_category="after_sale"),
        _shop({"shop_admin": OK, "shop_agent": OK, "customer": FB, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: transfer the session to shop B's agent": (
        lambda w, d: d.request("service_transfer", session_id=w.extra["session"], to_agent=w.ids["other_shop_agent"]),
        _shop({"shop_admin": NF, "shop_agent": NF, "customer": FB, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: close the session": (
        lambda w, d: d.request("service_close", session_id=w.extra["session"]),
        _shop({"shop_admin": OK, "shop_agent": OK, "customer": OK, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
    "service: rate the closed session": (
        _rate,
        _shop({"shop_admin": FB, "shop_agent": FB, "customer": OK, "other_shop_admin": FB, "other_shop_agent": FB}),
    ),
}

# the direct chat of target and peer, and the relation chain around target (who blocked `blocked`)
DM_ACTORS = ["target", "peer", "outsider", "blocked"]
DM_CASES: dict[str, tuple[Op, dict[str, str]]] = {
    "history": (
        lambda w, d: d.request("history", conv_id=w.dm),
        {"target": OK, "peer": OK, "outsider": NM, "blocked": NM},
    ),
    "send by conv_id": (_send("dm"), {"target": OK, "peer": OK, "outsider": NM, "blocked": NM}),
    "read": (
        lambda w, d: d.request("read", conv_id=w.dm, seq=1),
        {"target": OK, "peer": OK, "outsider": NM, "blocked": NM},
    ),
    "receipts": (
        lambda w, d: d.request("receipts", conv_id=w.dm, seq=1),
        {"target": OK, "peer": OK, "outsider": NM, "blocked": NM},
    ),
    "recall target's message": (
        lambda w, d: d.request("recall", conv_id=w.dm, seq=1),
        {"target": OK, "peer": FB, "outsider": NM, "blocked": NM},
    ),
    "report target's message": (
        lambda w, d: d.request("report", conv_id=w.dm, seq=1, category="spam"),
        {"target": "bad_request", "peer": OK, "outsider": NM, "blocked": NM},
    ),
    "typing": (
        lambda w, d: d.request("typing", conv_id=w.dm),
        {"target": OK, "peer": OK, "outsider": NM, "blocked": NM},
    ),
    "send to target": (
        lambda w, d: d.request(
            "send", to=w.ids["target"], kind="text", body={"text": "x"}, client_msg_id=f"t-{time.monotonic_ns()}"
        ),
        {"peer": OK, "outsider": OK, "blocked": "blocked"},
    ),
    "friend request to target": (
        lambda w, d: d.request("friend_request", to=w.ids["target"]),
        {"outsider": OK, "blocked": "blocked"},
    ),
    "follow target": (
        lambda w, d: d.request("follow", user_id=w.ids["target"]),
        {"outsider": OK, "blocked": "blocked"},
    ),
    "target's followers": (
        lambda w, d: d.request("followers", user_id=w.ids["target"]),
        {"outsider": OK, "blocked": "blocked"},
    ),
    "accept a request addressed to someone else": (
        lambda w, d: d.request("friend_accept", request_id=w.extra["request_to_peer"]),
        {"target": "not_found", "outsider": "not_found", "blocked": "not_found"},
    ),
}


# server administration: every admin_* op, by every actor above (none of them a server
# admin; the group's "admin" and shop A's admin included), is refused with `forbidden`
ADMIN_CASES: dict[str, Op] = {
    "admin: list users": lambda w, d: d.request("admin_users", q="target"),
    "admin: show a user": lambda w, d: d.request("admin_user", user_id=w.ids["target"]),
    "admin: disable a user": lambda w, d: d.request("admin_disable", user_id=w.ids["target"]),
    "admin: enable a user": lambda w, d: d.request("admin_enable", user_id=w.ids["target"]),
    "admin: reset a password": lambda w, d: d.request(
        "admin_reset_password", user_id=w.ids["target"], password="taken-over-1"
    ),
    "admin: revoke a device": lambda w, d: d.request("admin_revoke", user_id=w.ids["target"], device_id="d1"),
    "admin: revoke every device": lambda w, d: d.request("admin_revoke", user_id=w.ids["target"]),
    "admin: make oneself a server admin": lambda w, d: d.request("admin_set_role", user_id=d.user_id, admin=True),
    "admin: read the audit log": lambda w, d: d.request("admin_audit"),
    "admin: list groups": lambda w, d: d.request("admin_groups"),
    "admin: show a group": lambda w, d: d.request("admin_group", conv_id=w.gid),
    "admin: dissolve a group": lambda w, d: d.request("admin_group_dissolve", conv_id=w.gid),
    "admin: transfer a group": lambda w, d: d.request("admin_group_transfer", conv_id=w.gid, user_id=d.user_id),
    "admin: create a shop": lambda w, d: d.request("admin_shop_create", owner_id=d.user_id, name="mine"),
    "admin: erase a user": lambda w, d: d.request("admin_erase", user_id=w.ids["target"]),
    "admin: make oneself an agent of shop A": lambda w, d: d.request(
        "admin_shop_agent_set", shop_id=w.extra["shop_a"], user_id=d.user_id, role="admin"
    ),
    "admin: export a user's data (HTTP only)": lambda w, d: _http_get(
        d, f"/api/v1/admin/users/{w.ids['target']}/export"
    ),
    # the actor is checked before the report is looked up: any id will do
    "admin: list reports": lambda w, d: d.request("admin_reports"),
    "admin: show a report": lambda w, d: d.request("admin_report", report_id="1"),
    "admin: resolve a report": lambda w, d: d.request("admin_resolve", report_id="1", action="disable"),
    "admin: a reported message's media (HTTP only)": lambda w, d: _http_get(d, "/api/v1/admin/reports/1/media/1"),
}


async def _http_get(d: Device, path: str) -> None:
    """An HTTP-only route as the actor, its error code raised as a ProtocolError."""
    async with d.http.get(path, headers={"Authorization": f"Bearer {d.token}"}) as r:
        if r.status >= 400:
            body = await r.json()
            raise ProtocolError(body["code"], body["message"])


async def outcome(coro: Awaitable[Any]) -> str:
    try:
        await coro
    except ProtocolError as exc:
        return exc.code
    return OK


async def _world(http: aiohttp.ClientSession) -> World:
    names = ["owner", "admin", "member", "removed", "outsider", "blocked", "target", "peer"]
    logins = await make_users(http, names)
    dev = {n: Device(http, x) for n, x in zip(names, logins, strict=True)}
    for d in dev.values():
        await d.connect()
    w = World(dev=dev, ids={n: d.user_id for n, d in dev.items()})
    w.dm = (
        await dev["target"].request("send", to=w.ids["peer"], kind="text", body={"text": "psst"}, client_msg_id="dm1")
    )["conv_id"]
    await dev["target"].request("block", user_id=w.ids["blocked"])
    w.extra["request_to_peer"] = (await dev["owner"].request("friend_request", to=w.ids["peer"]))["request_id"]
    for name, factory in EXTRA_ACTORS.items():
        dev[name] = await factory(http, w)
        w.ids[name] = dev[name].user_id
    return w


async def test_group_and_direct_chat_authorization_matrix(server: NodeServer, backend: str) -> None:
    cells = 0
    async with asyncio.timeout(120), aiohttp.ClientSession(server.url) as http:
        w = await _world(http)
        mismatches = []
        for op, (run, expected) in {**GROUP_CASES, **EXTRA_CASES}.items():
            for actor in [*GROUP_ACTORS, *EXTRA_ACTORS]:
                await (new_service_session(w) if op in EXTRA_CASES else new_group(w))
                got = await outcome(run(w, w.dev[actor]))
                cells += 1
                want = expected.get(actor, expected["outsider"])  # extra actors are strangers to the group
                if got != want:
                    mismatches.append(f"{op!r} by {actor}: expected {want}, got {got}")
        for op, (run, expected) in DM_CASES.items():
            for actor, want in expected.items():
                if op == "recall target's message" and actor == "target":
                    continue  # run last: it changes the conversation
                got = await outcome(run(w, w.dev[actor]))
                cells += 1
                if got != want:
                    mismatches.append(f"direct {op!r} by {actor}: expected {want}, got {got}")
        for op, run in ADMIN_CASES.items():
            for actor in [*GROUP_ACTORS, *EXTRA_ACTORS, "target", "peer"]:
                got = await outcome(run(w, w.dev[actor]))
                cells += 1
                if got != FB:
                    mismatches.append(f"{op!r} by {actor}: expected {FB}, got {got}")
        assert await outcome(DM_CASES["recall target's message"][0](w, w.dev["target"])) == OK
        assert not mismatches, "\n".join(mismatches)

        # what a removed member still reads stops at its removal
        await new_group(w)
        after = await w.dev["owner"].request(
            "send", conv_id=w.gid, kind="text", body={"text": "after"}, client_msg_id="a"
        )
        seen = await w.dev["removed"].pull(w.gid, 0)
        assert seen and max(m["seq"] for m in seen) < after["seq"]
        assert "after" not in json.dumps(seen)

        # presence: a friend sees target online; a stranger and the blocked user see offline
        req = await w.dev["member"].request("friend_request", to=w.ids["target"])
        await w.dev["target"].request("friend_accept", request_id=req["request_id"])
        for actor, status in (("member", "online"), ("outsider", "offline"), ("blocked", "offline")):
            page = await w.dev[actor].request("presence_query", user_ids=[w.ids["target"]])
            assert page["presence"][0]["status"] == status, actor
        # the conversation list never shows someone else's chats
        for actor in ("outsider", "blocked"):
            convs = (await w.dev[actor].request("conversations"))["conversations"]
            assert w.dm not in {c["conv_id"] for c in convs}
        for d in w.dev.values():
            await d.close()
    record(f"authorization matrix [{backend}]: {cells} operation x actor cells, 0 mismatches")


# --- who the sender is ---------------------------------------------------------------------------


async def test_the_sender_is_always_the_authenticated_user(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        alice_l, bob_l, mallory_l = await make_users(http, ["alice", "bob", "mallory"])
        mallory = Device(http, mallory_l)
        await mallory.connect()
        spoofs = [
            {"sender_id": alice_l["user_id"]},
            {"sender_device": "alice-phone"},
            {"from": alice_l["user_id"]},
            {"user_id": alice_l["user_id"]},
            {"msg_id": "1"},
            {"seq": 1},
        ]
        base = {"to": bob_l["user_id"], "kind": "text", "body": {"text": "from alice, honest"}}
        for i, extra in enumerate(spoofs):
            with pytest.raises(ProtocolError) as err:
                await mallory.request("send", **base, client_msg_id=f"ws{i}", **extra)
            assert err.value.code == "bad_request"  # frames forbid unknown fields
            r = await http.post(
                "/api/v1/messages",
                json={**base, "client_msg_id": f"http{i}", **extra},
                headers={"Authorization": f"Bearer {mallory_l['token']}"},
            )
            assert r.status == 400 and (await r.json())["code"] == "bad_request"
        # the body may say anything; the stored sender is still mallory
        ack = await mallory.request("send", **{**base, "body": {"text": "sender_id: alice"}}, client_msg_id="ok")
        bob = Device(http, bob_l)
        await bob.connect()
        history = await bob.pull(ack["conv_id"], 0)
        assert [(m["sender_id"], m["sender_device"]) for m in history] == [(mallory_l["user_id"], "d1")]
        # a stolen client_msg_id does not return someone else's message: idempotency is per sender
        alice = Device(http, alice_l)
        await alice.connect()
        mine = await alice.request("send", to=bob_l["user_id"], kind="text", body={"text": "a"}, client_msg_id="ok")
        assert mine["msg_id"] != ack["msg_id"] and not mine["duplicate"]
        for d in (mallory, bob, alice):
            await d.close()


async def test_ids_are_snowflakes_not_guessable_counters(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        logins = await make_users(http, ["user1", "user2", "user3"])
        a, b = Device(http, logins[0]), Device(http, logins[1])
        await a.connect()
        await b.connect()
        acks = [
            await a.request("send", to=b.user_id, kind="text", body={"text": str(i)}, client_msg_id=f"c{i}")
            for i in range(3)
        ]
        group = await a.request("group_create", name="g", members=[b.user_id])
        now_ms = time.time() * 1000
        ids = [int(x["user_id"]) for x in logins] + [int(x["msg_id"]) for x in acks]
        ids += [int(acks[0]["conv_id"]), int(group["group"]["conv_id"])]
        for i in ids:
            assert i > 2**50  # not a small counter
            ts = (i >> (SEQ_BITS + 10)) + EPOCH_MS
            assert abs(ts - now_ms) < 60_000  # time-based: 41 bits of ms since the epoch
            assert (i >> SEQ_BITS) & 1023 == server.settings.node_id
        assert len(set(ids)) == len(ids)
        await a.close()
        await b.close()


# --- credentials ------------------------------------------------------------------------------------


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bad_tokens(valid: str, secret: bytes) -> dict[str, str | None]:
    """Every kind of credential that must not work, derived from a valid token."""
    claims = jwt.decode(valid, options={"verify_signature": False})
    other = dict(claims, sub=str(int(claims["sub"]) + 1))
    header, _, sig = valid.split(".")
    return {
        "anonymous": None,
        "expired": jwt.encode(dict(claims, exp=int(time.time()) - 10), secret, algorithm="HS256"),
        "forged (another key)": jwt.encode(claims, b"k" * 32, algorithm="HS256"),
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + ".",
        "tampered sub": header + "." + _b64(other) + "." + sig,
        "garbage": "not-a-token",
        "unknown session": jwt.encode(dict(claims, sid="nope"), secret, algorithm="HS256"),
    }


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return re.sub(r"\{\w+\}", "1", path)  # other ids (shops, media ...): any number will do


async def test_bad_credentials_are_refused_on_every_authenticated_route(
    make_server: MakeServer, tmp_path: Path, backend: str
) -> None:
    server = await make_server(data_dir=tmp_path / "node")
    # The node's signing key (kept in <data>/secret.key on SQLite, in the shared store on
    # PostgreSQL), to forge otherwise valid tokens.
    secret = server.node.accounts._secret
    calls = 0
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        alice_l, bob_l = await make_users(http, ["alice", "bob"])
        # a revoked token: logged out; another superseded by a new login of the same device
        revoked = (await login(http, "alice", "laptop"))["token"]
        r = await http.delete("/api/v1/sessions/current", headers={"Authorization": f"Bearer {revoked}"})
        assert r.status == 204
        superseded = (await login(http, "alice", "tablet"))["token"]
        await login(http, "alice", "tablet")
        tokens = {**bad_tokens(alice_l["token"], secret), "revoked": revoked, "superseded": superseded}

        alice = Device(http, alice_l)
        await alice.connect()
        sent = await alice.request("send", to=bob_l["user_id"], kind="text", body={"text": "x"}, client_msg_id="1")
        ids = {"conv_id": sent["conv_id"], "user_id": bob_l["user_id"], "request_id": "1", "device_id": "d1"}
        doc = await (await http.get("/api/v1/openapi.json")).json()
        routes = [
            (method.upper(), _fill(path, ids))
            for path, ops in doc["paths"].items()
            for method, op in ops.items()
            if op.get("security", doc["security"])
        ]
        assert len(routes) > 40
        for name, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for method, path in routes:
                r = await http.request(method, path, headers=headers, json={} if method != "GET" else None)
                calls += 1
                assert r.status == 401, (name, method, path, r.status, await r.text())
                assert (await r.json())["code"] == "unauthorized"
            # the WebSocket: requests before auth are refused; a bad token closes with 4001
            ws = await http.ws_connect("/ws")
            await ws.send_json({"op": "history", "rid": 1, "conv_id": sent["conv_id"]})
            assert (await ws.receive_json(timeout=5))["code"] == "auth_required"
            if token is not None:
                await ws.send_json({"op": "auth", "rid": 2, "token": token})
                assert (await ws.receive_json(timeout=5))["code"] == "unauthorized"
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001
            await ws.close()
        # and the real token still works everywhere
        r = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {alice_l['token']}"})
        assert r.status == 200
        # revoking "d1" as bob revokes bob's own d1, never alice's
        r = await http.delete("/api/v1/devices/d1", headers={"Authorization": f"Bearer {bob_l['token']}"})
        assert r.status == 204
        r = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {alice_l['token']}"})
        assert r.status == 200
        await alice.close()
    record(
        f"credentials [{backend}]: {len(tokens)} kinds of bad token x {len(routes)} authenticated routes = {calls} "
        "calls, all 401"
    )
