"""The web client's data exports in a real browser (Debian's chromium, Playwright's async
API; fixtures from tests/test_web.py): Settings → "Download my data" saves the user's zip
archive, and the Admin page's "Export data…" saves a user's archive with the reason the
admin typed, which the audit log keeps. What an archive holds is tests/test_export.py's
business (on both stores); here, that the pages fetch it with the token and save it."""

from __future__ import annotations

import io
import json
import zipfile

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests import test_web
from tests.test_web_admin_tab import make_admin
from tests.test_web_features import login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts
pytestmark = pytest.mark.backends("sqlite")  # the archive's content is tested on both stores elsewhere


async def saved_zip(page: Page, click: object) -> tuple[str, dict[str, object]]:
    """Click (an awaitable) and catch the download: its file name and its manifest."""
    async with page.expect_download() as info:
        await click  # type: ignore[misc]
    download = await info.value
    path = await download.path()
    z = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    return download.suggested_filename, json.loads(z.read("manifest.json"))


async def test_download_my_data_and_an_admin_export(server: NodeServer, contexts: list[BrowserContext]) -> None:
    made = await users(server, ("root", "Root"), ("alice", "Alice"))
    await make_admin(server, made["root"]["user_id"])
    alice, root = await contexts[0].new_page(), await contexts[1].new_page()

    await login_in_ui(alice, server.url, "alice", "Alice")
    await alice.goto(server.url + "/#/settings")
    form = alice.get_by_role("form", name="Download my data")
    name, manifest = await saved_zip(alice, form.get_by_role("button", name="Download my data").click())
    assert name.startswith("yim-export-alice-") and name.endswith(".zip")
    assert (manifest["username"], manifest["exported_by"]) == ("alice", "self")
    await expect(form.get_by_role("status")).to_have_text(f"Saved {name}.")

    await login_in_ui(root, server.url, "root", "Root")
    await root.get_by_role("link", name="Admin").click()
    await root.get_by_label("Search users").fill("alice")
    await root.get_by_role("button", name="Search").click()
    await root.get_by_role("table", name="Users").locator("tbody tr").get_by_role("button", name="alice").click()
    await root.get_by_role("region", name="User alice").get_by_role("button", name="Export data…").click()
    dialog = root.get_by_role("dialog", name="Export the data of Alice (@alice)?")
    await dialog.get_by_label("Reason").fill("request #7")
    name, manifest = await saved_zip(root, dialog.get_by_role("button", name="Export", exact=True).click())
    assert name.startswith("yim-export-alice-")
    assert (manifest["user_id"], manifest["exported_by"]) == (made["alice"]["user_id"], "admin")
    await expect(dialog).to_have_count(0)

    async with aiohttp.ClientSession(server.url) as http:
        headers = {"Authorization": f"Bearer {made['root']['token']}"}
        async with http.get("/api/v1/admin/audit", params={"limit": "1"}, headers=headers) as r:
            entry = (await r.json())["entries"][0]
    assert (entry["action"], entry["detail"]) == ("export", {"reason": "request #7"})
