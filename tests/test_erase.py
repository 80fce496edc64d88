"""Erasing accounts on both stores: an admin's erasure (with each ``erase_messages``
setting) leaves the others' histories, seqs and unread counts consistent and the erased user
unfindable; a user's own deletion runs after its grace period, exactly once even with two
nodes sweeping, unless a login cancels it first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.rawclient import Device, ProtocolError, make_users
from tests.test_admin import bearer, call, make_admin
from tests.test_admin_cli import yim
from tests.test_cluster import _start_nodes
from tests.test_media import uploaded
from yim.client import HttpApi
from yim.protocol.close import CLOSE_DISABLED
from yim.services.erase import sweep_once
from yim.storage.blobs import LocalBlobs

from .conftest import MakeServer
from .services import RedisServer

PASSWORD = "password123"


async def _login(http: aiohttp.ClientSession, name: str, password: str = PASSWORD) -> tuple[int, Any]:
    r = await http.post(
        "/api/v1/sessions", json={"username": name, "password": password, "device_id": "later", "platform": "web"}
    )
    return r.status, await r.json()


async def _unread(dev: Device) -> tuple[dict[str, int], int]:
    page = await dev.request("conversations", limit=100)
    return {c["conv_id"]: c["unread"] for c in page["conversations"]}, page["total_unread"]


@pytest.mark.parametrize("mode", ["tombstone", "remove"])
async def test_admin_erase(make_server: MakeServer, mode: str) -> None:
    server = await make_server(erase_messages=mode)
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, alice_l, bob_l, carol_l = await make_users(http, ["root", "alice", "bob", "carol"])
        await make_admin(server, root_l["user_id"])
        alice_id, bob_id, carol_id = alice_l["user_id"], bob_l["user_id"], carol_l["user_id"]
        alice, bob, carol = Device(http, alice_l), Device(http, bob_l), Device(http, carol_l)
        for d in (alice, bob, carol):
            await d.connect()

        # a chat with bob: bob 1, alice 2 and 3 (bob has not read them), a file only she has
        await bob.request("send", to=alice_id, kind="text", body={"text": "hi"}, client_msg_id="b1")
        own = await uploaded(http, alice_l, b"only alice's bytes " * 50, name="own.bin")
        shared_bytes = b"bytes bob has too " * 50
        mine = await uploaded(http, alice_l, shared_bytes, name="a.bin")
        bobs = await uploaded(http, bob_l, shared_bytes, name="b.bin")
        dm = await alice.request("send", to=bob_id, kind="text", body={"text": "my secret plan"}, client_msg_id="a1")
        await alice.request("send", to=bob_id, kind="file", body={"media_id": own["media_id"]}, client_msg_id="a2")
        await alice.request("send", to=bob_id, kind="file", body={"media_id": mine["media_id"]}, client_msg_id="a3")
        dm_conv = dm["conv_id"]
        # friends; a group she owns with bob and carol; one she is alone in
        req = await alice.request("friend_request", to=bob_id)
        await bob.request("friend_accept", request_id=req["request_id"])
        team = (await alice.request("group_create", name="team", members=[bob_id, carol_id]))["group"]["conv_id"]
        said = await alice.request(
            "send", conv_id=team, kind="text", body={"text": "secret agenda"}, client_msg_id="g1", mentions=[bob_id]
        )
        await carol.request(
            "send", conv_id=team, kind="text", body={"text": "ok"}, client_msg_id="c1", reply_to=said["seq"]
        )
        solo = (await alice.request("group_create", name="solo", members=[]))["group"]["conv_id"]
        # her reactions: to bob's message, to carol's reply
        await alice.request("react", conv_id=dm_conv, seq=1, emoji="👍")
        await alice.request("react", conv_id=team, seq=said["seq"] + 1, emoji="🎉")
        # an agent of bob's shop
        shop = (await bob.request("shop_create", name="Bob's shop"))["shop_id"]
        await bob.request("shop_agent_set", shop_id=shop, user_id=alice_id)
        before = await bob.pull(dm_conv, 0)
        team_before = await carol.pull(team, 0)
        assert len((await bob.request("search", q="secret"))["hits"]) == 2
        assert next(c for c in (await bob.request("conversations"))["conversations"] if c["conv_id"] == team)[
            "mentioned"
        ]

        # not for anyone but a server admin
        status, err = await call(http, "POST", f"/api/v1/admin/users/{alice_id}/erase", bob_l["token"])
        assert (status, err["code"]) == (403, "forbidden")

        status, out = await call(
            http, "POST", f"/api/v1/admin/users/{alice_id}/erase", root_l["token"], {"reason": "GDPR request 7"}
        )
        assert status == 200, out
        assert out == {"user_id": alice_id, "entries": 4, "groups": 2, "blobs": 1}
        await asyncio.wait_for(alice.closed.wait(), 10)
        assert alice.ws is not None and alice.ws.close_code == CLOSE_DISABLED

        # she cannot log in, nor be found; her name stays taken
        assert (await _login(http, "alice"))[0] == 401
        assert (await bob.request("users", user_ids=[alice_id]))["users"] == []
        r = await http.get("/api/v1/users", params={"username": "alice"}, headers=bearer(bob_l["token"]))
        assert r.status == 404
        status, page = await call(http, "GET", "/api/v1/admin/users?q=alice", root_l["token"])
        assert page["users"] == []
        r = await http.post("/api/v1/accounts", json={"username": "alice", "password": PASSWORD})
        assert r.status == 409
        status, err = await call(http, "POST", f"/api/v1/admin/users/{alice_id}/erase", root_l["token"])
        assert (status, err["code"]) == (404, "not_found")

        # bob's history: the same seqs, hers cleared; nothing of hers to count or to find
        after = await bob.pull(dm_conv, 0)
        assert [m["seq"] for m in after] == [m["seq"] for m in before] == [1, 2, 3, 4]
        assert after[0] == {k: v for k, v in before[0].items() if k != "reactions"}  # bob's own, her 👍 gone
        for m in after[1:]:
            assert m["body"] == {} and m["recalled"] is True and m["sender_id"] == alice_id
            assert m["kind"] == ("removed" if mode == "remove" else before[m["seq"] - 1]["kind"])
        unread, total = await _unread(bob)
        assert unread[dm_conv] == 0 and total == sum(unread.values())
        assert (await bob.request("search", q="secret"))["hits"] == []
        assert (await bob.request("friends"))["friends"] == []

        # the group: handed on, she left; her message cleared, carol's reply quotes it as recalled
        info = await bob.request("group_info", conv_id=team)
        assert info["owner_id"] in (bob_id, carol_id) and info["member_count"] == 2
        members = await bob.request("group_members", conv_id=team)
        assert alice_id not in {m["user_id"] for m in members["members"]}
        team_after = await carol.pull(team, 0)
        assert [m["seq"] for m in team_after[: len(team_before)]] == [m["seq"] for m in team_before]
        events = [m["body"].get("event") for m in team_after if m["kind"] == "system"]
        assert events[-2:] == ["owner", "left"]
        by_seq = {m["seq"]: m for m in team_after}
        assert by_seq[said["seq"]]["body"] == {} and by_seq[said["seq"]]["recalled"]
        reply = next(m for m in team_after if m["sender_id"] == carol_id)
        assert reply["body"]["quote"]["recalled"] is True and "excerpt" not in reply["body"]["quote"]
        unread, total = await _unread(bob)
        assert total == sum(unread.values())
        assert not next(c for c in (await bob.request("conversations"))["conversations"] if c["conv_id"] == team)[
            "mentioned"
        ]
        # her reactions are taken back (and bob was told, as for any reaction change)
        for conv in (dm_conv, team):
            page = await bob.request("reactions", conv_id=conv, after_ver=0)
            assert all(m["reactions"] == [] for m in page["messages"]), page
        assert any(e["type"] == "reaction" and e["data"]["conv_id"] == dm_conv for e in bob.events)
        # she no longer serves bob's shop
        agents = (await bob.request("shop_agents", shop_id=shop))["agents"]
        assert [a["user_id"] for a in agents] == [bob_id]
        # the group she was alone in is dissolved
        status, g = await call(http, "GET", f"/api/v1/admin/groups/{solo}", root_l["token"])
        assert g["dissolved"] is True

        # her own file's bytes are gone; the bytes bob uploaded too stay his
        blobs = server.node.media.blobs
        assert isinstance(blobs, LocalBlobs)
        r = await http.get(f"/api/v1/media/{own['media_id']}", headers=bearer(bob_l["token"]))
        assert r.status == 404
        assert not blobs.path(own["sha256"]).exists() and blobs.path(bobs["sha256"]).exists()
        r = await http.get(f"/api/v1/media/{bobs['media_id']}", headers=bearer(bob_l["token"]))
        assert r.status == 200 and await r.read() == shared_bytes

        # the audit log has it
        status, audit = await call(http, "GET", "/api/v1/admin/audit?limit=1", root_l["token"])
        entry = audit["entries"][0]
        assert (entry["action"], entry["target"], entry["actor_id"]) == ("erase", f"user:{alice_id}", root_l["user_id"])
        assert entry["detail"] == {"mode": mode, "reason": "GDPR request 7"}


async def test_delete_my_account(make_server: MakeServer) -> None:
    server = await make_server(delete_grace_s=3600.0, erase_sweep_s=0.1)
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        alice_l, bob_l = await make_users(http, ["alice", "bob"])
        alice, bob = Device(http, alice_l), Device(http, bob_l)
        await alice.connect()
        await bob.connect()
        await alice.request("send", to=bob_l["user_id"], kind="text", body={"text": "bye"}, client_msg_id="1")

        with pytest.raises(ProtocolError) as e:
            await alice.request("account_delete", password="not it")
        assert e.value.code == "wrong_password"
        assert (await alice.request("account_deletion"))["due_at"] is None

        # asked, then cancelled by a login within the grace period
        status, out = await call(http, "POST", "/api/v1/me/deletion", alice_l["token"], {"password": PASSWORD})
        assert status == 202 and out["due_at"] is not None
        assert (await alice.request("account_deletion"))["due_at"] == out["due_at"]
        status, again = await _login(http, "alice")
        assert status == 201 and again["deletion_cancelled"] is True
        assert (await alice.request("account_deletion"))["due_at"] is None
        status, again = await _login(http, "alice")
        assert again["deletion_cancelled"] is False

        # asked again and left alone: it runs once the grace period is over (a shorter one
        # now, rather than a wait that a busy machine could outlast before the login above)
        server.node.settings.delete_grace_s = 0.5
        await alice.request("account_delete", password=PASSWORD)
        await asyncio.wait_for(alice.closed.wait(), 15)
        assert alice.ws is not None and alice.ws.close_code == CLOSE_DISABLED
        assert (await _login(http, "alice"))[0] == 401
        assert (await bob.request("users", user_ids=[alice_l["user_id"]]))["users"] == []
        conv = (await bob.request("conversations"))["conversations"][0]["conv_id"]
        # the account ends first; its messages are cleared just after (bounded wait)
        async with asyncio.timeout(10):
            while (await bob.pull(conv, 0))[0]["body"]:
                await asyncio.sleep(0.05)
        msgs = await bob.pull(conv, 0)
        assert [(m["seq"], m["body"], m.get("recalled")) for m in msgs] == [(1, {}, True)]
        rows = await server.node.store.admin.audit(None, None, 100)
        assert [(r.action, r.target, r.actor_id, r.source) for r in rows] == [
            ("delete", f"user:{alice_l['user_id']}", int(alice_l["user_id"]), "scheduled")
        ]


@pytest.mark.backends("postgres")
async def test_deletions_run_once_across_nodes(tmp_path: Path, postgres_dsn: str, redis_server: RedisServer) -> None:
    nodes = await _start_nodes(tmp_path, postgres_dsn, redis_server.url, delete_grace_s=0.0, erase_sweep_s=3600.0)
    n0, n1 = nodes[0], nodes[1]
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession(n0.url) as http:
            names = [f"user{i}" for i in range(6)]
            logins = await make_users(http, names)
            for x in logins:
                status, _ = await call(http, "POST", "/api/v1/me/deletion", x["token"], {"password": PASSWORD})
                assert status == 202
            # every node sweeps at once, twice over: each deletion is claimed by one of them
            done = await asyncio.gather(*(sweep_once(n.node) for n in nodes for _ in range(2)))
            assert sum(done) == len(names)
            assert await sweep_once(n1.node) == 0
            rows = await n0.node.store.admin.audit(None, None, 100)
            assert sorted(r.target for r in rows if r.action == "delete") == sorted(
                f"user:{x['user_id']}" for x in logins
            )
            for name in names:
                assert (await _login(http, name))[0] == 401

            # a node that died half-way leaves its claim 'running': once stale, another node
            # finishes it, without a second audit row
            first = int(logins[0]["user_id"])
            conn = await asyncpg.connect(postgres_dsn)
            try:
                await conn.execute(
                    "UPDATE account_erasures SET state='running', claimed_at=1, done_at=NULL WHERE user_id=$1", first
                )
                assert await sweep_once(n1.node) == 1
                assert await conn.fetchval("SELECT state FROM account_erasures WHERE user_id=$1", first) == "done"
            finally:
                await conn.close()
            rows = await n0.node.store.admin.audit(None, None, 100)
            assert len([r for r in rows if r.action == "delete"]) == len(names)
    finally:
        for n in nodes:
            await n.stop()


@pytest.mark.backends("sqlite")
async def test_erase_command(make_server: MakeServer, tmp_path: Path) -> None:
    server = await make_server()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    async with aiohttp.ClientSession(server.url) as http:
        root_l, carol_l, dave_l = await make_users(http, ["root", "carol", "dave"])
        await make_admin(server, root_l["user_id"])
        # the SDK's methods
        async with HttpApi(server.url, dave_l["token"]) as dave:
            due = await dave.delete_account(PASSWORD)
            assert await dave.account_deletion() == due
            assert (await dave.login("dave", PASSWORD, "d2")).deletion_cancelled
            assert await dave.account_deletion() is None
        async with HttpApi(server.url, root_l["token"]) as admin:
            erased = await admin.admin_erase(dave_l["user_id"], reason="sdk")
            assert (erased.user_id, erased.groups) == (dave_l["user_id"], 0)
        login = ["--server", server.url, "--user", "root", "--password-file", str(pw), "--state", str(tmp_path / "s")]
        done = await yim("admin", "erase", "carol", *login)
        assert done.returncode == 2 and "--yes" in done.stderr, done  # no erasure without the confirmation
        assert (await _login(http, "carol"))[0] == 201
        done = await yim("admin", "erase", "carol", "--reason", "asked by mail", "--yes", *login)
        assert done.returncode == 0 and f"erased {carol_l['user_id']}" in done.stdout, done
        assert (await _login(http, "carol"))[0] == 401


async def test_erased_owners_shops(make_server: MakeServer) -> None:
    """A shop with another admin agent goes to the one added first; a shop with none is
    closed: its sessions end, its agents go, and its customers are told ``shop_closed``."""
    server = await make_server()
    async with asyncio.timeout(60), aiohttp.ClientSession(server.url) as http:
        root_l, olga_l, amy_l, adam_l, pete_l, cara_l = await make_users(
            http, ["root", "olga", "amy", "adam", "pete", "cara"]
        )
        await make_admin(server, root_l["user_id"])
        olga, amy, pete, cara = (Device(http, x) for x in (olga_l, amy_l, pete_l, cara_l))
        for d in (olga, amy, pete, cara):
            await d.connect()
        kept = (await olga.request("shop_create", name="Kept shop"))["shop_id"]
        await olga.request("shop_agent_set", shop_id=kept, user_id=amy_l["user_id"], role="admin")
        added = time.time()
        while time.time() - added < 0.005:  # a later millisecond: amy is the admin added first
            await asyncio.sleep(0.001)
        await olga.request("shop_agent_set", shop_id=kept, user_id=adam_l["user_id"], role="admin")
        await olga.request("shop_agent_set", shop_id=kept, user_id=pete_l["user_id"])
        gone = (await olga.request("shop_create", name="Closed shop"))["shop_id"]
        await olga.request("shop_agent_set", shop_id=gone, user_id=pete_l["user_id"])
        sent = await cara.request("send", shop_id=gone, kind="text", body={"text": "hello?"}, client_msg_id="c1")
        status = await cara.request("service_status", shop_id=gone)
        assert status["status"] == "active" and status["agent_id"] == pete_l["user_id"]

        status, out = await call(http, "POST", f"/api/v1/admin/users/{olga_l['user_id']}/erase", root_l["token"])
        assert status == 200, out

        info = await amy.request("shop_info", shop_id=kept)
        assert info["owner_id"] == amy_l["user_id"]
        agents = {a["user_id"] for a in (await amy.request("shop_agents", shop_id=kept))["agents"]}
        assert agents == {amy_l["user_id"], adam_l["user_id"], pete_l["user_id"]}

        # the closed shop: cara's session ended (and she was told), pete serves it no more
        async with asyncio.timeout(10):
            while not any(e["type"] == "service" and e["data"]["event"] == "closed" for e in cara.events):
                await asyncio.sleep(0.05)
        assert (await cara.request("service_status", shop_id=gone))["status"] == "closed"
        assert [s.id for s in await server.node.store.service.shops_of(int(pete_l["user_id"]))] == [int(kept)]
        for target in ({"shop_id": gone}, {"conv_id": sent["conv_id"]}):
            with pytest.raises(ProtocolError) as e:
                await cara.request("send", kind="text", body={"text": "anyone?"}, client_msg_id="c2", **target)
            assert e.value.code == "shop_closed"
        r = await http.post(
            "/api/v1/messages",
            json={"shop_id": gone, "kind": "text", "body": {"text": "hi"}, "client_msg_id": "c3"},
            headers=bearer(cara_l["token"]),
        )
        assert (r.status, (await r.json())["code"]) == (410, "shop_closed")
        found = (await cara.request("shop_search", q="shop"))["shops"]
        assert gone not in {x["shop_id"] for x in found}
        # the step may run again (a node that died half-way): nothing more changes
        olga_id = int(olga_l["user_id"])
        assert await server.node.store.erase.shops_owned(olga_id) == []
        assert await server.node.store.erase.release_shop(olga_id, int(gone), 1) == (None, [])
        assert await server.node.store.erase.release_shop(olga_id, int(kept), 1) == (int(amy_l["user_id"]), [])
