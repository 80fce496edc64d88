"""The web client's desktop notifications while its tab is hidden, in a real browser
(Debian's chromium, Playwright's async API; fixtures and helpers from tests/test_web.py):
permission asked on the first send, a notification per conversation for others' messages
only while hidden, none while shown."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
from playwright.async_api import BrowserContext, Page, expect

from tests import test_web
from tests.test_web import _http_login, send
from tests.test_web_features import login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts

SHOWN = "[...window.yim.notifier.shown.values()].map((n) => ({title: n.title, body: n.body, tag: n.tag}))"


async def ws_send(http: aiohttp.ClientSession, token: str, to: str, texts: list[str]) -> None:
    """Send texts over the raw protocol, each with a fresh client_msg_id; events the sender
    is pushed meanwhile are skipped."""

    async def reply(rid: int) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if frame["t"] in ("ok", "err") and frame["rid"] == rid:
                return frame

    async with http.ws_connect("/ws") as ws:
        await ws.send_json({"op": "auth", "rid": 0, "token": token})
        assert (await reply(0))["t"] == "ok"
        for i, text in enumerate(texts, 1):
            cid = f"{text}-{secrets.token_hex(4)}"
            frame = {"op": "send", "rid": i, "to": to, "kind": "text", "body": {"text": text}, "client_msg_id": cid}
            await ws.send_json(frame)
            assert (await reply(i))["t"] == "ok"


async def set_hidden(page: Page, hidden: bool) -> None:
    """What the browser reports when the window is minimised or another tab is in front
    (headless chromium has no window to minimise)."""
    state = "hidden" if hidden else "visible"
    await page.evaluate(
        "(s) => { Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => s});"
        " document.dispatchEvent(new Event('visibilitychange')); }",
        state,
    )


async def shown(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(SHOWN)
    return result


async def test_notifications_while_hidden(server: NodeServer, contexts: list[BrowserContext]) -> None:
    ctx = contexts[0]
    made = await users(server, ("nora", "Nora"), ("omar", "Omar"))
    page = await ctx.new_page()
    await login_in_ui(page, server.url, "nora", "Nora")
    assert await page.evaluate("Notification.permission") == "default"  # not asked on load

    async with aiohttp.ClientSession(server.url) as http:
        await ws_send(http, made["omar"]["token"], made["nora"]["user_id"], ["hi Nora"])
        conv = page.locator("#panel-chats .conv", has_text="Omar")
        await conv.click()
        await expect(page.locator(".msg", has_text="hi Nora")).to_be_visible()
        await send(page, "hello Omar")
        await expect(page.locator(".msg.mine", has_text="hello Omar")).to_be_visible()
        assert await page.evaluate("window.yim.notifier.asked") is True  # the first send asks
        await ctx.grant_permissions(["notifications"], origin=server.url)  # as a user clicking "Allow"

        await ws_send(http, made["omar"]["token"], made["nora"]["user_id"], ["while shown"])
        await expect(page.locator(".msg", has_text="while shown")).to_be_visible()
        assert await shown(page) == []  # the tab is in front: nothing pops up

        await set_hidden(page, True)
        omar = await _http_login(http, "omar2", "Omar Two")
        await ws_send(http, omar["token"], made["nora"]["user_id"], ["from a stranger"])
        await ws_send(http, made["omar"]["token"], made["nora"]["user_id"], ["first", "second"])
        async with asyncio.timeout(8):
            while len(await shown(page)) < 2 or any(n["body"] == "first" for n in await shown(page)):
                await asyncio.sleep(0.05)
        notes = sorted(await shown(page), key=lambda n: n["title"])
        assert [(n["title"], n["body"]) for n in notes] == [("Omar", "second"), ("Omar Two", "from a stranger")]
        assert all(n["tag"].startswith("c") for n in notes)  # one per conversation: the newer replaced

        await set_hidden(page, False)
        assert await shown(page) == []  # shown again: the notifications are closed
