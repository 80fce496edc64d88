"""The bundled web client in a real browser (Debian's chromium driven by Playwright's async
API): two people in two browser contexts register, chat live, see unread badges and read
marks, reload, lose the network and catch up, and page back through a long history.

Screenshots of the main screens go to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from yim.node import NodeServer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("YIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 760}
PASSWORD = "correct horse 42"


def _have_chromium() -> bool:
    return Path(CHROMIUM).is_file()


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not _have_chromium():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium "
            "(apt-get install chromium fonts-wqy-microhei), or YIM_CHROMIUM=/path/to/chromium"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture
async def contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    """Fresh browser profiles (own localStorage, own device id); closed after the test."""
    made: list[BrowserContext] = []
    errors: list[str] = []

    async def ctx() -> BrowserContext:
        c = await browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="Asia/Shanghai")
        c.set_default_timeout(8000)
        c.on("weberror", lambda e: errors.append(str(e.error)))
        c.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        made.append(c)
        return c

    yield [await ctx(), await ctx()]
    for c in made:
        await c.close()
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"))


async def register_in_ui(page: Page, url: str, username: str, display_name: str) -> None:
    await page.goto(url)
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Display name (optional)").fill(display_name)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator(".me-name")).to_have_text(display_name)


async def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


def statuses(page: Page, status: str) -> Locator:
    """The delivery marks of one's own messages in the open chat: sending, sent, read, failed."""
    return page.locator(f'.msg.mine .status[data-status="{status}"]')


async def glyphs_differ(page: Page, a: str, b: str) -> bool:
    """Draw two characters in the page's message font: missing glyphs ("tofu") draw the
    same box for both, real glyphs differ."""
    return await page.evaluate(
        """([a, b]) => {
            const font = getComputedStyle(document.querySelector('.msg .text')).fontFamily;
            const draw = (ch) => {
                const c = document.createElement('canvas'); c.width = c.height = 40;
                const g = c.getContext('2d'); g.font = `32px ${font}`; g.fillText(ch, 2, 32);
                return g.getImageData(0, 0, 40, 40).data.join(',');
            };
            return draw(a) !== draw(b);
        }""",
        [a, b],
    )


async def test_two_people_chat_in_the_browser(server: NodeServer, contexts: list[BrowserContext]) -> None:
    alice_ctx, bob_ctx = contexts
    alice, bob = await alice_ctx.new_page(), await bob_ctx.new_page()

    # The page and its assets come from the node itself, with validators for revalidation.
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.get("/static/js/app.js")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"]
        r2 = await http.get("/static/js/app.js", headers={"If-None-Match": r.headers["ETag"]})
        assert r2.status == 304
        for bad in ("/static/..%2F__init__.py", "/static/__init__.py", "/static/.hidden.js", "/static/js/nope.js"):
            assert (await http.get(bad)).status == 404, bad

    # Register and log in through the UI.
    await alice.goto(server.url)
    await expect(alice.get_by_role("button", name="Log in")).to_be_visible()
    await shot(alice, "login")
    await register_in_ui(alice, server.url, "alice", "爱丽丝")
    await register_in_ui(bob, server.url, "bob", "鲍勃")
    device = await alice.evaluate("localStorage.getItem('yim.device_id')")
    assert device and device.startswith("web-")

    # Alice starts a one-to-one chat by username and writes in Chinese.
    await alice.get_by_label("Username to chat with").fill("bob")
    await alice.get_by_role("button", name="Chat", exact=True).click()
    await expect(alice.locator(".chat-title")).to_have_text("鲍勃")
    first = "你好，鲍勃！今天下午三点开会吗？"  # noqa: RUF001 - full-width punctuation, as people type it
    await send(alice, first)
    await expect(alice.locator(".msg.mine .status")).to_have_attribute("data-status", "sent")
    await expect(alice).to_have_url(re.compile(r"#/c/\d+$"))

    # Bob sees it live, with unread badges, before opening the chat.
    conv = bob.locator(".conv", has_text="爱丽丝")
    await expect(conv.locator(".conv-preview")).to_have_text(first)
    await expect(conv.locator(".badge")).to_have_text("1")
    await expect(bob.locator(".total-unread")).to_have_text("1")

    # An emoji from the picker (a lone emoji is sent as an `emoji` message).
    await alice.get_by_role("button", name="Emoji").click()
    await alice.get_by_role("button", name="😀").click()
    await alice.get_by_label("Message", exact=True).press("Enter")
    await expect(alice.locator(".msg.mine.emoji-only .text")).to_have_text("😀")
    await expect(conv.locator(".badge")).to_have_text("2")
    await expect(bob.locator(".total-unread")).to_have_text("2")
    assert await bob.title() == "(2) yim"
    await shot(bob, "unread")

    # Bob opens the chat: it is marked read, and Alice sees read marks on her messages.
    await conv.click()
    await expect(bob.locator(".msg.theirs .text")).to_have_text([first, "😀"])
    await expect(conv.locator(".badge")).to_have_count(0)
    await expect(bob.locator(".total-unread")).to_be_hidden()
    await expect(statuses(alice, "read")).to_have_count(2)

    # Bob answers; Alice gets it live.
    reply = "好的，三点见。会议室在 3 楼 😀"  # noqa: RUF001
    await send(bob, reply)
    await expect(alice.locator(".msg.theirs .text")).to_have_text([reply])
    await expect(bob.locator(".msg.mine .status")).to_have_attribute("data-status", "read")
    assert await glyphs_differ(alice, "你", "好"), "CJK text renders as tofu: install fonts-wqy-microhei"
    await shot(alice, "chat")

    # Reload keeps the session, the open chat and its history; nothing is unread.
    await bob.reload()
    await expect(bob.locator(".chat-title")).to_have_text("爱丽丝")
    await expect(bob.locator(".msg .text")).to_have_text([first, "😀", reply])
    await expect(bob.locator(".total-unread")).to_be_hidden()
    await expect(bob.locator(".msg.mine .status")).to_have_attribute("data-status", "read")

    # The network drops: Bob's page notices, Alice keeps writing, Bob catches up exactly once.
    await bob_ctx.set_offline(True)
    await expect(bob.locator(".conn-banner")).to_contain_text("Offline")
    missed = ["第一条：网络断了", "second while offline", "第三条 ✓"]  # noqa: RUF001
    for text in missed:
        await send(alice, text)
    await expect(statuses(alice, "sent")).to_have_count(3)
    await expect(statuses(alice, "read")).to_have_count(2)
    await shot(bob, "offline")
    await bob_ctx.set_offline(False)
    await expect(bob.locator(".msg .text")).to_have_text([first, "😀", reply, *missed])
    await expect(bob.locator(".conn-banner")).to_be_hidden()
    await expect(statuses(alice, "read")).to_have_count(5)

    # The server drops the connection (as a dying node would): reconnect with backoff and
    # sync from the cursor; a message sent meanwhile arrives once.
    bob_id = int(await bob.evaluate("window.yim.store.me.user_id"))
    dropped = [c for c in server.node.hub.connections() if c.user_id == bob_id]
    assert len(dropped) == 1
    dropped[0].close(1012, "service restart")
    await send(alice, "after the restart")
    await expect(bob.locator(".msg .text")).to_have_text([first, "😀", reply, *missed, "after the restart"])
    await asyncio.sleep(0.3)  # a late duplicate push would show up here
    await expect(bob.locator(".msg")).to_have_count(7)
    ids = await bob.locator(".msg").evaluate_all("els => els.map(e => e.dataset.msgId)")
    assert len(set(ids)) == 7
    assert await alice.locator(".total-unread").is_hidden()

    # A third person writes to Alice: a second conversation, on top, with its badge.
    async with aiohttp.ClientSession(server.url) as http:
        carol = await _http_login(http, "carol", "陈晓")
        alice_id = await alice.evaluate("window.yim.store.me.user_id")
        await _ws_send(http, carol["token"], alice_id, ["周五的发布准备好了吗？"])  # noqa: RUF001
    await expect(alice.locator(".conv .conv-name")).to_have_text(["陈晓", "鲍勃"])
    await expect(alice.locator(".conv", has_text="陈晓").locator(".badge")).to_have_text("1")
    await expect(alice.locator(".total-unread")).to_have_text("1")
    await shot(alice, "overview")


