"""Behaviour that docs/protocol.md promises, checked from outside over real nodes (both
stores): recalled mentions, MessagePack bodies, search highlights, read-fan-out groups a
device left while offline, blocks in one-to-one conversations, and request validation."""

from __future__ import annotations

import asyncio
import datetime
import math
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, login, make_users, until
from yim import cli
from yim.config import MIN_SEND_BUFFER_BYTES, SettingsError, load_settings
from yim.node import NodeServer


async def _devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    devices = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in devices))
    return devices


async def _conv(device: Device, conv_id: str) -> dict[str, Any]:
    return await device.request("conversation", conv_id=conv_id)


async def _text(device: Device, conv_id: str, text: str, cmid: str, **fields: Any) -> dict[str, Any]:
    return await device.request("send", conv_id=conv_id, kind="text", body={"text": text}, client_msg_id=cmid, **fields)


# --- 1. a recalled mention no longer flags the conversation ----------------------------------------


@pytest.mark.parametrize("fanout_max", [500, 1], ids=["write", "read"])
async def test_recalled_mentions_clear_the_mentioned_flag(make_server: MakeServer, fanout_max: int) -> None:
    server = await make_server(group_write_fanout_max=fanout_max)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        gid = (await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id]))["group"]["conv_id"]

        # One mention of bob, recalled: no unread, no flag.
        one = await _text(alice, gid, "@bob", "a1", mentions=[bob.user_id])
        assert (await _conv(bob, gid))["mentioned"] is True
        await alice.request("recall", conv_id=gid, seq=one["seq"])
        c = await _conv(bob, gid)
        assert (c["unread"], c["mentioned"]) == (0, False)

        # Two mentions; recalling the later one leaves the earlier standing.
        first = await _text(alice, gid, "@bob 1", "a2", mentions=[bob.user_id, carol.user_id])
        later = await _text(alice, gid, "@bob 2", "a3", mentions=[bob.user_id])
        await alice.request("recall", conv_id=gid, seq=later["seq"])
        assert (await _conv(bob, gid))["mentioned"] is True
        await alice.request("recall", conv_id=gid, seq=first["seq"])
        assert (await _conv(bob, gid))["mentioned"] is False
        assert (await _conv(carol, gid))["mentioned"] is False

        # A mention bob has already read stays read when a later one is recalled.
        read_one = await _text(alice, gid, "@bob 3", "a4", mentions=[bob.user_id])
        await bob.request("read", conv_id=gid, seq=read_one["seq"])
        unread_one = await _text(alice, gid, "@bob 4", "a5", mentions=[bob.user_id])
        await alice.request("recall", conv_id=gid, seq=unread_one["seq"])
        assert (await _conv(bob, gid))["mentioned"] is False

        # mention_all: the same, and the recalled entry no longer says it mentioned everyone.
        everyone_before = await _text(alice, gid, "@all 1", "a6", mention_all=True)
        everyone = await _text(alice, gid, "@all 2", "a7", mention_all=True)
        await alice.request("recall", conv_id=gid, seq=everyone["seq"])
        assert (await _conv(carol, gid))["mentioned"] is True  # the earlier @all stands
        await alice.request("recall", conv_id=gid, seq=everyone_before["seq"])
        for d, unread in ((bob, 0), (carol, 1)):  # carol has not read "@bob 3"
            c = await _conv(d, gid)
            assert (c["unread"], c["mentioned"]) == (unread, False)
        page = await bob.request("history", conv_id=gid, limit=50)
        recalled = {m["seq"]: m for m in page["messages"] if m.get("recalled")}
        assert set(recalled) == {one["seq"], first["seq"], later["seq"], unread_one["seq"], everyone["seq"],
                                 everyone_before["seq"]}  # fmt: skip
        assert not any(m.get("mention_all") or m.get("mentions") for m in recalled.values())

        # A new mention after all that flags again.
        await _text(alice, gid, "@carol", "a8", mentions=[carol.user_id])
        assert (await _conv(carol, gid))["mentioned"] is True
        assert (await _conv(bob, gid))["mentioned"] is False
        for d in (alice, bob, carol):
            await d.close()


# --- 2. MessagePack bodies: only values JSON holds as they are ---------------------------------------


