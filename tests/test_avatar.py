"""User avatars on both stores: ``profile_set`` sets and clears one (only an image its user
uploaded), every user object carries it, anyone signed in may read it while it is an
avatar (and only then), and a ``profile`` notice tells those who show the user — not the
members of big groups, not strangers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, login, make_users, until
from tests.sdk_helpers import PASSWORD, Chat
from tests.test_cluster import three_nodes  # noqa: F401 (the cluster fixture)
from tests.test_media import auth, devices, fetch, jpeg_bytes, uploaded
from yim.client import HttpApi
from yim.node import NodeServer
from yim.protocol.frames import Notice


def profiles(device: Device) -> list[dict[str, Any]]:
    return [n["data"] for n in device.notices if n["type"] == "profile"]


async def refused(device: Device, op: str, **fields: Any) -> str:
    try:
        await device.request(op, **fields)
    except ProtocolError as exc:
        return exc.code
    raise AssertionError(f"{op} was accepted")


async def test_avatar_set_shown_told_and_cleared(make_server: MakeServer) -> None:
    server = await make_server(group_write_fanout_max=3)
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol, dave, erin, frank = await devices(http, ["alice", "bob", "carol", "dave", "erin", "frank"])
        # Who shows alice: bob (a direct peer), carol (a small group), dave (a follower).
        # Not erin (a stranger), nor frank (only in a group over group_write_fanout_max).
        await alice.request("send", to=bob.user_id, kind="text", body={"text": "hi"}, client_msg_id="m1")
        await alice.request("group_create", name="small", members=[carol.user_id])
        await alice.request("group_create", name="big", members=[frank.user_id, erin.user_id, dave.user_id])
        await dave.request("follow", user_id=alice.user_id)

        photo = await uploaded(http, alice.login, jpeg_bytes(300, 200), kind="image", name="me.jpg")
        doc = await uploaded(http, alice.login, b"plain words\n" * 10, kind="file", name="cv.txt")
        theirs = await uploaded(http, bob.login, jpeg_bytes(64, 64, seed=1), kind="image")
        await bob.request(
            "send", to=alice.user_id, kind="image", body={"media_id": theirs["media_id"]}, client_msg_id="p"
        )

        # Only an image alice uploaded: bob's photo, visible to her in their chat, is not hers
        # to publish; a text file is no image; a bad ref is refused by the schema.
        assert await refused(alice, "profile_set", avatar=theirs["media_id"]) == "media_not_found"
        assert await refused(alice, "profile_set", avatar=doc["media_id"]) == "media_kind_mismatch"
        assert await refused(alice, "profile_set", avatar="99999999999999999999") == "media_not_found"
        assert await refused(alice, "profile_set", avatar="x1") == "bad_request"
        thumb = f"/api/v1/media/{photo['media_id']}/thumbnail"
        assert (await fetch(http, erin.login, thumb))[0] == 404  # not an avatar yet: private

        me = await alice.request("profile_set", avatar=photo["media_id"])
        assert me["avatar"] == photo["media_id"] and me["display_name"] == "alice"
        await until(lambda: bool(profiles(bob) and profiles(carol) and profiles(dave)))
        for watcher in (bob, carol, dave):
            assert profiles(watcher) == [me]
        assert profiles(erin) == profiles(frank) == [] and profiles(alice) == []  # the asker has the reply

        # Every user object carries it: users, /users/{id}, /users?username=, /me, friends'
        # and conversations' peers.
        assert (await erin.request("users", user_ids=[alice.user_id]))["users"][0]["avatar"] == photo["media_id"]
        for path in (f"/api/v1/users/{alice.user_id}", "/api/v1/users?username=ALICE"):
            status, body, _ = await fetch(http, erin.login, path)
            assert status == 200 and json.loads(body)["avatar"] == photo["media_id"]
        status, body, _ = await fetch(http, alice.login, "/api/v1/me")
        assert json.loads(body)["avatar"] == photo["media_id"]
        convs = (await bob.request("conversations"))["conversations"]
        assert [c["peer"]["avatar"] for c in convs if c["type"] == "direct"] == [photo["media_id"]]
        assert (await bob.request("users", user_ids=[bob.user_id]))["users"][0]["avatar"] == ""

        # Anyone signed in reads it now (thumbnail and original), but may not send it.
        status, data, headers = await fetch(http, erin.login, thumb)
        assert status == 200 and headers["Content-Type"] == "image/webp" and data[:4] == b"RIFF"
        assert (await fetch(http, frank.login, f"/api/v1/media/{photo['media_id']}"))[0] == 200
        assert (await http.get(thumb)).status == 401
        body = {"media_id": photo["media_id"]}
        assert await refused(erin, "send", to=bob.user_id, kind="image", body=body, client_msg_id="e1") == (
            "media_not_found"
        )

        # A name change alone keeps the avatar (HTTP, the same op); "" clears it, and the
        # media is private again.
        r = await http.patch("/api/v1/me", json={"display_name": "Alice A."}, headers=auth(alice.login))
        assert r.status == 200 and (await r.json())["avatar"] == photo["media_id"]
        await until(lambda: len(profiles(carol)) == 2)
        assert profiles(carol)[1]["display_name"] == "Alice A."
        cleared = await alice.request("profile_set", avatar="")
        assert cleared["avatar"] == "" and cleared["display_name"] == "Alice A."
        await until(lambda: len(profiles(bob)) == 3)
        assert profiles(bob)[2]["avatar"] == "" and profiles(erin) == []
        assert (await fetch(http, erin.login, thumb))[0] == 404
        assert (await fetch(http, alice.login, thumb))[0] == 200  # still hers
        # Setting what is already set changes nothing and tells no one.
        assert (await alice.request("profile_set", avatar=""))["avatar"] == ""
        await alice.request("ping")
        assert len(profiles(bob)) == 3
        for d in (alice, bob, carol, dave, erin, frank):
            await d.close()


@pytest.mark.backends("sqlite")  # the SDK, not the store
async def test_sdk_uploads_sets_and_hears_of_an_avatar(server: NodeServer) -> None:
    async with Chat(server.url) as chat, HttpApi(server.url) as alice:
        await chat.user("alice")
        bob_user = await chat.user("bob")
        await alice.login("alice", PASSWORD, "a1")
        bob = await chat.client("bob", "b1")
        await alice.send(to=bob_user.user_id, body={"text": "hi"})  # bob now shows alice
        media = await alice.upload(jpeg_bytes(120, 90), kind="image", name="me.jpg")
        assert media.kind == "image" and media.thumbnail
        me = await alice.set_avatar(media.media_id)
        assert me.avatar == media.media_id and (await alice.me()).avatar == media.media_id
        async with asyncio.timeout(10):
            while True:
                item = await bob.next_event()
                if isinstance(item, Notice) and item.type == "profile":
                    break
        assert item.data == me  # a typed User
        assert (await alice.set_avatar("")).avatar == ""


async def test_a_profile_notice_reaches_devices_on_other_nodes(three_nodes: list[NodeServer]) -> None:  # noqa: F811
    n0, n1, n2 = three_nodes
    async with (
        aiohttp.ClientSession(n0.url) as h0,
        aiohttp.ClientSession(n1.url) as h1,
        aiohttp.ClientSession(n2.url) as h2,
        asyncio.timeout(60),
    ):
        a_login, b_login, c_login = await make_users(h0, ["alice", "bob", "carol"])
        alice, bob, carol = Device(h0, a_login), Device(h1, b_login), Device(h2, c_login)
        alice_desk = Device(h2, await login(h2, "alice", "desk"))  # alice's second device, on node 2
        for d in (alice, bob, carol, alice_desk):
            await d.connect()
        await alice.request("group_create", name="三个节点", members=[bob.user_id, carol.user_id])
        photo = await uploaded(h0, a_login, jpeg_bytes(80, 80), kind="image")
        me = await alice.request("profile_set", avatar=photo["media_id"])
        await until(lambda: all(profiles(d) == [me] for d in (bob, carol, alice_desk)), timeout=20)
        # carol may read it (blobs are per node folder here: read where the bytes are)
        status, _, headers = await fetch(h0, c_login, f"/api/v1/media/{photo['media_id']}/thumbnail")
        assert status == 200 and headers["Content-Type"] == "image/webp"
        for d in (alice, bob, carol, alice_desk):
            await d.close()
