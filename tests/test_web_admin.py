"""The web client when a server admin disables the account it is signed in to: the page
goes back to the login form at once, without trying to reconnect (close code 4007 is
final, as 4003 is). A real browser (Debian's chromium; fixtures from tests/test_web.py)."""

from __future__ import annotations

import aiohttp
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web_features import login_in_ui, users
from yim.node import NodeServer
from yim.storage.admin import AuditEntry

browser = test_web.browser
contexts = test_web.contexts


async def test_a_disabled_account_is_signed_out_without_reconnecting(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    made = await users(server, ("root", "Root"), ("alice", "Alice"))
    await server.node.store.admin.set_admin(None, int(made["root"]["user_id"]), True, AuditEntry(at=1, source="cli"))
    page = await contexts[0].new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await login_in_ui(page, server.url, "alice", "Alice")
    assert len(sockets) == 1
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.post(
            f"/api/v1/admin/users/{made['alice']['user_id']}/disable",
            headers={"Authorization": f"Bearer {made['root']['token']}"},
        )
        assert r.status == 200, await r.text()
    await expect(page.get_by_text("Your session has ended")).to_be_visible()
    await expect(page.get_by_label("Username", exact=True)).to_be_visible()  # the login form
    await page.wait_for_timeout(1500)  # longer than the first reconnect back-off (0.25 … 0.5 s)
    assert len(sockets) == 1, sockets  # no second connection: 4007 is final