async def test_msgpack_body_without_a_json_equivalent_is_refused(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        [alice_login, bob_login] = await make_users(http, ["alice", "bob"])
        bob = Device(http, bob_login)
        await bob.connect()
        ws = await http.ws_connect("/ws", params={"format": "msgpack"})
        rids = iter(range(1, 100))

        async def request(op: str, **fields: Any) -> dict[str, Any]:
            rid = next(rids)
            await ws.send_bytes(msgspec.msgpack.encode({"op": op, "rid": rid, **fields}))
            while True:
                frame = msgspec.msgpack.decode((await ws.receive(timeout=5)).data)
                if frame.get("rid") == rid:
                    return frame

        assert (await request("auth", token=alice_login["token"]))["t"] == "ok"
        refused = [
            {"text": b"hello"},  # bin: would arrive as the base64 text "aGVsbG8="
            {"text": "hi", "x": [b"\x00"]},
            {"text": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},  # timestamp ext: an ISO string
            {"text": "hi", "n": {1: "one"}},  # a number key: the string "1"
            {"text": "hi", "f": math.nan},  # NaN: null
            {"text": msgspec.msgpack.Ext(5, b"x")},
        ]
        for i, body in enumerate(refused):
            frame = await request("send", to=bob.user_id, kind="text", body=body, client_msg_id=f"bad{i}")
            assert (frame["t"], frame["code"]) == ("err", "invalid_body"), (body, frame)
        # What has a JSON equivalent arrives exactly as sent.
        frame = await request("send", to=bob.user_id, kind="text", body={"text": "hello ✓"}, client_msg_id="ok")
        assert frame["t"] == "ok", frame
        await until(lambda: any(e["data"].get("client_msg_id") == "ok" for e in bob.events))
        got = [e["data"] for e in bob.events if e["type"] == "message"]
        assert [m["body"] for m in got] == [{"text": "hello ✓"}]  # none of the refused ones was stored
        await ws.close()
        await bob.close()


# --- 3. search highlights every term; 6. a 9th term is refused, not dropped -----------------------


async def test_search_highlights_every_term_and_refuses_a_ninth(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await _devices(http, ["alice", "bob"])
        text = "ab " * 40 + "xyz"
        await alice.request("send", to=bob.user_id, kind="text", body={"text": text}, client_msg_id="h1")
        [hit] = (await bob.request("search", q="ab xyz"))["hits"]
        marked = [text[start:end] for start, end in hit["highlights"]]
        assert "xyz" in marked and len(marked) == 32  # capped, and the cap keeps every term
        assert hit["highlights"][:31] == [[3 * i, 3 * i + 2] for i in range(31)]  # then the earliest others

        # Each of 8 terms, every one past the cap of another, gets its range.
        words = [f"w{i}x" for i in range(8)]
        text = " ".join(["ab"] * 50 + words)
        await alice.request("send", to=bob.user_id, kind="text", body={"text": text}, client_msg_id="h2")
        [hit] = (await bob.request("search", q="ab " + " ".join(words[:7])))["hits"]
        marked = {text[start:end] for start, end in hit["highlights"]}
        assert marked == {"ab", *words[:7]}

        # A 9th different term is refused (repeats count once); it used to be dropped silently.
        with pytest.raises(ProtocolError) as err:
            await bob.request("search", q=" ".join(["ab", *words]))
        assert err.value.code == "bad_request" and "at most 8" in str(err.value)
        assert len((await bob.request("search", q=" ".join(["ab", *words[:7], "ab"])))["hits"]) == 1
        r = await http.get(
            "/api/v1/search", params={"q": " ".join(["ab", *words])}, headers={"Authorization": f"Bearer {bob.token}"}
        )
        assert r.status == 400 and (await r.json())["code"] == "bad_request"
        await alice.close()
        await bob.close()


# --- 4. a device offline while its user left a read-fan-out group still gets its entries ---------


@pytest.mark.parametrize("how", ["removed", "left", "dissolved"])
async def test_offline_device_pulls_a_read_fanout_group_it_was_taken_out_of(make_server: MakeServer, how: str) -> None:
    server = await make_server(group_write_fanout_max=1)  # every group of 2+ reads by fan-out on read
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        bob_phone = Device(http, await login(http, "bob", "phone"))
        await bob_phone.connect()
        gid = (await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id]))["group"]["conv_id"]
        await _text(alice, gid, "before", "m0")
        # bob's desktop follows §12.3 up to here, then goes offline.
        events, groups = await bob.sync_all()
        cursor = max([e["seq"] for e in events], default=0)
        [head] = groups
        pulled = await bob.pull(gid, head["from_seq"])
        group_cursor = pulled[-1]["seq"]
        await bob.close()

        missed = [(await _text(alice, gid, f"missed {i}", f"m{i + 1}"))["seq"] for i in range(3)]
        if how == "removed":
            end = (await alice.request("group_remove", conv_id=gid, user_id=bob.user_id))["seq"]
        elif how == "left":
            end = (await bob_phone.request("group_leave", conv_id=gid))["seq"]
        else:
            end = (await alice.request("group_dissolve", conv_id=gid))["seq"]
        if how != "dissolved":
            await _text(carol, gid, "after", "c1")

        # Back online: the page with the leave entry names the group, up to that entry.
        await bob.connect()
        page = await bob.request("sync", since=cursor, limit=500)
        assert [(e["data"]["conv_id"], e["data"]["seq"]) for e in page["events"]] == [(gid, end)]
        assert page["groups"] == [{"conv_id": gid, "last_seq": end, "from_seq": head["from_seq"]}]
        got = await bob.pull(gid, group_cursor)
        assert [m["seq"] for m in got] == [*missed, end]  # and nothing after the end
        # Once past that page, the group is not named again.
        later = await bob.request("sync", since=page["next_since"], limit=500)
        assert later["groups"] == [] and later["events"] == []
        # A fresh device from the start gets it too, on the page that carries the entry.
        pages: list[dict[str, Any]] = []
        since = 0
        while not pages or pages[-1]["has_more"]:
            pages.append(await bob.request("sync", since=since, limit=1))
            since = pages[-1]["next_since"]
        named = [p for p in pages if p["groups"]]
        assert [e["data"]["seq"] for p in named for e in p["events"] if e["data"]["conv_id"] == gid] == [end]
        for d in (alice, bob, bob_phone, carol):
            await d.close()


