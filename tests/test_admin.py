"""Server administration on both stores: the admin role, every admin_* op over HTTP and the
WebSocket, what disabling an account does to its live connections, logins and old tokens,
password resets and changes, the append-only audit log, and the self-service changes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.rawclient import Device, ProtocolError, login, make_users, until
from tests.sdk_helpers import raw_close_code, raw_ws
from yim.client import ApiError, Client, HttpApi, SessionEnded
from yim.node import NodeServer
from yim.protocol.close import CLOSE_DISABLED, CLOSE_REVOKED
from yim.storage.admin import AuditEntry

PASSWORD = "password123"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(http: aiohttp.ClientSession, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, path, headers=bearer(token), json=body) as r:
        return r.status, (await r.json() if r.status != 204 else None)


async def make_admin(server: NodeServer, user_id: str) -> None:
    """The first admin, as `yim admin create-admin` makes it: on the store, no actor."""
    await server.node.store.admin.set_admin(None, int(user_id), True, AuditEntry(at=1, source="cli", action="set_role"))


async def test_admin_operations(server: NodeServer, backend: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l, bob_l = await make_users(http, ["root", "alice", "bob"])
        await make_admin(server, root_l["user_id"])
        root = root_l["token"]
        alice_id = alice_l["user_id"]

        # alice has a chat with bob, a group, a second device
        alice = Device(http, alice_l)
        await alice.connect()
        sent = await alice.request("send", to=bob_l["user_id"], kind="text", body={"text": "hi"}, client_msg_id="1")
        group = await alice.request("group_create", name="team", members=[bob_l["user_id"]])
        await login(http, "alice", "phone", "ios")

        # list and search: by part of a name, by id, paged
        status, page = await call(http, "GET", "/api/v1/admin/users?q=LIC", root)
        assert status == 200 and [u["username"] for u in page["users"]] == ["alice"], page
        status, page = await call(http, "GET", f"/api/v1/admin/users?q={alice_id}", root)
        assert [u["user_id"] for u in page["users"]] == [alice_id]
        status, page = await call(http, "GET", "/api/v1/admin/users?limit=2", root)
        assert len(page["users"]) == 2 and page["next_after"] == page["users"][1]["user_id"]
        status, rest = await call(http, "GET", f"/api/v1/admin/users?limit=2&after={page['next_after']}", root)
        assert len(rest["users"]) == 1 and rest["next_after"] is None
        names = {u["username"]: u for u in page["users"] + rest["users"]}
        assert names["root"]["admin"] and not names["alice"]["admin"]

        # show one: devices with last seen, groups, counts, messages, disabled state
        status, shown = await call(http, "GET", f"/api/v1/admin/users/{alice_id}", root)
        assert status == 200, shown
        assert {d["device_id"] for d in shown["devices"]} == {"d1", "phone"}
        assert all(d["last_seen_at"] > 0 for d in shown["devices"])
        assert shown["groups"] == [{"conv_id": group["group"]["conv_id"], "name": "team", "role": "owner"}]
        assert shown["message_count"] == 1 and shown["user"]["disabled_at"] is None
        assert shown["counts"]["friends"] == 0
        status, err = await call(http, "GET", "/api/v1/admin/users/12345", root)
        assert (status, err["code"]) == (404, "not_found")

        # disable: the live connection closes with 4007, the old token fails, logins are refused
        ws = await raw_ws(http, alice_l["token"])
        status, out = await call(http, "POST", f"/api/v1/admin/users/{alice_id}/disable", root, {"reason": "spam"})
        assert status == 200 and out["disabled_at"] is not None
        assert await raw_close_code(ws) == CLOSE_DISABLED
        await asyncio.wait_for(alice.closed.wait(), 5)
        r = await http.post(
            "/api/v1/messages",
            headers=bearer(alice_l["token"]),
            json={"to": bob_l["user_id"], "kind": "text", "body": {"text": "x"}, "client_msg_id": "2"},
        )
        assert r.status == 401
        r = await http.post(
            "/api/v1/sessions",
            json={"username": "alice", "password": PASSWORD, "device_id": "d9", "platform": "web"},
        )
        assert (r.status, (await r.json())["code"]) == (403, "account_disabled")
        # her messages stay
        bob = Device(http, bob_l)
        await bob.connect()
        assert [m["body"] for m in await bob.pull(sent["conv_id"], 0)] == [{"text": "hi"}]
        status, shown = await call(http, "GET", f"/api/v1/admin/users/{alice_id}", root)
        assert shown["devices"] == [] and shown["user"]["disabled_at"] is not None
        # an admin cannot disable themself
        status, err = await call(http, "POST", f"/api/v1/admin/users/{root_l['user_id']}/disable", root)
        assert (status, err["code"]) == (400, "bad_request")

        # enable: she can log in again
        status, out = await call(http, "POST", f"/api/v1/admin/users/{alice_id}/enable", root)
        assert status == 200 and out["disabled_at"] is None
        alice2 = await login(http, "alice", "d1")

        # reset the password: every session ends (4003), the new password works, the old not
        ws = await raw_ws(http, alice2["token"])
        status, out = await call(
            http, "POST", f"/api/v1/admin/users/{alice_id}/password", root, {"password": "new-secret-1"}
        )
        assert (status, out) == (200, {"revoked": 1})
        assert await raw_close_code(ws) == CLOSE_REVOKED
        r = await http.post(
            "/api/v1/sessions", json={"username": "alice", "password": PASSWORD, "device_id": "d1", "platform": "web"}
        )
        assert r.status == 401
        for device in ("d1", "d2"):
            r = await http.post(
                "/api/v1/sessions",
                json={"username": "alice", "password": "new-secret-1", "device_id": device, "platform": "web"},
            )
            assert r.status == 201
        # revoke one device, then all (over the WebSocket this time)
        status, out = await call(http, "DELETE", f"/api/v1/admin/users/{alice_id}/devices/d1", root)
        assert (status, out) == (200, {"revoked": 1})
        rooted = Device(http, root_l)
        await rooted.connect()
        assert await rooted.request("admin_revoke", user_id=alice_id) == {"revoked": 1}
        # grant and take back the role
        assert (await rooted.request("admin_set_role", user_id=bob_l["user_id"], admin=True))["admin"] is True
        status, page = await call(http, "GET", "/api/v1/admin/users?q=alice", bob_l["token"])
        assert status == 200
        assert (await rooted.request("admin_set_role", user_id=bob_l["user_id"], admin=False))["admin"] is False
        status, err = await call(http, "GET", "/api/v1/admin/users?q=alice", bob_l["token"])
        assert (status, err["code"]) == (403, "forbidden")

        # the audit log: each action, newest first, who, what, target, when, from where
        status, log = await call(http, "GET", "/api/v1/admin/audit?limit=5", root)
        assert status == 200
        entries = log["entries"]
        assert [e["action"] for e in entries] == ["set_role", "set_role", "revoke", "revoke", "reset_password"]
        assert entries[0]["detail"] == {"admin": False} and entries[0]["target"] == f"user:{bob_l['user_id']}"
        assert entries[2]["source"].startswith("ws ") and entries[3]["source"].startswith("http ")
        assert entries[3]["detail"] == {"device_id": "d1"}
        assert all(e["actor_id"] == root_l["user_id"] for e in entries)
        status, older = await call(http, "GET", f"/api/v1/admin/audit?before={log['next_before']}", root)
        assert [e["action"] for e in older["entries"]] == ["enable", "disable", "set_role"]
        assert older["entries"][1]["detail"] == {"reason": "spam"} and older["next_before"] is None
        assert older["entries"][2]["actor_id"] is None and older["entries"][2]["source"] == "cli"
        # refused actions leave no row (the self-disable above)
        assert sum(e["action"] == "disable" for e in entries + older["entries"]) == 1
        for d in (bob, rooted):
            await d.close()


async def test_the_audit_log_cannot_be_edited(server: NodeServer, backend: str, store_url: str) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l = await make_users(http, ["root", "alice"])
        await make_admin(server, root_l["user_id"])
        await call(http, "POST", f"/api/v1/admin/users/{alice_l['user_id']}/disable", root_l["token"])
        # no route writes it: every other method is refused
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            status, err = await call(http, method, "/api/v1/admin/audit", root_l["token"], {})
            assert (status, err["code"]) == (405, "method_not_allowed"), method
        # and the store itself refuses to change a row, whoever asks
        if backend == "sqlite":
            conn = sqlite3.connect(Path(server.settings.data_dir) / "yim.db")
            try:
                for sql in ("UPDATE audit_log SET action='nothing'", "DELETE FROM audit_log"):
                    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                        conn.execute(sql)
            finally:
                conn.close()
        else:
            conn2 = await asyncpg.connect(store_url)
            try:
                for sql in ("UPDATE audit_log SET action='nothing'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
                    with pytest.raises(asyncpg.RaiseError, match="append-only"):
                        await conn2.execute(sql)
            finally:
                await conn2.close()
        status, log = await call(http, "GET", "/api/v1/admin/audit", root_l["token"])
        assert [e["action"] for e in log["entries"]] == ["disable", "set_role"]


async def test_self_service_password_and_display_name(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        (alice_l,) = await make_users(http, ["alice"])
        other = await login(http, "alice", "phone")
        ws_other = await raw_ws(http, other["token"])
        me = Device(http, alice_l)
        await me.connect()
        with pytest.raises(ProtocolError) as err:
            await me.request("password_change", old_password="not-it", new_password="brand-new-pw")
        assert err.value.code == "wrong_password"
        status, err2 = await call(
            http, "PUT", "/api/v1/me/password", alice_l["token"], {"old_password": PASSWORD, "new_password": "short"}
        )
        assert (status, err2["code"]) == (400, "bad_request")
        out = await me.request("password_change", old_password=PASSWORD, new_password="brand-new-pw")
        assert out == {"revoked": 1}
        assert await raw_close_code(ws_other) == CLOSE_REVOKED  # the other sessions end
        assert (await me.request("ping"))["time"] > 0  # this one goes on
        r = await http.post(
            "/api/v1/sessions", json={"username": "alice", "password": PASSWORD, "device_id": "x", "platform": "web"}
        )
        assert r.status == 401
        await login_with(http, "alice", "brand-new-pw")

        status, out2 = await call(http, "PATCH", "/api/v1/me", alice_l["token"], {"display_name": "Alice Liddell"})
        assert status == 200 and out2["display_name"] == "Alice Liddell"
        status, mine = await call(http, "GET", "/api/v1/me", alice_l["token"])
        assert mine["display_name"] == "Alice Liddell"
        assert (await me.request("profile_set", display_name="  "))["display_name"] == "alice"
        status, err3 = await call(http, "PATCH", "/api/v1/me", alice_l["token"], {"display_name": "x" * 65})
        assert (status, err3["code"]) == (400, "bad_request")
        await me.close()


async def login_with(http: aiohttp.ClientSession, name: str, password: str) -> None:
    r = await http.post(
        "/api/v1/sessions", json={"username": name, "password": password, "device_id": "y", "platform": "web"}
    )
    assert r.status == 201, await r.text()


async def test_the_sdk_speaks_the_admin_api(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l = await make_users(http, ["root", "alice"])
    await make_admin(server, root_l["user_id"])
    async with HttpApi(server.url, root_l["token"]) as admin, Client(server.url, alice_l["token"]) as alice:
        await alice.wait_synced()
        assert [u.username for u in (await admin.admin_users("ALI")).users] == ["alice"]
        detail = await admin.admin_user(alice_l["user_id"])
        assert [d.device_id for d in detail.devices] == ["d1"] and detail.message_count == 0
        disabled = await admin.admin_disable(alice_l["user_id"], reason="test")
        assert disabled.disabled_at is not None
        ended = await alice.wait_ended()  # a fatal close: the SDK does not reconnect
        assert isinstance(ended, SessionEnded) and ended.close_code == CLOSE_DISABLED
        assert (await admin.admin_enable(alice_l["user_id"])).disabled_at is None
        assert await admin.admin_reset_password(alice_l["user_id"], "reset-by-root") == 0
        assert (await admin.admin_set_role(alice_l["user_id"], True)).admin is True
        assert await admin.admin_revoke(alice_l["user_id"]) == 0
        page = await admin.admin_audit(limit=2)
        assert [e.action for e in page.entries] == ["revoke", "set_role"] and page.next_before
        async with HttpApi(server.url, alice_l["token"]) as gone:  # her token died with the disable
            with pytest.raises(ApiError):
                await gone.me()
        made = await admin.request(
            "POST", "/api/v1/groups", body={"name": "sdk group", "members": [alice_l["user_id"]]}
        )
        gid = made["group"]["conv_id"]
        assert [g.conv_id for g in (await admin.admin_groups("SDK")).groups] == [gid]
        moved = await admin.admin_group_transfer(gid, alice_l["user_id"])
        assert moved.group.owner_id == alice_l["user_id"]
        assert (await admin.admin_group_dissolve(gid)).group.dissolved
        shop = await admin.admin_shop_create(alice_l["user_id"], "Alice Ltd")
        assert shop.owner_id == alice_l["user_id"]
        agent = await admin.admin_shop_agent_set(shop.shop_id, root_l["user_id"], skills=["after_sale"], capacity=1)
        assert (agent.skills, agent.capacity) == (["after_sale"], 1)
    async with HttpApi(server.url) as api:
        await api.login("alice", "reset-by-root", "d2", "web")
        with pytest.raises(ApiError) as err:
            await api.change_password("wrong", "another-one-1")
        assert err.value.code == "wrong_password"
        assert await api.change_password("reset-by-root", "another-one-1") == 0
        assert (await api.set_display_name("Alice")).display_name == "Alice"


async def test_admin_group_operations(server: NodeServer, backend: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, owner_l, member_l, other_l = await make_users(http, ["root", "owner", "member", "other"])
        await make_admin(server, root_l["user_id"])
        root = root_l["token"]
        owner, member = Device(http, owner_l), Device(http, member_l)
        for d in (owner, member):
            await d.connect()
        made = await owner.request("group_create", name="Book Club", members=[member_l["user_id"]])
        gid = made["group"]["conv_id"]
        other_gid = (await owner.request("group_create", name="chess"))["group"]["conv_id"]

        # list, search, show
        status, page = await call(http, "GET", "/api/v1/admin/groups?q=book", root)
        assert status == 200 and [g["conv_id"] for g in page["groups"]] == [gid], page
        status, page = await call(http, "GET", "/api/v1/admin/groups?limit=1", root)
        assert [g["conv_id"] for g in page["groups"]] == [gid] and page["next_after"] == gid
        status, page = await call(http, "GET", f"/api/v1/admin/groups?after={gid}", root)
        assert [g["conv_id"] for g in page["groups"]] == [other_gid] and page["next_after"] is None
        status, shown = await call(http, "GET", f"/api/v1/admin/groups/{gid}", root)
        assert status == 200 and shown["owner_id"] == owner_l["user_id"] and shown["member_count"] == 2

        # transfer ownership to a member (the old owner stays as a group admin); not to a stranger
        status, err = await call(
            http, "PUT", f"/api/v1/admin/groups/{gid}/owner", root, {"user_id": other_l["user_id"]}
        )
        assert (status, err["code"]) == (404, "not_found")
        status, out = await call(
            http, "PUT", f"/api/v1/admin/groups/{gid}/owner", root, {"user_id": member_l["user_id"], "reason": "left"}
        )
        assert status == 200 and out["group"]["owner_id"] == member_l["user_id"], out
        roles = {m["user_id"]: m["role"] for m in (await member.request("group_members", conv_id=gid))["members"]}
        assert roles == {member_l["user_id"]: "owner", owner_l["user_id"]: "admin"}
        entries = await owner.pull(gid, 0)
        assert entries[-1]["kind"] == "system" and entries[-1]["body"]["event"] == "owner"
        assert entries[-1]["body"]["actor"] == root_l["user_id"]  # the entry says who did it

        # dissolve: the members are told, the group is gone for them
        status, out = await call(http, "DELETE", f"/api/v1/admin/groups/{gid}", root, {"reason": "spam ring"})
        assert status == 200 and out["group"]["dissolved"] is True
        await until(lambda: any(e["data"].get("body", {}).get("event") == "dissolved" for e in member.events))
        with pytest.raises(ProtocolError) as exc:
            await member.request("send", conv_id=gid, kind="text", body={"text": "x"}, client_msg_id="late")
        assert exc.value.code in ("group_dissolved", "not_member")
        status, err = await call(http, "DELETE", f"/api/v1/admin/groups/{gid}", root)
        assert (status, err["code"]) == (410, "group_dissolved")
        status, shown = await call(http, "GET", f"/api/v1/admin/groups/{gid}", root)
        assert status == 200 and shown["dissolved"] is True

        status, log = await call(http, "GET", "/api/v1/admin/audit?limit=2", root)
        assert [(e["action"], e["target"], e["detail"]) for e in log["entries"]] == [
            ("group_dissolve", f"group:{gid}", {"reason": "spam ring"}),
            ("group_transfer", f"group:{gid}", {"user_id": member_l["user_id"], "reason": "left"}),
        ]
        for d in (owner, member):
            await d.close()


async def test_admin_shop_operations(server: NodeServer, backend: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, corp_l, agent_l, customer_l = await make_users(http, ["root", "corp", "agent", "customer"])
        await make_admin(server, root_l["user_id"])
        root = root_l["token"]
        agent, customer, corp = Device(http, agent_l), Device(http, customer_l), Device(http, corp_l)
        for d in (agent, customer, corp):
            await d.connect()

        status, shop = await call(
            http, "POST", "/api/v1/admin/shops", root, {"owner_id": corp_l["user_id"], "name": "Corp Support"}
        )
        assert status == 201 and shop["owner_id"] == corp_l["user_id"], shop
        shop_id = shop["shop_id"]
        assert [s["shop_id"] for s in (await corp.request("shops"))["shops"]] == [shop_id]  # the owner's shop
        status, err = await call(http, "POST", "/api/v1/admin/shops", root, {"owner_id": "12345", "name": "x"})
        assert (status, err["code"]) == (404, "not_found")

        path = f"/api/v1/admin/shops/{shop_id}/agents/{agent_l['user_id']}"
        status, out = await call(http, "PUT", path, root, {"skills": ["pre_sale"], "capacity": 3})
        assert status == 200 and (out["role"], out["skills"], out["capacity"]) == ("agent", ["pre_sale"], 3), out
        status, err = await call(http, "PUT", f"/api/v1/admin/shops/12345/agents/{agent_l['user_id']}", root, {})
        assert (status, err["code"]) == (404, "not_found")
        # the agent serves: a customer's message to the shop is routed to them
        await customer.request(
            "send", shop_id=shop_id, category="pre_sale", kind="text", body={"text": "hello?"}, client_msg_id="c1"
        )
        session = await customer.request("service_status", shop_id=shop_id)
        assert (session["status"], session["agent_id"]) == ("active", agent_l["user_id"]), session
        # and the shop's owner sees the agent as the admin set it
        agents = {a["user_id"]: a for a in (await corp.request("shop_agents", shop_id=shop_id))["agents"]}
        assert agents[agent_l["user_id"]]["skills"] == ["pre_sale"]

        status, log = await call(http, "GET", "/api/v1/admin/audit?limit=2", root)
        assert [(e["action"], e["target"]) for e in log["entries"]] == [
            ("shop_agent_set", f"shop:{shop_id}"),
            ("shop_create", f"shop:{shop_id}"),
        ]
        assert log["entries"][0]["detail"] == {
            "user_id": agent_l["user_id"],
            "role": "agent",
            "skills": ["pre_sale"],
            "capacity": 3,
        }
        for d in (agent, customer, corp):
            await d.close()
