"""Replies, forwards and custom messages in the web client, in a real browser (Debian's
chromium, Playwright's async API; fixtures and helpers from tests/test_web.py): reply and
forward from a message's menu, the quote above the reply (and shown recalled once the
quoted message is), a custom message shown by its text fallback.

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import aiohttp
from playwright.async_api import BrowserContext, Page, expect

from tests import test_web
from tests.test_web import _ws_send, shot
from tests.test_web_features import conv_item, login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts


async def _menu(page: Page, text: str, item: str, which: str = ".msg") -> None:
    """Open the menu of the (last) message showing ``text`` and choose ``item``."""
    msg = page.locator(which, has_text=text).last
    await msg.locator(".bubble").hover()
    await msg.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name=item).click()


async def test_reply_forward_and_custom_in_the_browser(server: NodeServer, contexts: list[BrowserContext]) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("carol", "陈晓"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["carol"]["token"], people["alice"]["user_id"], ["在吗"])
        await _ws_send(http, people["bob"]["token"], people["alice"]["user_id"], ["明天下午三点见"])
        r = await http.post(
            "/api/v1/messages",
            json={
                "to": people["alice"]["user_id"],
                "kind": "custom",
                "body": {"type": "order", "data": {"id": 42}, "text": "订单 #42 已付款"},
                "client_msg_id": "order-42",
            },
            headers={"Authorization": "Bearer " + people["bob"]["token"]},
        )
        assert r.status == 201, await r.text()
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")

    # The custom message is shown by its text fallback, in the list and in the chat.
    await expect(conv_item(alice, "鲍勃").locator(".conv-preview")).to_have_text("订单 #42 已付款")
    await conv_item(alice, "鲍勃").click()
    await expect(alice.locator(".msg.theirs .text")).to_have_text(["明天下午三点见", "订单 #42 已付款"])

    # Reply from the message's menu: the bar names what is answered; the quote sits above the reply.
    await _menu(alice, "明天下午三点见", "Reply")
    await expect(alice.locator(".reply-bar")).to_contain_text("Replying to 鲍勃: 明天下午三点见")
    box = alice.get_by_label("Message", exact=True)
    await box.fill("好的，不见不散")  # noqa: RUF001
    await box.press("Enter")
    await expect(alice.locator(".reply-bar")).to_be_hidden()
    mine = alice.locator(".msg.mine")
    await expect(mine.locator(".quote-sender")).to_have_text("鲍勃")
    await expect(mine.locator(".quote-text")).to_have_text("明天下午三点见")
    await expect(mine.locator(".text")).to_have_text("好的，不见不散")  # noqa: RUF001
    await conv_item(bob, "爱丽丝").click()
    theirs = bob.locator(".msg.theirs")
    await expect(theirs.locator(".quote-sender")).to_have_text("You")
    await expect(theirs.locator(".quote-text")).to_have_text("明天下午三点见")
    await shot(bob, "reply-quote")

    # Bob recalls the quoted message: the quote on both sides shows it recalled.
    await _menu(bob, "明天下午三点见", "Recall", ".msg.mine")
    await bob.get_by_role("dialog", name="Recall this message?").get_by_role("button", name="Recall").click()
    await expect(theirs.locator(".quote-text")).to_have_text("Message recalled")
    await expect(mine.locator(".quote-text")).to_have_text("Message recalled")

    # Alice forwards the order to Carol's chat; the copy says from whom.
    await _menu(alice, "订单 #42 已付款", "Forward")
    dialog = alice.get_by_role("dialog", name="Forward to")
    await dialog.get_by_label("陈晓").check()
    await dialog.get_by_role("button", name="Forward").click()
    await expect(dialog).to_be_hidden()
    await conv_item(alice, "陈晓").click()
    copy = alice.locator(".msg.mine", has_text="订单 #42 已付款")
    await expect(copy.locator(".forwarded")).to_have_text("Forwarded from 鲍勃")
    await shot(alice, "forwarded")