async def _http_login(http: aiohttp.ClientSession, name: str, display_name: str = "") -> dict[str, Any]:
    r = await http.post("/api/v1/accounts", json={"username": name, "password": PASSWORD, "display_name": display_name})
    assert r.status == 201, await r.text()
    r = await http.post(
        "/api/v1/sessions",
        json={"username": name, "password": PASSWORD, "device_id": "script", "platform": "desktop"},
    )
    assert r.status == 201, await r.text()
    return await r.json()


async def _ws_send(http: aiohttp.ClientSession, token: str, to: str, texts: list[str]) -> None:
    """Send texts over the raw WebSocket protocol: pipelined, one reply per request."""
    async with http.ws_connect("/ws") as ws:
        await ws.send_json({"op": "auth", "rid": 0, "token": token})
        assert (await ws.receive_json())["t"] == "ok"
        for i, text in enumerate(texts, 1):
            frame = {"op": "send", "rid": i, "to": to, "kind": "text", "body": {"text": text}, "client_msg_id": f"m{i}"}
            await ws.send_json(frame)
        replies = [await ws.receive_json() for _ in texts]
        assert all(r["t"] == "ok" for r in replies), replies


async def test_history_pages_load_when_scrolling_up(server: NodeServer, contexts: list[BrowserContext]) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        carol = await _http_login(http, "carol")
        dave = await _http_login(http, "dave")
        await _ws_send(http, carol["token"], dave["user_id"], [f"第 {i} 条消息" for i in range(1, 121)])

    page = await contexts[0].new_page()
    await page.goto(server.url)
    await page.get_by_label("Username").fill("dave")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    conv = page.locator(".conv", has_text="carol")
    await expect(conv.locator(".badge")).to_have_text("99+")
    await expect(page.locator(".total-unread")).to_have_text("99+")
    await conv.click()

    # The newest page first, scrolled to the bottom; scrolling up loads older pages.
    msgs = page.locator(".msg .text")
    await expect(msgs.last).to_have_text("第 120 条消息")
    await expect(msgs).to_have_count(50)
    await expect(page.locator(".total-unread")).to_be_hidden()
    scroller = page.locator(".messages")
    for expected in (100, 120):
        await scroller.evaluate("el => { el.scrollTop = 0; }")
        await expect(msgs).to_have_count(expected)
    await expect(msgs.first).to_have_text("第 1 条消息")
    await expect(page.locator(".history-top")).to_have_text("This is the beginning of the conversation.")
    # Older pages came in above without moving the view to the top of the new content.
    assert await scroller.evaluate("el => el.scrollTop") > 0
    await shot(page, "history")

    # Logging out ends the session on the server and forgets it in the browser.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("button", name="Log in")).to_be_visible()
    await expect(page.locator(".form-error")).to_be_hidden()
    assert await page.evaluate("localStorage.getItem('yim.session')") is None
    await page.reload()
    await expect(page.get_by_role("button", name="Log in")).to_be_visible()
