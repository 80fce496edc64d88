"""Edits over real connections, on both stores: the sender edits their own text message,
every device sees it live and on sync (a device offline during the edits converges to
what the online ones show), history shows the latest text with ``edited_at``, earlier
versions are kept for the members, search follows the text, replies' quotes follow it,
mentions added by an edit notify, unread counts and the conversation order do not move;
refusals: someone else's message, a non-member, past the window, editing turned off."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.rawclient import Device, ProtocolError, login, make_users, until
from yim.node import NodeServer


async def _refused(code: str, coro: Any) -> None:
    with pytest.raises(ProtocolError) as err:
        await coro
    assert err.value.code == code, err.value


async def _text(sender: Device, text: str, cid: str, **to: Any) -> dict[str, Any]:
    return await sender.request("send", kind="text", body={"text": text}, client_msg_id=cid, **to)


def _view(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """What a client shows of a conversation: its messages by seq, each edit entry applied
    to the message it names (in timeline order)."""
    shown: dict[int, dict[str, Any]] = {}
    for m in sorted(entries, key=lambda m: m["seq"]):
        if m["kind"] == "edit":
            if m["body"]["seq"] in shown:
                shown[m["body"]["seq"]] = {**shown[m["body"]["seq"]], "body": m["body"]["body"]}
        elif m["kind"] == "recall":
            shown.pop(m["body"]["seq"], None)
        elif m["kind"] == "text" and not m.get("recalled"):
            shown[m["seq"]] = {"seq": m["seq"], "body": m["body"]}
    return shown


def _live(device: Device, conv_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in device.events if e["type"] == "message" and e["data"]["conv_id"] == conv_id]


async def _search(device: Device, q: str) -> list[str]:
    return [h["text"] for h in (await device.request("search", q=q))["hits"]]


async def test_edit_live_history_versions_search_quotes(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        a1, b1, c1 = [Device(http, x) for x in await make_users(http, ["alice", "bob", "carol"])]
        a2 = Device(http, await login(http, "alice", "d2"))
        await asyncio.gather(*(d.connect() for d in (a1, a2, b1, c1)))
        first = await _text(a1, "meet at the libary at noon", "a1", to=b1.user_id)
        conv, seq = first["conv_id"], first["seq"]
        reply = await b1.request(
            "send", kind="text", body={"text": "ok"}, client_msg_id="b1", conv_id=conv, reply_to=seq
        )
        await _text(a1, "and bring the notes", "a1b", conv_id=conv)  # unread by bob
        await _text(a1, "later conversation", "a2", to=c1.user_id)  # now first in alice's list
        assert await _search(b1, "libary") == ["meet at the libary at noon"]  # indexed before the edit
        before = await b1.request("conversations")
        assert before["conversations"][0]["unread"] == 1

        out = await a1.request("edit", conv_id=conv, seq=seq, text="meet at the library at noon")
        assert out["seq"] == seq and out["edit_seq"] == reply["seq"] + 2
        new_body = {"text": "meet at the library at noon", "edited_at": out["edited_at"]}
        for device in (b1, a2):  # the other side and the sender's other device, live
            await until(lambda d=device: any(m["kind"] == "edit" for m in _live(d, conv)), timeout=20)
            entry = next(m for m in _live(device, conv) if m["kind"] == "edit")
            assert entry["body"] == {"seq": seq, "msg_id": first["msg_id"], "body": new_body}
            assert entry["seq"] == out["edit_seq"]

        history = await b1.pull(conv, 0)
        assert history[0]["body"] == new_body
        assert history[1]["body"]["quote"]["excerpt"] == "meet at the library at noon"
        assert history[1]["body"]["quote"]["edited"] is True
        assert history[3]["kind"] == "edit"

        # Unread does not move, nor does the conversation list's order.
        after = await b1.request("conversations")
        assert after["conversations"][0]["unread"] == 1 and after["total_unread"] == before["total_unread"]
        alice_list = await a1.request("conversations")
        assert [c["peer"]["user_id"] for c in alice_list["conversations"]] == [c1.user_id, b1.user_id]

        # Earlier versions, for the members; a second edit keeps both.
        out2 = await a1.request("edit", conv_id=conv, seq=seq, text="meet at the library at one")
        versions = (await b1.request("message_versions", conv_id=conv, seq=seq))["versions"]
        assert [v["body"] for v in versions] == [
            {"text": "meet at the libary at noon"},
            {"text": "meet at the library at noon", "edited_at": out["edited_at"]},
        ]
        assert versions[0]["created_at"] == first["created_at"] and versions[1]["created_at"] == out["edited_at"]
        await _refused("not_member", c1.request("message_versions", conv_id=conv, seq=seq))

        # Search finds the new text, no longer the old.
        assert await _search(b1, "library at one") == ["meet at the library at one"]
        assert await _search(b1, "libary") == []
        assert await _search(a1, "at noon") == []

        # Refusals: someone else's message, a reply of someone else, not a member, not text, gone.
        await _refused("forbidden", b1.request("edit", conv_id=conv, seq=seq, text="hijacked"))
        await _refused("forbidden", a1.request("edit", conv_id=conv, seq=reply["seq"], text="x"))
        await _refused("not_member", c1.request("edit", conv_id=conv, seq=seq, text="x"))
        await _refused("bad_request", a1.request("edit", conv_id=conv, seq=out2["edit_seq"], text="x"))
        await _refused("invalid_body", a1.request("edit", conv_id=conv, seq=seq, text="  "))
        await _refused("not_found", a1.request("edit", conv_id=conv, seq=99, text="x"))

        # A recall takes the versions with the text.
        await a1.request("recall", conv_id=conv, seq=seq)
        assert (await b1.request("message_versions", conv_id=conv, seq=seq))["versions"] == []
        await _refused("already_recalled", a1.request("edit", conv_id=conv, seq=seq, text="back"))
        assert await _search(b1, "library") == []

        # The same over HTTP.
        second = await _text(a1, "typo hre", "a3", conv_id=conv)
        r = await http.post(
            f"/api/v1/conversations/{conv}/edit",
            json={"seq": second["seq"], "text": "typo here"},
            headers={"Authorization": f"Bearer {a1.token}"},
        )
        assert r.status == 200, await r.text()
        r = await http.get(
            f"/api/v1/conversations/{conv}/messages/{second['seq']}/versions",
            headers={"Authorization": f"Bearer {b1.token}"},
        )
        assert r.status == 200 and (await r.json())["versions"][0]["body"] == {"text": "typo hre"}
        for d in (a1, a2, b1, c1):
            await d.close()


async def test_edit_in_a_read_fanout_group(make_server: Any) -> None:
    """A large group's members get the edit entry as the group's notice and by pulling the
    group timeline, like any entry (no inbox copies); a client cannot send an edit entry."""
    server: NodeServer = await make_server(group_write_fanout_max=2)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = [Device(http, x) for x in await make_users(http, ["alice", "bob", "carol"])]
        await asyncio.gather(alice.connect(), bob.connect(), carol.connect())
        group = await alice.request("group_create", name="big", members=[bob.user_id, carol.user_id])
        gid = group["group"]["conv_id"]
        assert group["group"]["fanout"] == "read"
        sent = await _text(alice, "agenda v1", "a1", conv_id=gid)
        out = await alice.request("edit", conv_id=gid, seq=sent["seq"], text="agenda v2")
        assert out["inbox_seq"] == 0  # no inbox copy in a read-fan-out group

        def notices() -> list[dict[str, Any]]:
            return [n["data"] for n in bob.notices if n["type"] == "group_message"]

        await until(lambda: any(m["kind"] == "edit" for m in notices()), timeout=20)
        entry = next(m for m in notices() if m["kind"] == "edit")
        assert entry["body"]["body"]["text"] == "agenda v2" and entry["seq"] == out["edit_seq"]
        pulled = await carol.pull(gid, 0)
        assert next(m for m in pulled if m["seq"] == sent["seq"])["body"]["text"] == "agenda v2"
        assert pulled[-1]["kind"] == "edit"
        await _refused(
            "invalid_kind",
            bob.request("send", kind="edit", body={"seq": sent["seq"]}, client_msg_id="b1", conv_id=gid),
        )
        for d in (alice, bob, carol):
            await d.close()


async def test_edit_window(make_server: Any) -> None:
    server: NodeServer = await make_server(edit_window_s=1)
    off: NodeServer = await make_server(edit_window_s=0)
    async with aiohttp.ClientSession(server.url) as http, aiohttp.ClientSession(off.url) as http_off:
        alice, bob = [Device(http, x) for x in await make_users(http, ["alice", "bob"])]
        hello, _ = await asyncio.gather(alice.connect(), bob.connect())
        assert hello["edit_window_s"] == 1  # clients learn the window when they connect
        sent = await _text(alice, "soon stale", "a1", to=bob.user_id)
        await asyncio.sleep(1.2)  # past the window: a refusal, whatever the machine's speed
        await _refused("edit_window_passed", alice.request("edit", conv_id=sent["conv_id"], seq=sent["seq"], text="x"))
        o_alice, o_bob = [Device(http_off, x) for x in await make_users(http_off, ["dora", "erin"])]
        await asyncio.gather(o_alice.connect(), o_bob.connect())
        sent = await _text(o_alice, "never editable", "a1", to=o_bob.user_id)
        await _refused(
            "edit_window_passed", o_alice.request("edit", conv_id=sent["conv_id"], seq=sent["seq"], text="x")
        )
        for d in (alice, bob, o_alice, o_bob):
            await d.close()


async def test_offline_device_converges_and_added_mentions_notify(server: NodeServer) -> None:
    """Three devices: bob's phone is offline during a run of edits in a group; on sync it
    shows exactly what his online desktop and alice's device show, and what history says."""
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = [Device(http, x) for x in await make_users(http, ["alice", "bob", "carol"])]
        phone = Device(http, await login(http, "bob", "phone"))
        await asyncio.gather(alice.connect(), bob.connect(), carol.connect())
        group = await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id])
        gid = group["group"]["conv_id"]
        sent = [await _text(alice, f"draft {i}", f"a{i}", conv_id=gid) for i in range(3)]
        await bob.request("read", conv_id=gid, seq=sent[-1]["seq"])
        unread = (await bob.request("conversation", conv_id=gid))["unread"]
        head = (await phone.connect())["inbox_seq"]
        await phone.close()

        await alice.request("edit", conv_id=gid, seq=sent[0]["seq"], text="final 0")
        out = await alice.request("edit", conv_id=gid, seq=sent[1]["seq"], text="final 1 @bob", mentions=[bob.user_id])
        await alice.request("edit", conv_id=gid, seq=sent[0]["seq"], text="really final 0")
        await alice.request("recall", conv_id=gid, seq=sent[2]["seq"])
        last = await alice.request(
            "edit", conv_id=gid, seq=sent[1]["seq"], text="final 1, @bob", mentions=[bob.user_id]
        )

        # The edit that added bob raised his mention flag; edits never change unread.
        mine = await bob.request("conversation", conv_id=gid)
        assert mine["mentioned"] is True and mine["unread"] == unread
        assert (await carol.request("conversation", conv_id=gid))["mentioned"] is False

        await until(lambda: any(m["seq"] == last["edit_seq"] for m in _live(bob, gid)), timeout=20)
        live = _live(bob, gid)
        edits = [m for m in live if m["kind"] == "edit"]
        assert edits[1]["mentions"] == [bob.user_id] and "mentions" not in edits[3]  # only the edit that added him
        assert edits[1]["seq"] == out["edit_seq"]

        await phone.connect()
        events, _groups = await phone.sync_all(head)
        synced = [e["data"] for e in events if e["type"] == "message" and e["data"]["conv_id"] == gid]
        history = await phone.pull(gid, 0)
        # Live and sync carry the same entries, in the same order; applied to what each
        # device had, they show what history shows now.
        assert [m["seq"] for m in synced] == [m["seq"] for m in live if m["seq"] > sent[-1]["seq"]]
        had = [{"seq": m["seq"], "kind": "text", "body": {"text": f"draft {i}"}} for i, m in enumerate(sent)]
        shown = _view(had + synced)
        assert shown == _view(had + [m for m in live if m["seq"] > sent[-1]["seq"]])
        assert shown == _view(history)
        assert shown[sent[0]["seq"]]["body"]["text"] == "really final 0"
        assert shown[sent[1]["seq"]]["body"]["text"] == "final 1, @bob"
        assert sent[2]["seq"] not in _view(history)
        assert next(m for m in history if m["seq"] == sent[1]["seq"])["mentions"] == [bob.user_id]
        for d in (alice, bob, carol, phone):
            await d.close()
