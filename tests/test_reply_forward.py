"""Replies (quotes), forwards and custom messages over real connections, on both stores:
the quote snapshot and its recall, no leak of what a member could not see, forwarding
with media by id, idempotent per target, refused from a conversation left; custom kinds
delivered, stored, synced and found by their text fallback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, make_users, until
from tests.test_cluster import three_nodes  # noqa: F401 (the cluster fixture)
from tests.test_media import auth, uploaded
from yim.node import NodeServer


async def _devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    devices = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in devices))
    return devices


def _pushed(device: Device, conv_id: str) -> list[dict[str, Any]]:
    got = [e["data"] for e in device.events if e["type"] == "message" and e["data"]["conv_id"] == conv_id]
    got += [n["data"] for n in device.notices if n["type"] == "group_message" and n["data"]["conv_id"] == conv_id]
    return got


async def _pushed_seq(device: Device, conv_id: str, seq: int) -> dict[str, Any]:
    await until(lambda: any(m["seq"] == seq for m in _pushed(device, conv_id)), timeout=20)
    return next(m for m in _pushed(device, conv_id) if m["seq"] == seq)


async def _text(sender: Device, text: str, cid: str, **to: Any) -> dict[str, Any]:
    return await sender.request("send", kind="text", body={"text": text}, client_msg_id=cid, **to)


async def _refused(code: str, coro: Any) -> str:
    with pytest.raises(ProtocolError) as err:
        await coro
    assert err.value.code == code, err.value
    return str(err.value)


async def test_reply_quotes_and_recall_shows_recalled(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        first = await _text(alice, "明天下午三点开会", "a1", to=bob.user_id)
        conv = first["conv_id"]
        reply = await bob.request(
            "send", kind="text", body={"text": "好的"}, client_msg_id="b1", conv_id=conv, reply_to=first["seq"]
        )
        quote = {
            "seq": first["seq"],
            "msg_id": first["msg_id"],
            "sender_id": alice.user_id,
            "kind": "text",
            "excerpt": "明天下午三点开会",
        }
        pushed = await _pushed_seq(alice, conv, reply["seq"])
        assert pushed["body"] == {"text": "好的", "quote": quote}
        history = await alice.pull(conv, 0)
        assert history[1]["body"] == {"text": "好的", "quote": quote}

        # Only the server writes a quote; a reply names its conversation; the quoted seq must exist.
        await _refused(
            "invalid_body",
            bob.request("send", kind="text", body={"text": "x", "quote": quote}, client_msg_id="b2", conv_id=conv),
        )
        await _refused("bad_request", bob.request("send", **_t("x", "b3"), to=alice.user_id, reply_to=first["seq"]))
        await _refused("not_found", bob.request("send", **_t("x", "b4"), conv_id=conv, reply_to=99))

        # A reply to a reply quotes the reply's own text, not its quote.
        second = await alice.request("send", **_t("👍", "a2"), conv_id=conv, reply_to=reply["seq"])
        assert (await alice.pull(conv, 0))[2]["body"]["quote"]["excerpt"] == "好的"

        # The quoted message is recalled: every reply to it shows it recalled, in history and sync.
        await alice.request("recall", conv_id=conv, seq=first["seq"])
        recalled = {k: v for k, v in quote.items() if k != "excerpt"} | {"recalled": True}
        for device in (alice, bob):
            history = await device.pull(conv, 0)
            assert history[1]["body"] == {"text": "好的", "quote": recalled}
            assert history[2]["body"]["quote"]["excerpt"] == "好的"  # a reply to another message is untouched
            events, _groups = await device.sync_all()
            bodies = {e["data"]["seq"]: e["data"]["body"] for e in events if e["type"] == "message"}
            assert bodies[reply["seq"]] == {"text": "好的", "quote": recalled}
            assert "明天下午三点开会" not in json.dumps(events, ensure_ascii=False)
        await _refused("already_recalled", bob.request("send", **_t("?", "b5"), conv_id=conv, reply_to=first["seq"]))
        assert second["seq"] == 3

        # Over HTTP: the same field on POST /api/v1/messages.
        r = await http.post(
            "/api/v1/messages",
            json={**_t("收到", "h1"), "conv_id": conv, "reply_to": second["seq"]},
            headers=auth(bob.login),
        )
        assert r.status == 201, await r.text()
        last = (await bob.pull(conv, 0))[-1]
        assert last["body"]["quote"]["excerpt"] == "👍" and last["body"]["quote"]["kind"] == "text"


def _t(text: str, cid: str) -> dict[str, Any]:
    return {"kind": "text", "body": {"text": text}, "client_msg_id": cid}


async def test_reply_to_a_message_from_before_a_member_joined_leaks_nothing(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        gid = (await alice.request("group_create", name="g", members=[bob.user_id]))["group"]["conv_id"]
        secret = await _text(alice, "the launch code is swordfish", "s", conv_id=gid)
        await alice.request("group_invite", conv_id=gid, user_ids=[carol.user_id])

        # carol cannot quote what she never saw: the same answer as for a seq that does not exist.
        message = await _refused(
            "not_found", carol.request("send", **_t("?", "c1"), conv_id=gid, reply_to=secret["seq"])
        )
        assert "swordfish" not in message
        # Nor forward it.
        await _refused(
            "not_found",
            carol.request(
                "forward", conv_id=gid, seqs=[secret["seq"]], targets=[{"to": alice.user_id, "client_msg_id": "f"}]
            ),
        )

        # bob may reply to it, but carol is a member who cannot see it: the quote is withheld for all.
        reply = await bob.request("send", **_t("ok", "b1"), conv_id=gid, reply_to=secret["seq"])
        got = await _pushed_seq(carol, gid, reply["seq"])
        assert got["body"] == {"text": "ok", "quote": {"seq": secret["seq"], "withheld": True}}
        for page in (await carol.pull(gid, 0), (await carol.sync_all())[0]):
            assert "swordfish" not in json.dumps(page)

        # A message every member can see is quoted in full.
        seen = await _text(alice, "welcome carol", "w", conv_id=gid)
        quoted = await carol.request("send", **_t("thanks", "c2"), conv_id=gid, reply_to=seen["seq"])
        got = await _pushed_seq(bob, gid, quoted["seq"])
        assert got["body"]["quote"]["excerpt"] == "welcome carol"
        assert got["body"]["quote"]["sender_id"] == alice.user_id


async def test_forward_copies_by_normal_sends(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol, dave = await _devices(http, ["alice", "bob", "carol", "dave"])
        hello = await _text(bob, "hello from bob", "b1", to=alice.user_id)
        conv = hello["conv_id"]
        media = await uploaded(http, bob.login, b"%PDF-1.4 forward me" * 50, name="notes.pdf")
        doc = await bob.request(
            "send", kind="file", body={"media_id": media["media_id"]}, client_msg_id="b2", conv_id=conv
        )
        reply = await alice.request("send", **_t("thanks", "a1"), conv_id=conv, reply_to=hello["seq"])
        gid = (await alice.request("group_create", name="g", members=[carol.user_id]))["group"]["conv_id"]
        original = {m["seq"]: m for m in await alice.pull(conv, 0)}

        targets = [{"conv_id": gid, "client_msg_id": "fw-g"}, {"to": dave.user_id, "client_msg_id": "fw-d"}]
        seqs = [hello["seq"], doc["seq"], reply["seq"]]
        out = await alice.request("forward", conv_id=conv, seqs=seqs, targets=targets)
        assert [r["client_msg_id"] for r in out["results"]] == ["fw-g", "fw-d"]
        assert all("error" not in r and len(r["sent"]) == 3 for r in out["results"])
        in_group = out["results"][0]["sent"]
        assert [a["seq"] for a in in_group] == [2, 3, 4]  # after the group's created entry

        copies = {m["seq"]: m for m in await carol.pull(gid, 0)}
        assert copies[2]["body"] == {"text": "hello from bob", "forwarded": {"sender_id": bob.user_id}}
        assert copies[2]["sender_id"] == alice.user_id and copies[2]["client_msg_id"] == "fw-g.0"
        file_copy = copies[3]["body"]
        # The same media, not uploaded again: same id and content address.
        assert file_copy["media_id"] == media["media_id"]
        assert file_copy["sha256"] == original[doc["seq"]]["body"]["sha256"]
        assert file_copy["forwarded"] == {"sender_id": bob.user_id}
        # A reply's quote stays behind (its seq names a message of another conversation).
        assert copies[4]["body"] == {"text": "thanks", "forwarded": {"sender_id": alice.user_id}}
        r = await http.get(f"/api/v1/media/{media['media_id']}", headers=auth(carol.login))
        assert r.status == 200 and (await r.read()).startswith(b"%PDF")

        # dave got them in a new direct conversation, counted unread like any message.
        dave_conv = out["results"][1]["sent"][0]["conv_id"]
        await _pushed_seq(dave, dave_conv, 3)
        listed = await dave.request("conversation", conv_id=dave_conv)
        assert listed["unread"] == 3

        # Idempotent per target: the same request again sends nothing new.
        again = await alice.request("forward", conv_id=conv, seqs=seqs, targets=targets)
        assert [[a["seq"] for a in r["sent"]] for r in again["results"]] == [[2, 3, 4], [1, 2, 3]]
        assert all(a["duplicate"] for r in again["results"] for a in r["sent"])

        # A forward of a forward names the first sender.
        await carol.request("forward", conv_id=gid, seqs=[2], targets=[{"to": dave.user_id, "client_msg_id": "fw-c"}])
        carol_dave = (await carol.request("conversations"))["conversations"]
        c2d = next(c for c in carol_dave if c["type"] == "direct")["conv_id"]
        assert (await dave.pull(c2d, 0))[0]["body"]["forwarded"] == {"sender_id": bob.user_id}

        # Targets are independent: one the sender may not write to fails alone.
        other = (await bob.request("group_create", name="h", members=[dave.user_id]))["group"]["conv_id"]
        mixed = await alice.request(
            "forward",
            conv_id=conv,
            seqs=[hello["seq"]],
            targets=[{"conv_id": other, "client_msg_id": "x1"}, {"to": carol.user_id, "client_msg_id": "x2"}],
        )
        assert mixed["results"][0]["error"]["code"] == "not_member" and mixed["results"][0]["sent"] == []
        assert len(mixed["results"][1]["sent"]) == 1 and "error" not in mixed["results"][1]

        # Forwarding from a conversation the forwarder has left is refused.
        await carol.request("group_leave", conv_id=gid)
        await _refused(
            "not_member",
            carol.request("forward", conv_id=gid, seqs=[2], targets=[{"to": dave.user_id, "client_msg_id": "l"}]),
        )
        # Bad shapes: a target with both addresses; a recalled message.
        await _refused(
            "bad_request",
            alice.request(
                "forward",
                conv_id=conv,
                seqs=[1],
                targets=[{"to": dave.user_id, "conv_id": gid, "client_msg_id": "z"}],
            ),
        )
        await bob.request("recall", conv_id=conv, seq=hello["seq"])
        await _refused(
            "already_recalled",
            alice.request("forward", conv_id=conv, seqs=[1], targets=[{"to": dave.user_id, "client_msg_id": "r"}]),
        )

        # Over HTTP.
        r = await http.post(
            f"/api/v1/conversations/{conv}/forward",
            json={"seqs": [doc["seq"]], "targets": [{"to": dave.user_id, "client_msg_id": "h"}]},
            headers=auth(alice.login),
        )
        assert r.status == 200, await r.text()
        assert (await r.json())["results"][0]["sent"][0]["seq"] == 4


async def test_custom_kind_delivered_synced_and_searchable(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        body = {"type": "order", "data": {"id": 42, "items": [{"sku": "茶", "n": 2}], "paid": True}, "text": "订单 #42"}
        sent = await alice.request("send", kind="custom", body=body, client_msg_id="o1", to=bob.user_id)
        conv = sent["conv_id"]
        got = await _pushed_seq(bob, conv, sent["seq"])
        assert got["kind"] == "custom" and got["body"] == body
        events, _groups = await bob.sync_all()
        assert [e["data"]["body"] for e in events if e["type"] == "message"] == [body]
        assert (await bob.pull(conv, 0))[0]["body"] == body

        # No text fallback: stored and delivered, found by no search.
        loc = {"type": "location", "data": {"lat": 31.23, "lng": 121.47}}
        await alice.request("send", kind="custom", body=loc, client_msg_id="o2", conv_id=conv)
        assert (await bob.pull(conv, 0))[1]["body"] == loc

        async def found() -> list[str]:
            return [h["text"] for h in (await bob.request("search", q="订单 #42"))["hits"]]

        deadline = asyncio.get_running_loop().time() + 20
        while await found() != ["订单 #42"]:
            assert asyncio.get_running_loop().time() < deadline, "the custom message was never found"
            await asyncio.sleep(0.05)
        hit = (await bob.request("search", q="订单"))["hits"]
        assert hit and hit[0]["message"]["kind"] == "custom"

        # A reply to it quotes its text fallback.
        reply = await bob.request("send", **_t("已付款", "b1"), conv_id=conv, reply_to=sent["seq"])
        quote = (await alice.pull(conv, 0))[2]["body"]["quote"]
        assert reply["seq"] == 3 and quote["kind"] == "custom" and quote["excerpt"] == "订单 #42"

        for bad in (
            {"type": "Order", "data": {}},  # type: lower-case pattern
            {"type": "order", "data": [1, 2]},  # data: an object
            {"type": "order"},  # data: required
            {"type": "order", "data": {}, "text": "x", "extra": 1},
            {"type": "o" * 33, "data": {}},
            {"type": "order", "data": {}, "text": "bell\x07"},
        ):
            await _refused(
                "invalid_body", alice.request("send", kind="custom", body=bad, client_msg_id="x", conv_id=conv)
            )
        big = {"type": "blob", "data": {"x": "y" * 50_000}}
        await _refused(
            "body_too_large", alice.request("send", kind="custom", body=big, client_msg_id="x", conv_id=conv)
        )


async def test_reply_forward_and_recall_across_cluster_nodes(three_nodes: list[NodeServer]) -> None:  # noqa: F811
    """Cluster mode (three nodes, PostgreSQL + Redis): the quote and the forwarded copy reach
    members on other nodes, and a recall on one node shows in the quote read on another."""
    n0, n1, n2 = three_nodes
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        a_login, b_login, c_login = await make_users(h0, ["alice", "bob", "carol"])
        alice, bob, carol = Device(h0, a_login), Device(h1, b_login), Device(h2, c_login)
        for d in (alice, bob, carol):
            await d.connect()
        first = await _text(alice, "跨节点", "a1", to=bob.user_id)
        conv = first["conv_id"]
        reply = await bob.request("send", **_t("收到", "b1"), conv_id=conv, reply_to=first["seq"])
        got = await _pushed_seq(alice, conv, reply["seq"])
        assert got["body"]["quote"]["excerpt"] == "跨节点" and got["body"]["quote"]["sender_id"] == alice.user_id

        gid = (await bob.request("group_create", name="g", members=[carol.user_id]))["group"]["conv_id"]
        out = await bob.request(
            "forward", conv_id=conv, seqs=[first["seq"]], targets=[{"conv_id": gid, "client_msg_id": "fw"}]
        )
        copy = await _pushed_seq(carol, gid, out["results"][0]["sent"][0]["seq"])
        assert copy["body"] == {"text": "跨节点", "forwarded": {"sender_id": alice.user_id}}

        await alice.request("recall", conv_id=conv, seq=first["seq"])
        history = await bob.pull(conv, 0)
        assert history[1]["body"]["quote"]["recalled"] is True and "excerpt" not in history[1]["body"]["quote"]


async def test_forward_copies_count_against_the_send_limit(make_server: Any) -> None:
    server: NodeServer = await make_server(rate_send_per_user_s=0.01, rate_send_burst=10)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        first = await _text(bob, "one", "b1", to=alice.user_id)
        await _text(bob, "two", "b2", conv_id=first["conv_id"])
        targets = [{"to": carol.user_id, "client_msg_id": f"t{i}"} for i in range(3)]
        # 2 messages x 3 targets = 6 copies of alice's 10; then 6 more do not fit.
        await alice.request("forward", conv_id=first["conv_id"], seqs=[1, 2], targets=targets)
        await _refused("rate_limited", alice.request("forward", conv_id=first["conv_id"], seqs=[1, 2], targets=targets))
        r = await http.post(
            f"/api/v1/conversations/{first['conv_id']}/forward",
            json={"seqs": [1, 2], "targets": targets},
            headers=auth(alice.login),
        )
        assert r.status == 429, await r.text()
