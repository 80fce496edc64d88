"""Presence of a burst of users on ``yim serve --workers 2``: many users connecting at once on
both workers all end online for a friend watching them, and offline once they go; among them
a customer-service agent still reaches the routing, though the workers ask the store about
no one else's agent status (the store process's hub answers it with each presence change)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, make_users, until
from tests.test_service import ask, assigned_agent
from tests.test_workers_serve import WorkersNode, node_of
from yim.bus.workers_hub import HubState, PresenceIn

BURST = 40


@pytest.mark.parametrize(
    ("may_be_agent", "expected"),
    [
        (None, [True, True, False]),  # no answer from the store: any change may be an agent's
        ({2}.__contains__, [False, True, False]),  # the store knows 1 is no agent
    ],
)
def test_hub_says_whose_presence_change_needs_the_agent_check(
    may_be_agent: Callable[[int], bool] | None, expected: list[bool]
) -> None:
    state = HubState({}, 16, may_be_agent=may_be_agent)
    state.presence_sync(0, PresenceIn([(3, [("c", "online", "web", 1)])], 5))
    # 1 and 2 come online; 3 stays online (unchanged: nothing to tell anyone)
    devices = [(1, [("a", "online", "web", 2)]), (2, [("b", "online", "ios", 2)]), (3, [("c", "online", "web", 1)])]
    out = state.presence_sync(0, PresenceIn(devices, 6))
    assert [row[1] for row in out] == [True, True, False]
    assert [row[-1] for row in out] == expected
    # going offline again: the same answer
    out = state.presence_sync(0, PresenceIn([(1, []), (2, [])], 7))
    assert [row[-1] for row in out] == expected[:2]


def seen(watcher: Device) -> dict[str, str]:
    """Each user's last presence status pushed to the watcher."""
    out: dict[str, str] = {}
    for n in watcher.notices:
        if n["type"] == "presence":
            out[n["data"]["user_id"]] = n["data"]["status"]
    return out


@pytest.mark.slow
async def test_a_burst_of_connects_on_two_workers(tmp_path: Path) -> None:
    node = WorkersNode(tmp_path / "data")
    await asyncio.to_thread(node.start)
    try:
        async with aiohttp.ClientSession(node.url) as http:
            names = ["watcher", "owner", "agent", "customer", *(f"burst{i}" for i in range(BURST))]
            watcher, owner, agent, customer, *burst = [Device(http, lg) for lg in await make_users(http, names)]
            await asyncio.gather(watcher.connect(), owner.connect(), customer.connect())
            shop = (await owner.request("shop_create", name="好店"))["shop_id"]
            await owner.request(
                "shop_agent_set", shop_id=shop, user_id=agent.user_id, skills=["pre_sale", "after_sale"], capacity=5
            )
            friends = [agent, *burst]

            async def befriend(f: Device) -> None:  # accepted over HTTP: no friend connects before the burst
                req = await watcher.request("friend_request", to=f.user_id)
                r = await http.post(
                    f"/api/v1/friend-requests/{req['request_id']}/accept",
                    headers={"Authorization": f"Bearer {f.token}"},
                )
                assert r.status == 200, await r.text()

            await asyncio.gather(*(befriend(f) for f in friends))
            assert all(seen(watcher).get(f.user_id, "offline") == "offline" for f in friends), seen(watcher)

            # A customer asks while the shop's one agent is offline: queued until the agent's
            # presence reaches the routing (the agent connects within the burst).
            await ask(customer, shop, "有人吗")
            assert (await customer.request("service_status", shop_id=shop))["status"] == "queued"

            # All at once, spread by the kernel over both workers.
            await asyncio.gather(*(f.connect() for f in friends))
            await until(lambda: all(seen(watcher).get(f.user_id) == "online" for f in friends), timeout=20)
            acks = await asyncio.gather(
                *(f.request("send", to=watcher.user_id, kind="text", body={"text": "hi"}, client_msg_id="hi")
                  for f in friends)
            )  # fmt: skip
            assert {node_of(a["msg_id"]) for a in acks} == {0, 1}, "every friend on one worker"
            got: dict[str, Any] = await watcher.request("presence_query", user_ids=[f.user_id for f in friends])
            assert {p["status"] for p in got["presence"]} == {"online"}
            await until(lambda: assigned_agent(customer) == agent.user_id)

            await asyncio.gather(*(f.close() for f in friends))
            await until(lambda: all(seen(watcher).get(f.user_id) == "offline" for f in friends), timeout=20)
            got = await watcher.request("presence_query", user_ids=[f.user_id for f in friends])
            assert {p["status"] for p in got["presence"]} == {"offline"}
            assert all(p["last_seen"] for p in got["presence"])
            for d in (watcher, owner, customer):
                await d.close()
    finally:
        await asyncio.to_thread(node.stop)
