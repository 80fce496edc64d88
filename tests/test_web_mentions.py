"""Mentions by typing and clickable links in the web client, in a real browser (Debian's
chromium, Playwright's async API; fixtures and helpers from tests/test_web.py): "@" and part
of a Chinese display name (or a username in fullwidth letters) offers the member, the keyboard
picks, and the message carries the ids; http(s) addresses in a text become links that open
in a new tab without an opener, other schemes stay text, and markup around them stays text.

Screenshots go to ``test-artifacts/``."""

# ruff: noqa: RUF001 - Chinese test texts use fullwidth punctuation, as real ones do

from __future__ import annotations

from typing import Any

import aiohttp
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import shot
from tests.test_web_features import conv_item, login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts


async def _history(server: NodeServer, token: str, conv_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.get(f"/api/v1/conversations/{conv_id}/messages", headers={"Authorization": "Bearer " + token})
        assert r.status == 200, await r.text()
        return [m for m in (await r.json())["messages"] if m["kind"] == "text"]


async def test_typing_at_offers_members_and_sends_their_ids(server: NodeServer, contexts: list[BrowserContext]) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("boyong", "鲍勇"), ("carol", "Carol"))
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.post(
            "/api/v1/groups",
            json={"name": "徒步群", "members": [people[u]["user_id"] for u in ("bob", "boyong", "carol")]},
            headers={"Authorization": "Bearer " + people["alice"]["token"]},
        )
        assert r.status == 201, await r.text()
        conv_id = (await r.json())["group"]["conv_id"]
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")
    await conv_item(alice, "徒步群").click()

    # "@鲍" offers both 鲍s, and only them; ↓ and ↑ move the choice, Enter picks it.
    box = alice.get_by_label("Message", exact=True)
    await box.press_sequentially("周六@鲍")
    picker = alice.get_by_role("listbox", name="Mention someone")
    options = picker.get_by_role("option")
    await expect(options.locator(".mention-label")).to_have_text(["鲍勃", "鲍勇"])
    await expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    await box.press("ArrowDown")
    await expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    await box.press("ArrowUp")
    await box.press("ArrowUp")  # wraps round to the last
    await expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    await box.press("ArrowDown")
    await expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    await shot(alice, "mention-picker-typed")
    await box.press("Enter")
    await expect(picker).to_be_hidden()
    await expect(box).to_have_value("周六@鲍勃 ")

    # A username in fullwidth capitals finds Carol; Esc closes the list without picking.
    await box.press_sequentially("和 @ＣＡＲ")
    await expect(options.locator(".mention-label")).to_have_text(["Carol"])
    await box.press("Escape")
    await expect(picker).to_be_hidden()
    await expect(box).to_have_value("周六@鲍勃 和 @ＣＡＲ")
    for _ in "@ＣＡＲ":
        await box.press("Backspace")
    await box.press_sequentially("@caro")
    await expect(options.locator(".mention-label")).to_have_text(["Carol"])
    # An Enter that an input method composes with is not a pick (nor a send).
    await box.dispatch_event("keydown", {"key": "Enter", "isComposing": True, "bubbles": True, "cancelable": True})
    await expect(box).to_have_value("周六@鲍勃 和 @caro")
    await expect(picker).to_be_visible()
    await box.press("Enter")
    await expect(box).to_have_value("周六@鲍勃 和 @Carol ")
    # An address is no mention: no list inside a link or for "bob@ex".
    await box.press_sequentially("去吗 http://127.0.0.1/@鲍")
    await expect(picker).to_be_hidden()
    await box.press_sequentially("勃 bob@ex")
    await expect(picker).to_be_hidden()
    await box.press("Enter")
    await expect(alice.locator(".msg.mine .status")).to_have_attribute("data-status", "sent")
    await expect(alice.locator(".msg.mine .mention")).to_have_text(["@鲍勃", "@Carol"])

    # The message carries the picked members' ids, and Bob sees it as mentioning him.
    sent = await _history(server, people["alice"]["token"], conv_id)
    assert [m["body"]["text"] for m in sent] == ["周六@鲍勃 和 @Carol 去吗 http://127.0.0.1/@鲍勃 bob@ex"]
    assert sent[0]["mentions"] == [people["bob"]["user_id"], people["carol"]["user_id"]]
    group = conv_item(bob, "徒步群")
    await expect(group.locator(".mention-mark")).to_be_visible()
    await group.click()
    mine = bob.locator(".msg.theirs.mentions-me")
    await expect(mine.locator(".text")).to_have_text("周六@鲍勃 和 @Carol 去吗 http://127.0.0.1/@鲍勃 bob@ex")
    await expect(mine.locator(".mention")).to_have_text(["@鲍勃", "@Carol"])
    # A mention's name inside an address is part of the link, not a mention.
    await expect(mine.locator("a")).to_have_text(["http://127.0.0.1/@鲍勃"])
    await shot(bob, "mention-typed-received")


async def test_links_are_clickable_and_safe(server: NodeServer, contexts: list[BrowserContext]) -> None:
    people = await users(server, ("dora", "朵拉"), ("eric", "埃里克"))
    page_url = f"{server.url}/healthz?from=chat&x=1"
    text = (
        f"看这个：{page_url}。"
        " 别点 javascript:alert(1) data:text/html,<b>x</b> ftp://127.0.0.1/f http://javascript:alert(1)"
        ' <img src=x onerror="window.__pwned=1"><a href="javascript:alert(2)">点我</a>'
        " 还有(https://en.wikipedia.org/wiki/Foo_(bar))"
    )
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.post(
            "/api/v1/messages",
            json={"to": people["dora"]["user_id"], "kind": "text", "body": {"text": text}, "client_msg_id": "l1"},
            headers={"Authorization": "Bearer " + people["eric"]["token"]},
        )
        assert r.status == 201, await r.text()
    dora = await contexts[0].new_page()
    await login_in_ui(dora, server.url, "dora", "朵拉")
    await conv_item(dora, "埃里克").click()

    body = dora.locator(".msg.theirs .text")
    await expect(body).to_have_text(text)  # every character shown as written: nothing became markup
    links = body.locator("a")
    await expect(links).to_have_count(2)
    await expect(links).to_have_text([page_url, "https://en.wikipedia.org/wiki/Foo_(bar)"])
    await expect(links.nth(0)).to_have_attribute("href", page_url)
    for i in range(2):
        await expect(links.nth(i)).to_have_attribute("rel", "noopener noreferrer")
        await expect(links.nth(i)).to_have_attribute("target", "_blank")
    assert await body.locator("img").count() == 0
    assert await dora.evaluate("window.__pwned") is None
    await shot(dora, "links")

    # A click opens the address in a new tab, which gets no handle on the chat.
    async with contexts[0].expect_page() as opened:
        await links.nth(0).click()
    tab = await opened.value
    await tab.wait_for_load_state()
    assert tab.url == page_url
    assert await tab.evaluate("window.opener") is None
    await tab.close()
