"""Reactions and pins in the web client, in a real browser (fixtures and helpers from
tests/test_web.py): one side reacts and pins, the other sees it live; reactions leave the
conversation list alone."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import _http_login, _ws_send, shot
from tests.test_web_features import conv_item, login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts
pytestmark = pytest.mark.backends("sqlite")  # the browser shows what the protocol gives: one store is enough


async def test_react_and_pin_seen_live_and_the_list_keeps_its_order(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["bob"]["token"], people["alice"]["user_id"], ["周五聚餐吗", "七点老地方"])
        carol = await _http_login(http, "carol", "陈晓")
        await _ws_send(http, carol["token"], people["alice"]["user_id"], ["明天见"])  # the newest conversation
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")
    chats = alice.locator("#panel-chats .conv")
    await expect(chats.locator(".conv-name")).to_have_text(["陈晓", "鲍勃"])

    await conv_item(bob, "爱丽丝").click()
    await expect(bob.locator(".msg.mine .text")).to_have_text(["周五聚餐吗", "七点老地方"])

    # Bob reacts to his first message; Alice, who has not opened the chat, keeps her list as it was.
    first = bob.locator(".msg.mine").first
    await first.hover()
    await first.get_by_role("button", name="React").click()
    await bob.get_by_role("menuitem", name="👍").click()
    await expect(first.locator(".reaction.me")).to_have_text("👍1")
    await expect(chats.locator(".conv-name")).to_have_text(["陈晓", "鲍勃"])
    await expect(conv_item(alice, "鲍勃").locator(".badge")).to_have_text("2")

    # Alice opens it: the reaction is there; she adds hers by clicking the chip, Bob sees 2.
    await conv_item(alice, "鲍勃").click()
    theirs = alice.locator(".msg.theirs").first
    await expect(theirs.locator(".reaction")).to_have_text("👍1")
    await theirs.locator(".reaction").click()
    await expect(theirs.locator(".reaction.me")).to_have_text("👍2")
    await expect(first.locator(".reaction")).to_have_text("👍2")
    await expect(first.locator(".reaction")).to_have_attribute("aria-pressed", "true")

    # Alice pins Bob's second message: both see the system note and the pinned line.
    second = alice.locator(".msg.theirs").nth(1)
    await second.hover()
    await second.get_by_role("button", name="React").click()
    await alice.get_by_role("menuitem", name="Pin").click()
    await expect(alice.locator(".pinned-line")).to_have_text("📌 七点老地方")
    await expect(bob.locator(".pinned-line")).to_have_text("📌 七点老地方")
    await expect(bob.locator(".system-note")).to_have_text(["爱丽丝 pinned a message"])
    await shot(bob, "reactions-and-pin")

    # Bob takes his reaction back: Alice sees 1, no longer shared.
    await first.locator(".reaction").click()
    await expect(theirs.locator(".reaction.me")).to_have_text("👍1")
    await expect(first.locator(".reaction")).to_have_attribute("aria-pressed", "false")
