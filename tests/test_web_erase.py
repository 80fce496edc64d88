"""Erasing and deleting accounts in the web client (Debian's chromium, Playwright; fixtures
from tests/test_web.py): a user asks to delete their account in Settings and is told when it
runs, a login before then cancels it and the page says so; a server admin erases a user
from the Admin page after a confirmation that names them, and the user's open page goes
back to the login form saying the account was deleted.

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from tests import test_web
from tests.test_web import PASSWORD, VIEWPORT, shot
from tests.test_web_admin_tab import make_admin
from tests.test_web_features import login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts

pytestmark = pytest.mark.backends("sqlite")  # the browser shows what the protocol gives: one store is enough


async def test_delete_my_account_then_cancel_by_login_and_an_admin_erases(
    server: NodeServer, browser: Browser, contexts: list[BrowserContext]
) -> None:
    made = await users(server, ("root", "Root"), ("alice", "Alice"))
    await make_admin(server, made["root"]["user_id"])
    root, alice = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(root, server.url, "root", "Root")
    await login_in_ui(alice, server.url, "alice", "Alice")

    # Settings: the password, a confirmation, then when it runs.
    await alice.get_by_role("link", name="Settings").click()
    form = alice.get_by_role("form", name="Delete my account")
    await form.get_by_label("Your password").fill("not my password")
    await form.get_by_role("button", name="Delete my account…").click()
    await (
        alice.get_by_role("dialog", name="Delete your account?").get_by_role("button", name="Delete my account").click()
    )
    await expect(form.get_by_role("alert")).to_contain_text("The current password is not right")
    await form.get_by_label("Your password").fill(PASSWORD)
    await form.get_by_role("button", name="Delete my account…").click()
    await (
        alice.get_by_role("dialog", name="Delete your account?").get_by_role("button", name="Delete my account").click()
    )
    state = alice.locator(".deletion-state")
    await expect(state).to_have_text(re.compile(r"^Your account will be deleted on .+ Log in again before then"))
    await shot(alice, "settings-delete-account")

    # A login within the grace period cancels it, and says so.
    other = await browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="Asia/Shanghai")
    try:
        elsewhere = await other.new_page()
        await login_in_ui(elsewhere, server.url, "alice", "Alice")
        await expect(elsewhere.get_by_role("status").filter(has_text="pending deletion is cancelled")).to_be_visible()
    finally:
        await other.close()
    await alice.reload()
    await expect(alice.locator(".deletion-state")).to_have_text("")

    # The admin erases her: the dialog names her and wants her username typed.
    await root.get_by_role("link", name="Admin").click()
    await root.get_by_label("Search users").fill("alice")
    await root.get_by_role("button", name="Search").click()
    rows = root.get_by_role("table", name="Users").locator("tbody tr")
    await rows.get_by_role("button", name="alice").click()
    await root.get_by_role("region", name="User alice").get_by_role("button", name="Erase…").click()
    dialog = root.get_by_role("dialog", name="Erase Alice (@alice)?")
    await dialog.get_by_label("Type alice to confirm").fill("alicia")
    await dialog.get_by_label("Reason").fill("her request by mail")
    await dialog.get_by_role("button", name="Erase", exact=True).click()
    await expect(dialog.get_by_role("alert")).to_have_text("Type the username exactly to confirm.")
    await dialog.get_by_label("Type alice to confirm").fill("alice")
    await shot(root, "admin-erase")
    await dialog.get_by_role("button", name="Erase", exact=True).click()
    await expect(dialog).to_have_count(0)
    await expect(rows).to_have_count(0)
    await expect(root.get_by_role("region", name="User alice")).to_have_count(0)

    # Her open page is back at the login form, saying why; she cannot log in.
    await expect(alice.get_by_role("alert")).to_have_text("Your session has ended: this account was deleted.")
    await alice.get_by_label("Username").fill("alice")
    await alice.get_by_label("Password").fill(PASSWORD)
    await alice.get_by_role("button", name="Log in").click()
    await expect(alice.get_by_role("button", name="Log in")).to_be_visible()
    await expect(alice.locator(".me-name")).to_have_count(0)
