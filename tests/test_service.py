"""Customer service: every routing rule, re-routing on a dead connection, transfers,
supervision, and a burst of 200 customers against 5 agents."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, keepalive, make_users, until
from yim.node import NodeServer


def service_events(device: Device, event: str | None = None) -> list[dict[str, Any]]:
    return [
        e["data"] for e in device.events if e["type"] == "service" and (event is None or e["data"]["event"] == event)
    ]


async def users(http: aiohttp.ClientSession, names: list[str], connect: bool = True) -> list[Device]:
    devices = [Device(http, x) for x in await make_users(http, names)]
    if connect:
        await asyncio.gather(*(d.connect() for d in devices))
    return devices


async def ask(customer: Device, shop_id: str, text: str, n: int = 0, **extra: Any) -> dict[str, Any]:
    return await customer.request(
        "send", shop_id=shop_id, kind="text", body={"text": text}, client_msg_id=f"{customer.user_id}-{n}", **extra
    )


def assigned_agent(customer: Device) -> str | None:
    found = service_events(customer, "assigned")
    return found[-1]["agent_id"] if found else None


async def make_shop(owner: Device, agents: list[tuple[Device, list[str], int]]) -> str:
    shop = await owner.request("shop_create", name="好店")
    for agent, skills, capacity in agents:
        await owner.request(
            "shop_agent_set", shop_id=shop["shop_id"], user_id=agent.user_id, skills=skills, capacity=capacity
        )
    return shop["shop_id"]


async def test_routing_rules_skill_online_least_busy_round_robin_capacity_queue(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        owner, a1, a2, a3 = await users(http, ["owner", "agent1", "agent2", "agent3"], connect=False)
        await owner.connect()
        await a1.connect()
        await a2.connect()
        shop = await make_shop(
            owner, [(a1, ["pre_sale"], 2), (a2, ["after_sale"], 2), (a3, ["pre_sale", "after_sale"], 2)]
        )
        cs = await users(http, [f"cust{i}" for i in range(8)])

        await ask(cs[0], shop, "这个有货吗")  # pre-sale; a3 (both skills) is offline
        await until(lambda: assigned_agent(cs[0]) is not None)
        assert assigned_agent(cs[0]) == a1.user_id
        await ask(cs[1], shop, "my order #12345678 has not arrived")  # an order id: after-sale
        await until(lambda: assigned_agent(cs[1]) is not None)
        assert assigned_agent(cs[1]) == a2.user_id
        assert (await cs[1].request("service_status", shop_id=shop))["category"] == "after_sale"

        await a3.connect()  # comes online: now the least busy pre-sale agent
        await ask(cs[2], shop, "hello")
        await until(lambda: assigned_agent(cs[2]) is not None)
        assert assigned_agent(cs[2]) == a3.user_id
        # a1 and a3 are equally busy (1/2): round-robin picks the one assigned longer ago, a1.
        await ask(cs[3], shop, "hello")
        await until(lambda: assigned_agent(cs[3]) is not None)
        assert assigned_agent(cs[3]) == a1.user_id
        await ask(cs[4], shop, "hello")
        await until(lambda: assigned_agent(cs[4]) is not None)
        assert assigned_agent(cs[4]) == a3.user_id
        # Every pre-sale slot is taken: the next two wait in order.
        for i in (5, 6):
            await ask(cs[i], shop, "anyone?")
        status5 = await cs[5].request("service_status", shop_id=shop)
        status6 = await cs[6].request("service_status", shop_id=shop)
        assert (status5["status"], status5["position"], status6["position"]) == ("queued", 1, 2)
        assert service_events(cs[6], "queued")[-1]["position"] == 2
        board = await owner.request("shop_dashboard", shop_id=shop)
        assert board["queued"] == 2 and board["active"] == 5
        assert {a["user_id"]: a["open_sessions"] for a in board["agents"]}[a1.user_id] == 2

        # a1 closes a session: the head of the queue gets the free slot, the other moves up.
        sid = (await cs[0].request("service_status", shop_id=shop))["session_id"]
        await a1.request("service_close", session_id=sid)
        await until(lambda: assigned_agent(cs[5]) is not None)
        assert assigned_agent(cs[5]) == a1.user_id
        assert (await cs[6].request("service_status", shop_id=shop))["position"] == 1
        # The agent got the customer's queued message in the conversation.
        conv = status5["conv_id"]
        page = await a1.request("history", conv_id=conv)
        assert page["messages"][-1]["body"] == {"text": "anyone?"}
        for d in (owner, a1, a2, a3, *cs):
            await d.close()


async def test_sticky_agent_and_the_last_free_slot(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        owner, a, b = await users(http, ["owner", "agenta", "agentb"], connect=False)
        await owner.connect()
        await a.connect()
        shop = await make_shop(owner, [(a, ["pre_sale"], 10), (b, ["pre_sale"], 10)])
        c, x, y = await users(http, ["returning", "other1", "other2"])
        await ask(c, shop, "first visit", 1)
        await until(lambda: assigned_agent(c) == a.user_id)
        await c.request("service_close", session_id=(await c.request("service_status", shop_id=shop))["session_id"])
        for d in (x, y):
            await ask(d, shop, "hi")
            await until(lambda d=d: assigned_agent(d) == a.user_id)
        await b.connect()  # b is free, a has two customers — but c had a before
        await ask(c, shop, "I'm back", 2)
        await until(lambda: len(service_events(c, "assigned")) == 2)
        assert assigned_agent(c) == a.user_id

        # Two customers racing for one agent's last slot: exactly one gets it.
        owner2, solo = await users(http, ["owner2", "solo"])
        shop2 = await make_shop(owner2, [(solo, ["pre_sale"], 1)])
        p, q = await users(http, ["racer1", "racer2"])
        await asyncio.gather(ask(p, shop2, "me first"), ask(q, shop2, "no, me"))
        statuses = sorted([(await d.request("service_status", shop_id=shop2))["status"] for d in (p, q)])
        assert statuses == ["active", "queued"]
        for d in (owner, a, b, c, x, y, owner2, solo, p, q):
            await d.close()


async def test_reroute_when_an_agent_connection_dies_without_close(make_server: Any) -> None:
    server: NodeServer = await make_server(idle_timeout_s=1.0, presence_debounce_s=0.05)
    async with aiohttp.ClientSession(server.url) as http:
        owner, a, b = await users(http, ["owner", "agenta", "agentb"], connect=False)
        await owner.connect()
        await a.connect()
        shop = await make_shop(owner, [(a, ["pre_sale"], 5), (b, ["pre_sale"], 5)])
        (c,) = await users(http, ["customer"])
        async with keepalive(owner, c):
            await ask(c, shop, "question one", 1)
            await until(lambda: assigned_agent(c) == a.user_id)
            conv = (await c.request("service_status", shop_id=shop))["conv_id"]
            await a.request("send", conv_id=conv, kind="text", body={"text": "answer one"}, client_msg_id="a1")
            await b.connect()
            async with keepalive(b):
                # a stops sending anything (no close): after the idle timeout it is offline.
                await until(lambda: assigned_agent(c) == b.user_id, timeout=8)
                page = await b.request("history", conv_id=conv)
                assert [m["body"]["text"] for m in page["messages"]] == ["question one", "answer one"]
                await b.request("send", conv_id=conv, kind="text", body={"text": "I take over"}, client_msg_id="b1")
        await a.connect()
        events, _ = await a.sync_all()
        assert [e["data"]["event"] for e in events if e["type"] == "service"][-1] == "unassigned"
        with pytest.raises(ProtocolError) as err:
            await a.request("send", conv_id=conv, kind="text", body={"text": "still here?"}, client_msg_id="a2")
        assert err.value.code == "not_member"
        page = await a.request("history", conv_id=conv)
        assert "I take over" not in [m["body"].get("text") for m in page["messages"]]
        for d in (owner, a, b, c):
            await d.close()


async def test_transfer_supervision_close_and_rating(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        owner, a, b, s = await users(http, ["owner", "agenta", "agentb", "sales"])
        shop = await make_shop(owner, [(a, ["pre_sale"], 5), (b, ["pre_sale"], 5), (s, ["after_sale"], 5)])
        (c,) = await users(http, ["customer"])
        await ask(c, shop, "hello", 1)
        await until(lambda: assigned_agent(c) is not None)
        first = assigned_agent(c)
        serving, other = (a, b) if first == a.user_id else (b, a)
        status = await c.request("service_status", shop_id=shop)
        conv, sid = status["conv_id"], status["session_id"]
        # Another agent of the shop cannot read it; the shop admin (supervisor) can.
        with pytest.raises(ProtocolError) as err:
            await other.request("history", conv_id=conv)
        assert err.value.code == "not_member"
        assert len((await owner.request("history", conv_id=conv))["messages"]) == 1
        admin_view = await owner.request("service_sessions", shop_id=shop)
        assert [x["session_id"] for x in admin_view["sessions"]] == [sid]
        mine = await serving.request("service_sessions")
        assert [x["session_id"] for x in mine["sessions"]] == [sid]

        await serving.request("service_transfer", session_id=sid, to_agent=other.user_id)
        await until(lambda: assigned_agent(c) == other.user_id)
        assert (await other.request("history", conv_id=conv))["messages"][0]["body"] == {"text": "hello"}
        await other.request("service_transfer", session_id=sid, to_category="after_sale")
        await until(lambda: assigned_agent(c) == s.user_id)
        with pytest.raises(ProtocolError) as err:
            await c.request("service_rate", session_id=sid, rating=5)
        assert err.value.code == "bad_request"  # not closed yet
        await s.request("service_close", session_id=sid)
        rated = await c.request("service_rate", session_id=sid, rating=5, comment="很好")
        assert (rated["status"], rated["rating"]) == ("closed", 5)
        board = await owner.request("shop_dashboard", shop_id=shop)
        assert (board["closed_today"], board["avg_rating"], board["active"]) == (1, 5.0, 0)
        # The customer sees one conversation with the shop, named after it.
        convs = (await c.request("conversations"))["conversations"]
        assert [(x["type"], x["name"], x["shop_id"], x["customer_id"]) for x in convs] == [
            ("service", "好店", shop, c.user_id)
        ]
        assert (await c.request("shop_info", shop_id=shop))["name"] == "好店"
        with pytest.raises(ProtocolError) as err:
            await c.request("shop_info", shop_id="12345")
        assert err.value.code == "not_found"
        with pytest.raises(ProtocolError) as err:
            await a.request("shop_dashboard", shop_id=shop)
        assert err.value.code == "forbidden"
        for d in (owner, a, b, s, c):
            await d.close()


async def test_burst_of_200_customers_against_5_agents_of_capacity_10(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url, connector=aiohttp.TCPConnector(limit=0)) as http:
        owner, *agents = await users(http, ["owner"] + [f"agent{i}" for i in range(5)])
        shop = await make_shop(owner, [(a, ["pre_sale"], 10) for a in agents])
        customers = await users(http, [f"burst{i:03d}" for i in range(200)])
        open_by_agent: dict[str, set[str]] = {a.user_id: set() for a in agents}
        max_seen = 0
        done = 0
        rng = random.Random(7)

        async def serve(agent: Device) -> None:
            nonlocal max_seen, done
            handled = 0
            while done < 200:
                events = service_events(agent, "assigned")
                for ev in events[handled:]:
                    open_by_agent[agent.user_id].add(ev["session_id"])
                    max_seen = max(max_seen, len(open_by_agent[agent.user_id]))
                handled = len(events)
                if open_by_agent[agent.user_id]:
                    sid = rng.choice(sorted(open_by_agent[agent.user_id]))
                    await asyncio.sleep(rng.uniform(0.001, 0.01))
                    open_by_agent[agent.user_id].discard(sid)
                    await agent.request("service_close", session_id=sid)
                    done += 1
                else:
                    await asyncio.sleep(0.005)

        async def arrive() -> None:
            for i, cust in enumerate(customers):
                await ask(cust, shop, f"pre-sale question {i}")

        async with asyncio.timeout(90):
            await asyncio.gather(arrive(), *(serve(a) for a in agents))
        assert max_seen <= 10
        sessions = (await owner.request("service_sessions", shop_id=shop, limit=1000))["sessions"]
        assert len(sessions) == 200 and all(x["status"] == "closed" for x in sessions)
        # Served in queue order: by (queued_at, id), assignment times never go backwards.
        ordered = sorted(sessions, key=lambda x: (x["queued_at"], int(x["session_id"])))
        assigned = [x["assigned_at"] for x in ordered]
        assert assigned == sorted(assigned)
        for d in (owner, *agents, *customers):
            await d.close()


async def test_media_typing_membership_and_history_in_service_conversations(server: NodeServer) -> None:
    from tests.test_media import uploaded

    async with aiohttp.ClientSession(server.url) as http:
        owner, a = await users(http, ["owner", "agenta"])
        shop = await make_shop(owner, [(a, ["pre_sale"], 1)])
        busy, c = await users(http, ["busy", "customer"])
        await ask(busy, shop, "taking the only slot")
        await until(lambda: assigned_agent(busy) == a.user_id)

        # While queued, the customer types and sends a file: both work, the file is kept.
        await ask(c, shop, "hello", 1)
        conv = (await c.request("service_status", shop_id=shop))["conv_id"]
        assert (await c.request("typing", conv_id=conv))["forwarded"] is True
        media = await uploaded(http, c.login, b"order list\n" * 10, kind="file", name="清单.txt")
        await c.request("send", conv_id=conv, kind="file", body={"media_id": media["media_id"]}, client_msg_id="f1")
        with pytest.raises(ProtocolError) as err:
            await c.request(
                "send", conv_id=conv, kind="text", body={"text": "@x"}, client_msg_id="m1", mentions=[a.user_id]
            )
        assert err.value.code == "bad_request"

        # The agent frees up and gets the customer: typing reaches them both ways now.
        await a.request("service_close", session_id=(await busy.request("service_status", shop_id=shop))["session_id"])
        await until(lambda: assigned_agent(c) == a.user_id)
        entry = await c.request("conversation", conv_id=conv)
        assert entry["member_count"] == 2
        assert (await a.request("typing", conv_id=conv))["forwarded"] is True
        await until(lambda: any(n["type"] == "typing" for n in c.notices))
        page = await a.request("history", conv_id=conv)
        assert [m["kind"] for m in page["messages"]] == ["text", "file"]
        assert page["messages"][1]["body"]["name"] == "清单.txt"

        # An agent lists the sessions they closed too, newest first.
        closed = await a.request("service_sessions", status="closed")
        assert [s["customer_id"] for s in closed["sessions"]] == [busy.user_id]
        for d in (owner, a, busy, c):
            await d.close()
