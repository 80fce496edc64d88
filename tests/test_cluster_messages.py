"""Edit, delete-for-me, reactions and pins in cluster mode (three nodes on PostgreSQL +
Redis): each new kind of entry or event reaches the devices it is for on the other nodes
live, as messages do (docs/protocol.md §6.9a, §6.9b, §6.15, §6.18)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.rawclient import Device, login, make_users, until
from tests.test_cluster import three_nodes  # noqa: F401 (the cluster fixture)
from yim.node import NodeServer


def _entries(device: Device, conv_id: str) -> list[dict[str, Any]]:
    """Timeline entries pushed to a device for a conversation (write fan-out: inbox events)."""
    return [e["data"] for e in device.events if e["type"] == "message" and e["data"]["conv_id"] == conv_id]


async def test_edit_hide_react_and_pin_reach_devices_on_other_nodes(three_nodes: list[NodeServer]) -> None:  # noqa: F811
    n0, n1, n2 = three_nodes
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(90),
    ):
        a_login, b_login, c_login = await make_users(h0, ["alice", "bob", "carol"])
        alice, bob, carol = Device(h0, a_login), Device(h1, b_login), Device(h2, c_login)
        alice_desk = Device(h2, await login(h2, "alice", "desk"))  # alice's second device, on node 2
        for d in (alice, bob, carol, alice_desk):
            await d.connect()
        group = await alice.request("group_create", name="跨节点", members=[bob.user_id, carol.user_id])
        gid = group["group"]["conv_id"]
        sent = await alice.request("send", conv_id=gid, kind="text", body={"text": "周五开会"}, client_msg_id="m1")
        seq = sent["seq"]

        # an edit on node 0: the entry with the new text reaches bob on node 1 and carol on node 2
        edit = await alice.request("edit", conv_id=gid, seq=seq, text="周六开会")
        for device in (bob, carol, alice_desk):
            await until(lambda d=device: any(m["kind"] == "edit" for m in _entries(d, gid)), timeout=20)
            entry = next(m for m in _entries(device, gid) if m["kind"] == "edit")
            assert entry["seq"] == edit["edit_seq"] and entry["body"]["body"]["text"] == "周六开会"

        # a reaction on node 2 reaches alice on node 0 (write fan-out: an inbox event)
        await carol.request("react", conv_id=gid, seq=seq, emoji="👍")
        await until(lambda: any(e["type"] == "reaction" for e in alice.events), timeout=20)
        reaction = next(e["data"] for e in alice.events if e["type"] == "reaction")
        assert reaction["user_id"] == carol.user_id and reaction["counts"] == [{"emoji": "👍", "count": 1}]

        # a pin by the owner on node 0: the system entry reaches every member on the other nodes
        await alice.request("pin", conv_id=gid, seq=seq)
        for device in (bob, carol):
            await until(
                lambda d=device: any(
                    m["kind"] == "system" and m["body"].get("event") == "pinned" for m in _entries(d, gid)
                ),
                timeout=20,
            )

        # delete for me on node 0: only alice's other device (node 2) is told, nobody else
        await alice.request("hide", conv_id=gid, seqs=[seq])
        await until(lambda: any(e["type"] == "hidden" for e in alice_desk.events), timeout=20)
        hidden = next(e["data"] for e in alice_desk.events if e["type"] == "hidden")
        assert hidden["conv_id"] == gid and seq in hidden["seqs"]
        await asyncio.sleep(0.5)
        assert not any(e["type"] == "hidden" for d in (bob, carol) for e in d.events)
        # and the others still see the message, edited, with its reaction
        history = await bob.pull(gid, 0)
        message = next(m for m in history if m["seq"] == seq)
        assert message["body"]["text"] == "周六开会" and message["reactions"][0]["count"] == 1
        for d in (alice, bob, carol, alice_desk):
            await d.close()