# --- 5. a block stops typing and read receipts between the two --------------------------------------


async def test_a_block_stops_typing_and_read_receipts_in_a_one_to_one_conversation(make_server: MakeServer) -> None:
    server = await make_server(typing_interval_s=0.0)  # every typing signal is judged, none rate-limited
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await _devices(http, ["alice", "bob", "carol"])
        first = await bob.request("send", to=alice.user_id, kind="text", body={"text": "1"}, client_msg_id="b1")
        second = await bob.request("send", to=alice.user_id, kind="text", body={"text": "2"}, client_msg_id="b2")
        dm = first["conv_id"]
        await alice.request("read", conv_id=dm, seq=first["seq"])  # before the block: a receipt
        gid = (await alice.request("group_create", name="g", members=[bob.user_id, carol.user_id]))["group"]["conv_id"]

        def receipts_for_bob() -> list[int]:
            return [e["data"]["read_seq"] for e in bob.events if e["type"] == "receipt" and e["data"]["conv_id"] == dm]

        def typing(device: Device, conv_id: str, user: Device) -> list[dict[str, Any]]:
            return [
                n
                for n in device.notices
                if n["type"] == "typing" and n["data"] == {"conv_id": conv_id, "user_id": user.user_id}
            ]

        await until(lambda: receipts_for_bob() == [first["seq"]])

        for blocker, blocked in ((alice, bob), (bob, alice)):  # either side's block counts
            await blocker.request("block", user_id=blocked.user_id)
            # Typing is not forwarded, either way: the reply says so.
            assert (await bob.request("typing", conv_id=dm))["forwarded"] is False
            assert (await alice.request("typing", conv_id=dm))["forwarded"] is False
            # Nor are the reads: no receipt event, and neither sees the other's read marker.
            if blocker is alice:
                await alice.request("read", conv_id=dm, seq=second["seq"])
            assert (await bob.request("receipts", conv_id=dm, seq=first["seq"]))["read_count"] == 0
            assert (await bob.request("receipts", conv_id=dm, seq=first["seq"]))["readers"] == []
            assert (await _conv(bob, dm))["peer_read_seq"] == 0
            page = await bob.request("conversations")
            assert {c["conv_id"]: c["peer_read_seq"] for c in page["conversations"]}[dm] == 0
            # Groups are not affected: bob's typing there reaches alice.
            await bob.request("typing", conv_id=gid)
            await until(lambda: len(typing(alice, gid, bob)) >= 1)
            assert typing(alice, dm, bob) == [] and typing(bob, dm, alice) == []
            await blocker.request("unblock", user_id=blocked.user_id)

        # No receipt was written while blocked; after the unblock the marker shows again.
        events, _groups = await bob.sync_all()
        assert [e["data"]["read_seq"] for e in events if e["type"] == "receipt"] == [first["seq"]]
        assert receipts_for_bob() == [first["seq"]]
        assert (await bob.request("receipts", conv_id=dm, seq=second["seq"]))["read_count"] == 1
        assert (await _conv(bob, dm))["peer_read_seq"] == second["seq"]
        assert (await bob.request("typing", conv_id=dm))["forwarded"] is True
        await until(lambda: len(typing(alice, dm, bob)) == 1)
        for d in (alice, bob, carol):
            await d.close()


