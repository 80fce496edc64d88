"""Delete for me over real connections, on both stores: a user hides messages from their own
devices — gone from their history, sync (another device of theirs, offline meanwhile, syncs
a ``hidden`` event in its place) and search, no longer counted unread — while the other side
keeps them; the user's online devices learn it live."""

from __future__ import annotations

import asyncio
import json
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


async def _search(device: Device, q: str) -> list[str]:
    return [h["text"] for h in (await device.request("search", q=q))["hits"]]


async def test_hide_for_me_history_sync_search_unread(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = [Device(http, x) for x in await make_users(http, ["alice", "bob", "carol"])]
        desk = Device(http, await login(http, "alice", "desk"))
        phone = Device(http, await login(http, "alice", "phone"))
        await asyncio.gather(alice.connect(), bob.connect(), carol.connect(), desk.connect())
        sent = [
            await _text(bob, text, f"b{i}", to=alice.user_id) for i, text in enumerate(["one", "secret two", "three"])
        ]
        conv = sent[0]["conv_id"]
        assert (await alice.request("conversation", conv_id=conv))["unread"] == 3
        assert await _search(alice, "secret") == ["secret two"]

        out = await alice.request("hide", conv_id=conv, seqs=[sent[1]["seq"]])
        assert (out["seqs"], out["unread"], out["total_unread"]) == ([sent[1]["seq"]], 2, 2)
        # The user's other online device learns it live, by an event of the user's own inbox.
        await until(lambda: any(e["type"] == "hidden" for e in desk.events), timeout=20)
        event = next(e for e in desk.events if e["type"] == "hidden")
        assert event["data"] == {"conv_id": conv, "seqs": [sent[1]["seq"]]} and event["seq"] == out["inbox_seq"]
        assert not any(e["type"] == "hidden" for e in bob.events)  # only the user's own devices

        # Gone for alice, kept for bob.
        assert [m["body"]["text"] for m in await alice.pull(conv, 0)] == ["one", "three"]
        assert [m["body"]["text"] for m in await bob.pull(conv, 0)] == ["one", "secret two", "three"]
        assert await _search(alice, "secret") == []
        assert await _search(bob, "secret") == ["secret two"]

        # Unread: a hidden message counts only while it would have counted.
        await alice.request("read", conv_id=conv, seq=sent[0]["seq"])
        assert (await alice.request("hide", conv_id=conv, seqs=[sent[0]["seq"]]))["unread"] == 1  # read already
        last = await alice.request("hide", conv_id=conv, seqs=[sent[2]["seq"], sent[1]["seq"]])
        assert (last["seqs"], last["unread"], last["total_unread"]) == ([sent[2]["seq"]], 0, 0)
        again = await alice.request("hide", conv_id=conv, seqs=[sent[2]["seq"]])  # a repeat changes nothing
        assert (again["seqs"], again["inbox_seq"]) == ([], 0)
        listed = (await alice.request("conversations"))["conversations"][0]
        assert listed["unread"] == 0 and listed["last_message"] is None  # the newest entry is hidden
        assert (await bob.request("conversations"))["conversations"][0]["last_message"]["seq"] == sent[2]["seq"]

        # A device offline meanwhile converges on sync: the hidden entries never reach it.
        await phone.connect()
        events, _groups = await phone.sync_all(0)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # still gap-free
        assert "secret" not in json.dumps(events)
        in_conv = [e for e in events if e["data"].get("conv_id") == conv]
        assert [(e["type"], e["data"].get("seqs")) for e in in_conv[:3]] == [("hidden", [s["seq"]]) for s in sent]
        assert {tuple(e["data"]["seqs"]) for e in in_conv if e["type"] == "hidden"} >= {
            (sent[1]["seq"],),
            (sent[0]["seq"],),
            (sent[2]["seq"],),
        }
        assert not any(e["type"] == "message" for e in in_conv)

        # Only what one may see.
        await _refused("not_member", carol.request("hide", conv_id=conv, seqs=[1]))
        await _refused("not_found", alice.request("hide", conv_id=conv, seqs=[99]))
        await _refused("bad_request", alice.request("hide", conv_id=conv, seqs=[]))
        r = await http.post(
            f"/api/v1/conversations/{conv}/hide", json={"seqs": [1]}, headers={"Authorization": f"Bearer {bob.token}"}
        )
        assert r.status == 200 and (await r.json())["seqs"] == [1]
        assert [m["seq"] for m in await bob.pull(conv, 0)] == [sent[1]["seq"], sent[2]["seq"]]
        for d in (alice, bob, carol, desk, phone):
            await d.close()
