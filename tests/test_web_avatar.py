"""Avatars in the web client (Playwright + Debian chromium; fixtures from tests/test_web.py):
a user picks a picture in Settings and the other side — its conversation list, the chat
header and the group's message authors — shows it at once, without a reload; removing it
brings the initials back there too."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import _ws_send, shot
from tests.test_web_features import conv_item, login_in_ui, png, users
from yim.node import NodeServer

pytestmark = pytest.mark.backends("sqlite")  # the browser shows what the protocol gives: one store is enough

browser = test_web.browser
contexts = test_web.contexts


async def test_a_new_avatar_reaches_the_other_side_without_a_reload(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "Alice"), ("bob", "Bob"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["alice"]["token"], people["bob"]["user_id"], ["hi Bob"])
        async with http.ws_connect("/ws") as ws:  # a group where Alice speaks too
            await ws.send_json({"op": "auth", "rid": 0, "token": people["alice"]["token"]})
            await ws.receive_json()
            await ws.send_json({"op": "group_create", "rid": 1, "name": "Team", "members": [people["bob"]["user_id"]]})
            group = (await ws.receive_json())["data"]["group"]["conv_id"]
            body = {"text": "hello team"}
            await ws.send_json(
                {"op": "send", "rid": 2, "conv_id": group, "kind": "text", "body": body, "client_msg_id": "g"}
            )
            assert (await ws.receive_json())["t"] == "ok"
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "Alice")
    await login_in_ui(bob, server.url, "bob", "Bob")
    direct = bob.locator('#panel-chats .conv[data-type="direct"]')
    await conv_item(bob, "Team").click()
    await expect(bob.locator(".msg.theirs .sender")).to_have_text(["Alice"])
    await direct.click()
    await expect(bob.locator(".chat-head .chat-title")).to_have_text("Alice")
    await expect(bob.locator(".avatar-photo")).to_have_count(0)

    # Alice picks a picture in Settings: her preview and her own avatar show it.
    await alice.get_by_role("link", name="Settings").click()
    await alice.locator(".avatar-file").set_input_files(
        files=[{"name": "me.png", "mimeType": "image/png", "buffer": png(400, 300)}]
    )
    picker = alice.get_by_role("group", name="Picture")
    await expect(picker.get_by_role("status")).to_have_text("Your picture is set. Others see it now.")
    await expect(picker.locator(".avatar-photo")).to_have_js_property("naturalWidth", 320)  # the thumbnail
    await expect(alice.locator(".me-avatar .avatar-photo")).to_be_visible()
    await shot(alice, "avatar-settings")

    # Bob's page, untouched: the list and the open chat's header show it, loaded.
    await expect(direct.locator(".avatar-photo")).to_have_js_property("naturalWidth", 320)
    await expect(bob.locator(".chat-head .avatar-photo")).to_be_visible()
    await conv_item(bob, "Team").click()
    await expect(bob.locator(".sender-line .avatar-photo")).to_be_visible()
    await shot(bob, "avatar-seen")

    # Removed: the initials come back on Bob's side.
    await picker.get_by_role("button", name="Remove picture").click()
    await expect(picker.get_by_role("status")).to_have_text("Your picture is removed. Others see your initials.")
    await expect(bob.locator(".avatar-photo")).to_have_count(0)
    await expect(direct.locator(".avatar")).to_have_text("A")