# --- 6. decided corner cases -----------------------------------------------------------------------


async def test_malformed_requests_get_their_documented_errors(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        [login_] = await make_users(http, ["alice"])
        ws = await http.ws_connect("/ws")

        async def answer(frame: str) -> dict[str, Any]:
            await ws.send_str(frame)
            while True:
                got = await ws.receive_json(timeout=5)
                if got["t"] in ("ok", "err"):
                    return got

        assert (await answer(json_frame(op="auth", rid=0, token=login_["token"])))["t"] == "ok"
        # An `op` that is not a string is a malformed frame, not an op this node lacks.
        for op in (5, True, ["sync"]):
            got = await answer(json_frame(op=op, rid=1))
            assert (got["rid"], got["code"]) == (1, "bad_request"), got
            assert "`op` must be a string" in got["message"]
        got = await answer(json_frame(op="fly", rid=2))
        assert (got["rid"], got["code"]) == (2, "unknown_op")
        # Nesting: 256 levels (and more) are read (and judged: a text must be a string) ...
        deep = "[" * 256 + "]" * 256
        head = '{"op":"send","rid":%d,"to":"1","kind":"text","client_msg_id":"x","body":'
        got = await answer(head.replace("%d", "3") + '{"text":' + deep + "}}")
        assert (got["rid"], got["code"]) == (3, "invalid_body"), got
        # ... thousands are not read at all: like a frame that is not JSON, no rid.
        deep = "[" * 5000 + "]" * 5000
        got = await answer(head.replace("%d", "4") + deep + "}")
        assert (got["rid"], got["code"]) == (None, "bad_frame"), got
        assert (await answer(json_frame(op="ping", rid=5)))["t"] == "ok"  # the connection stays
        await ws.close()

        # HTTP: a method the path does not have is 405 with Allow (§13, §14), not 400.
        r = await http.get("/api/v1/messages", headers={"Authorization": f"Bearer {login_['token']}"})
        assert r.status == 405 and (await r.json())["code"] == "method_not_allowed"
        assert "POST" in r.headers["Allow"]


def json_frame(**fields: Any) -> str:
    return msgspec.json.encode(fields).decode()


def test_a_send_buffer_too_small_for_a_page_is_refused_at_start(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SettingsError, match="max_send_buffer_bytes must be at least 2097152"):
        load_settings(None, max_send_buffer_bytes=1024 * 1024)
    assert load_settings(None, max_send_buffer_bytes=MIN_SEND_BUFFER_BYTES).max_send_buffer_bytes == 2 * 1024 * 1024
    with pytest.raises(SettingsError, match=r"bad setting: port = 'eighty' .*: Expected `int`, got `str`; allowed: an"):
        load_settings(None, port="eighty")
    # `yim serve` says so in one line and exits 2, before it opens the data folder.
    data = tmp_path / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YIM_MAX_SEND_BUFFER_BYTES", "65536")
        assert cli.main(["serve", "--data", str(data), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yim serve: bad setting: max_send_buffer_bytes must be at least") and "Traceback" not in err
    assert not data.exists()
