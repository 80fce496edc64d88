"""A read-fan-out group in the web client, in a real browser (Debian's chromium, fixtures of
tests/test_web.py) against a real node: its messages come as `group_message` notices, one
per entry; when one is lost (as while a cluster heals after a Redis restart,
docs/protocol.md §4.3) the next one finds a hole, and the page pulls the missing entries
with `history` before showing it — every message shown in order and counted unread."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web_features import login_in_ui, users
from tests.test_web_push_settings import text, ws_ops

browser = test_web.browser
contexts = test_web.contexts
pytestmark = pytest.mark.backends("sqlite")  # the page's side; notices and history are tested on both stores

# Drops the next `group_message` notice before the store sees it, as a lost push would.
DROP_ONE_GROUP_NOTICE = """() => {
  const store = window.yim.store;
  const onNotice = store.onNotice.bind(store);
  let dropped = false;
  store.onNotice = (frame) => {
    if (!dropped && frame.type === "group_message") {
      dropped = true;
      window.droppedGroupNotice = frame.data.seq;
      return;
    }
    onNotice(frame);
  };
}"""


async def test_a_lost_group_notice_is_pulled_before_the_next_one_shows(
    make_server: Any, contexts: list[BrowserContext]
) -> None:
    server = await make_server(group_write_fanout_max=2)  # three members: read fan-out
    made = await users(server, ("nora", "Nora"), ("omar", "Omar"), ("pia", "Pia"))
    nora, omar = made["nora"], made["omar"]
    async with aiohttp.ClientSession(server.url) as http:
        [hall] = await ws_ops(
            http,
            omar["token"],
            [{"op": "group_create", "name": "Hall", "members": [nora["user_id"], made["pia"]["user_id"]]}],
        )
        hall_id = hall["group"]["conv_id"]
        assert hall["group"]["fanout"] == "read"
        await ws_ops(http, omar["token"], [text(hall_id, "one")])

        page = await contexts[0].new_page()
        await login_in_ui(page, server.url, "nora", "Nora")
        item = page.locator(f'#panel-chats .conv[data-conv-id="{hall_id}"]')
        await item.click()
        await expect(page.locator(".msg.theirs .text").last).to_have_text("one")
        await page.goto(server.url + "/#/")  # leave it: what follows is unread
        await expect(item).to_be_visible()

        await page.evaluate(DROP_ONE_GROUP_NOTICE)
        await ws_ops(http, omar["token"], [text(hall_id, "two")])  # its notice is dropped
        async with asyncio.timeout(8):  # the page got the notice, and dropped it
            while await page.evaluate("() => window.droppedGroupNotice ?? null") is None:
                await asyncio.sleep(0.05)
        await ws_ops(http, omar["token"], [text(hall_id, "three")])

        await expect(item.locator(".badge")).to_have_text("2")  # "two" counted too, not only "three"
        await item.click()
        await expect(page.locator(".msg.theirs .text")).to_have_text(["one", "two", "three"])
