"""Edit in the web client, in a real browser (Debian's chromium, Playwright's async API;
fixtures and helpers from tests/test_web.py): one's own text message is edited from its
menu and the other side sees the new text, marked edited, live.

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import aiohttp
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import _ws_send, shot
from tests.test_web_features import conv_item, login_in_ui, users
from tests.test_web_reply import _menu
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts


async def test_edit_in_the_browser_seen_live(server: NodeServer, contexts: list[BrowserContext]) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["bob"]["token"], people["alice"]["user_id"], ["早上好"])
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")
    await conv_item(alice, "鲍勃").click()
    box = alice.get_by_label("Message", exact=True)
    await box.fill("明天见，下午三点")  # noqa: RUF001
    await box.press("Enter")
    await conv_item(bob, "爱丽丝").click()
    theirs = bob.locator(".msg.theirs", has_text="明天见")
    await expect(theirs.locator(".text")).to_have_text("明天见，下午三点")  # noqa: RUF001

    # Alice edits her message from its menu; Bob, in the open chat, sees the new text live.
    await _menu(alice, "明天见", "Edit", ".msg.mine")
    dialog = alice.get_by_role("dialog", name="Edit message")
    await dialog.get_by_label("New text").fill("明天见，下午四点")  # noqa: RUF001
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    mine = alice.locator(".msg.mine", has_text="明天见")
    await expect(mine.locator(".text")).to_have_text("明天见，下午四点")  # noqa: RUF001
    await expect(mine.locator(".edited")).to_have_text("edited")
    await expect(theirs.locator(".text")).to_have_text("明天见，下午四点")  # noqa: RUF001
    await expect(theirs.locator(".edited")).to_have_text("edited")
    await shot(bob, "edit-live")
    # Only one's own text messages can be edited.
    other = alice.locator(".msg.theirs", has_text="早上好")
    await other.locator(".bubble").hover()
    await other.get_by_role("button", name="Message actions").click()
    await expect(alice.get_by_role("menuitem", name="Reply")).to_be_visible()
    await expect(alice.get_by_role("menuitem", name="Edit")).to_have_count(0)


async def test_delete_for_me_in_the_browser_reaches_my_other_device(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    """Alice is signed in on two browsers; she deletes a message for herself on one, and the
    other drops it live."""
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["bob"]["token"], people["alice"]["user_id"], ["你好", "这条删掉", "再见"])
    desk, laptop = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(desk, server.url, "alice", "爱丽丝")
    await login_in_ui(laptop, server.url, "alice", "爱丽丝")
    for page in (desk, laptop):
        await conv_item(page, "鲍勃").click()
        await expect(page.locator(".msg.theirs .text")).to_have_text(["你好", "这条删掉", "再见"])
    await _menu(desk, "这条删掉", "Delete for me", ".msg.theirs")
    await desk.get_by_role("dialog", name="Delete for you?").get_by_role("button", name="Delete").click()
    for page in (desk, laptop):
        await expect(page.locator(".msg.theirs .text")).to_have_text(["你好", "再见"])
    await laptop.reload()
    await conv_item(laptop, "鲍勃").click()
    await expect(laptop.locator(".msg.theirs .text")).to_have_text(["你好", "再见"])
