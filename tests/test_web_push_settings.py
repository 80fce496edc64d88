"""Push settings in the web client, in a real browser (Debian's chromium, fixtures of
tests/test_web.py) against a real node: a conversation muted to "Mentions only" from the
chat head is stored on the server and marked in the list, and the page's own desktop
notifications follow it (and a big group's mentions-only default); the Notifications section of Settings
turns previews off and sets quiet hours in the browser's time zone."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import shot
from tests.test_web_features import login_in_ui, users
from tests.test_web_notify import set_hidden, shown

browser = test_web.browser
contexts = test_web.contexts
pytestmark = pytest.mark.backends("sqlite")  # the page's side; the server's rules are tested on both stores


async def ws_ops(http: aiohttp.ClientSession, token: str, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ops in order over one raw connection; their reply data (an error fails)."""
    out: list[dict[str, Any]] = []
    async with http.ws_connect("/ws") as ws:
        for rid, op in enumerate([{"op": "auth", "token": token}, *ops]):
            await ws.send_json({**op, "rid": rid})
            while True:
                frame: dict[str, Any] = await ws.receive_json()
                if frame["t"] in ("ok", "err") and frame["rid"] == rid:
                    break
            assert frame["t"] == "ok", frame
            out.append(frame["data"])
    return out[1:]


def text(conv_id: str, words: str, mentions: list[str] | None = None) -> dict[str, Any]:
    body = {"text": words}
    return {"op": "send", "conv_id": conv_id, "kind": "text", "body": body, "client_msg_id": secrets.token_hex(6)} | (
        {"mentions": mentions} if mentions else {}
    )


async def push_settings(http: aiohttp.ClientSession, token: str) -> dict[str, Any]:
    async with http.get("/api/v1/me/push-settings", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def test_mute_follows_into_the_list_and_notifications_and_settings_are_saved(
    make_server: Any, contexts: list[BrowserContext]
) -> None:
    # Three members make a read-fan-out group here: mentions only unless the member says otherwise.
    server = await make_server(group_write_fanout_max=2)
    made = await users(server, ("nora", "Nora"), ("omar", "Omar"), ("pia", "Pia"))
    nora, omar = made["nora"], made["omar"]
    async with aiohttp.ClientSession(server.url) as http:
        team, hall, direct = await ws_ops(
            http,
            omar["token"],
            [
                {"op": "group_create", "name": "Team", "members": [nora["user_id"]]},
                {"op": "group_create", "name": "Hall", "members": [nora["user_id"], made["pia"]["user_id"]]},
                {"op": "send", "to": nora["user_id"], "kind": "text", "body": {"text": "hi"}, "client_msg_id": "d1"},
            ],
        )
        team_id, hall_id, direct_id = team["group"]["conv_id"], hall["group"]["conv_id"], direct["conv_id"]
        assert (team["group"]["fanout"], hall["group"]["fanout"]) == ("write", "read")

        ctx = contexts[0]
        await ctx.grant_permissions(["notifications"], origin=server.url)
        page = await ctx.new_page()
        await login_in_ui(page, server.url, "nora", "Nora")
        item = lambda conv_id: page.locator(f'#panel-chats .conv[data-conv-id="{conv_id}"]')  # noqa: E731
        await expect(item(hall_id).locator(".conv-muted")).to_have_attribute("data-mute", "mentions")  # the default
        await expect(item(team_id)).to_be_visible()
        assert await item(team_id).locator(".conv-muted").count() == 0
        assert await item(direct_id).locator(".conv-muted").count() == 0

        await item(team_id).click()
        await page.get_by_role("button", name="Notifications: All messages").click()
        await shot(page, "mute-menu")
        await page.get_by_role("menuitem", name="Mentions only").click()
        await expect(page.get_by_role("button", name="Notifications: Mentions only")).to_be_visible()
        await expect(item(team_id).locator(".conv-muted")).to_have_attribute("data-mute", "mentions")
        assert (await push_settings(http, nora["token"]))["mutes"] == [{"conv_id": team_id, "mute": "mentions"}]

        # Hidden tab: a mention notifies; plain messages of the muted group and of the big
        # group do not, while a message of the unmuted direct chat after them does.
        await set_hidden(page, True)
        await ws_ops(http, omar["token"], [text(team_id, "@Nora look", [nora["user_id"]])])
        async with asyncio.timeout(8):
            while [n["body"] for n in await shown(page)] != ["@Nora look"]:
                await asyncio.sleep(0.05)
        await ws_ops(
            http, omar["token"], [text(team_id, "plain team"), text(hall_id, "plain hall"), text(direct_id, "dm")]
        )
        async with asyncio.timeout(8):
            while len(await shown(page)) < 2:
                await asyncio.sleep(0.05)
        assert sorted((n["tag"], n["body"]) for n in await shown(page)) == sorted(
            [(f"c{team_id}", "@Nora look"), (f"c{direct_id}", "dm")]
        )
        await set_hidden(page, False)

        # The big group turned on from its info: "All messages" is stored as an explicit "off".
        await item(hall_id).click()
        await expect(page.get_by_role("button", name="Notifications: Mentions only")).to_be_visible()
        await page.get_by_role("button", name="Group info").click()
        select = page.get_by_role("dialog").get_by_label("Notifications")
        await expect(select).to_have_value("mentions")
        await select.select_option("off")
        await expect(page.get_by_role("button", name="Notifications: All messages")).to_be_visible()
        await expect(item(hall_id).locator(".conv-muted")).to_have_count(0)
        mutes = (await push_settings(http, nora["token"]))["mutes"]
        assert sorted(mutes, key=lambda m: m["mute"]) == [
            {"conv_id": team_id, "mute": "mentions"},
            {"conv_id": hall_id, "mute": "off"},
        ]
        await page.keyboard.press("Escape")

        await page.goto(server.url + "/#/settings")
        preview = page.get_by_role("switch", name="Show the message in notifications")
        await expect(preview).to_be_checked()
        await expect(preview).to_be_enabled()
        await preview.click()
        await expect(preview).not_to_be_checked()
        await expect(preview).to_be_enabled()  # the server answered
        form = page.get_by_role("form", name="Quiet hours")
        await form.get_by_label("Quiet hours: hold notifications until they end").check()
        await form.get_by_label("From").fill("23:00")
        await form.get_by_label("To").fill("06:30")
        await form.get_by_role("button", name="Save quiet hours").click()
        await expect(form.locator(".form-status")).to_have_text("Quiet hours are on: 23:00 to 06:30.")
        await shot(page, "push-settings")
        saved = await push_settings(http, nora["token"])
        assert (saved["preview"], saved["dnd"], saved["time_zone"]) == (False, "23:00-06:30", "Asia/Shanghai")

        await page.reload()  # read back from the server, not kept in the page
        await expect(page.get_by_role("switch", name="Show the message in notifications")).not_to_be_checked()
        await expect(page.get_by_role("form", name="Quiet hours").get_by_label("From")).to_have_value("23:00")
