"""The web client finds a shop by its name (`shop_search`): a customer types part of the
name, picks the shop, the header names it from the first paint, and the agent gets the
message. In a real browser (fixtures and helpers from tests/test_web.py)."""

from __future__ import annotations

import re

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import send, shot
from tests.test_web_features import conv_item, login_in_ui, users
from yim.node import NodeServer

pytestmark = pytest.mark.backends("sqlite")  # the page shows what the protocol gives: one store is enough

browser = test_web.browser
contexts = test_web.contexts

# Every text the chat header's title shows, recorded from before the shop is picked.
WATCH_TITLES = """() => {
  window.titlesSeen = [];
  new MutationObserver(() => {
    const el = document.querySelector(".chat-title");
    if (el && el.textContent) window.titlesSeen.push(el.textContent);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


async def test_customer_finds_a_shop_by_name_and_writes_to_it(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("owner", "店主"), ("amy", "Amy"), ("carl", "Carl"))
    async with aiohttp.ClientSession(server.url) as http:
        owner = {"Authorization": f"Bearer {people['owner']['token']}"}
        shop_ids = {}
        for name in ("小米旗舰店", "小米之家"):
            async with http.post("/api/v1/shops", json={"name": name}, headers=owner) as r:
                shop_ids[name] = (await r.json())["shop_id"]
            path = f"/api/v1/shops/{shop_ids[name]}/agents/{people['amy']['user_id']}"
            async with http.put(path, json={"capacity": 5}, headers=owner) as r:
                assert r.status == 200, await r.text()

    amy, carl = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(amy, server.url, "amy", "Amy")
    await login_in_ui(carl, server.url, "carl", "Carl")
    await carl.evaluate(WATCH_TITLES)

    await carl.get_by_role("button", name="New group or shop chat").click()
    await carl.get_by_role("menuitem", name="Chat with a shop").click()
    dialog = carl.get_by_role("dialog", name="Chat with a shop")
    field = dialog.get_by_label("Shop id or name")
    await field.press_sequentially("小米")  # as typed: each key searches again
    found = dialog.locator(".shop-result")
    await expect(found).to_have_text(["小米之家", "小米旗舰店"])  # both start with it; the shorter first
    await expect(dialog.locator(".dialog-note")).to_have_text("2 shops found")
    await field.fill("旗舰")
    await expect(found).to_have_text(["小米旗舰店"])
    await shot(carl, "shop-search")
    await found.first.click()

    await expect(dialog).to_be_hidden()
    await expect(carl).to_have_url(re.compile(rf"#/s/{shop_ids['小米旗舰店']}$"))
    await expect(carl.locator(".chat-title")).to_have_text("小米旗舰店")
    await send(carl, "你好, 有货吗")
    await expect(carl).to_have_url(re.compile(r"#/c/\d+$"))
    await expect(carl.locator(".chat-title")).to_have_text("小米旗舰店")
    await expect(conv_item(carl, "小米旗舰店")).to_be_visible()  # the sidebar row is named too
    # Never a placeholder: the header showed the shop's name from its first paint on.
    assert set(await carl.evaluate("window.titlesSeen")) == {"小米旗舰店"}

    # The agent gets the session and the message.
    row = conv_item(amy, "小米旗舰店")
    await expect(row).to_be_visible()
    await row.click()
    await expect(amy.locator(".msg", has_text="你好, 有货吗")).to_be_visible()
