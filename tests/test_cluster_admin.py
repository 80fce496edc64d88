"""Cluster mode: disabling an account on one node ends it on every node — its live
connections close with 4007 wherever they are, every node's cached sessions of it stop
working at once, and no node lets it log in again."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.test_cluster import three_nodes  # noqa: F401  (the fixture: three nodes, PostgreSQL + Redis)
from yim.node import NodeServer
from yim.protocol.close import CLOSE_DISABLED
from yim.storage.admin import AuditEntry

from .rawclient import Device, login, make_users


async def test_disabling_closes_the_accounts_connections_on_every_node(three_nodes: list[NodeServer]) -> None:  # noqa: F811
    n0, n1, n2 = three_nodes
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        root_l, alice_l = await make_users(h0, ["root", "alice"])
        await n0.node.store.admin.set_admin(None, int(root_l["user_id"]), True, AuditEntry(at=1, source="cli"))
        logins = [alice_l, await login(h1, "alice", "browser", "web"), await login(h2, "alice", "phone", "ios")]
        devices = [Device(h, x) for h, x in zip((h0, h1, h2), logins, strict=True)]
        for d in devices:
            await d.connect()
        # every node caches every one of her sessions (an HTTP call of each token on each node)
        for h in (h0, h1, h2):
            for x in logins:
                r = await h.get("/api/v1/me", headers={"Authorization": f"Bearer {x['token']}"})
                assert r.status == 200

        r = await h1.post(
            f"/api/v1/admin/users/{alice_l['user_id']}/disable",
            headers={"Authorization": f"Bearer {root_l['token']}"},
            json={"reason": "abuse"},
        )
        assert r.status == 200, await r.text()
        for d in devices:
            await asyncio.wait_for(d.closed.wait(), 10)
            assert d.ws is not None and d.ws.close_code == CLOSE_DISABLED
        for h in (h0, h1, h2):
            for x in logins:
                r = await h.get("/api/v1/me", headers={"Authorization": f"Bearer {x['token']}"})
                assert r.status == 401, (h, x["device_id"])
            r = await h.post(
                "/api/v1/sessions",
                json={"username": "alice", "password": "password123", "device_id": "new", "platform": "web"},
            )
            assert (r.status, (await r.json())["code"]) == (403, "account_disabled")
