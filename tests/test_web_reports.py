"""Reports in the web client, in a real browser (Debian's chromium, Playwright's async API;
fixtures from tests/test_web.py): a user reports a message from its menu and a user from
the chat's user menu; a server admin finds both in the Admin page's queue, reads the message as
it was reported and the conversation around it, and recalls it for everyone; the reporter
is told the admins acted. A reported image shows in the queue through the report.

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

import aiohttp
import pytest
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.rawclient import Device
from tests.test_media import uploaded
from tests.test_web import _ws_send, shot
from tests.test_web_admin_tab import make_admin
from tests.test_web_features import conv_item, login_in_ui, png, users
from tests.test_web_reply import _menu
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts

pytestmark = pytest.mark.backends("sqlite")  # the browser shows what the protocol gives: one store is enough


async def test_report_a_message_and_recall_it_from_the_queue(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("root", "Root"), ("alice", "Alice"), ("bob", "Bob"))
    await make_admin(server, people["root"]["user_id"])
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["alice"]["token"], people["bob"]["user_id"], ["cheap pills here", "hi Bob"])
    bob, root = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(bob, server.url, "bob", "Bob")
    await conv_item(bob, "Alice").click()

    # Bob reports Alice's first message from its menu, with a reason and his words.
    await _menu(bob, "cheap pills here", "Report…", ".msg.theirs")
    dialog = bob.get_by_role("dialog", name="Report a message from Alice")
    await dialog.get_by_label("Reason").select_option("spam")
    await dialog.get_by_label("Details (optional)").fill("an ad")
    await shot(bob, "report-message")
    await dialog.get_by_role("button", name="Report").click()
    await expect(dialog).to_have_count(0)
    await expect(bob.get_by_role("status")).to_contain_text("Thank you. The admins will look at it.")
    # Again: the open report is his already. His own messages have no Report item.
    await _menu(bob, "cheap pills here", "Report…", ".msg.theirs")
    await bob.get_by_role("dialog", name="Report a message from Alice").get_by_role("button", name="Report").click()
    await expect(bob.get_by_role("status")).to_contain_text("You reported this already. The admins have it.")

    # And Alice herself, from the chat's user menu.
    await bob.get_by_role("button", name="More about Alice").click()
    await bob.get_by_role("menuitem", name="Report…").click()
    dialog = bob.get_by_role("dialog", name="Report the user Alice")
    await dialog.get_by_label("Reason").select_option("abuse")
    await dialog.get_by_role("button", name="Report").click()
    await expect(dialog).to_have_count(0)

    # The admin's queue: the message as it was reported, the conversation around it.
    await login_in_ui(root, server.url, "root", "Root")
    await root.get_by_role("link", name="Admin").click()
    await root.get_by_role("tab", name="Reports").click()
    open_reports = root.get_by_role("list", name="Open reports")
    await expect(open_reports.locator(".report")).to_have_count(2)  # newest first
    await expect(open_reports.locator(".report").first.locator(".report-head")).to_contain_text(
        "Harassment or abuse · The user alice · reported by bob"
    )
    report = open_reports.locator(".report").last
    await expect(report.locator(".report-head")).to_contain_text("Spam · A message from alice · reported by bob")
    await expect(report.locator(".report-text")).to_have_text("“an ad”")
    await expect(report.get_by_label("The message as reported")).to_have_text("cheap pills here")
    await report.get_by_role("button", name="Show the conversation").click()
    await expect(report.get_by_role("list", name="The conversation now").locator("li")).to_have_text(
        ["alice: cheap pills here", "alice: hi Bob"]
    )
    await shot(root, "report-queue")

    # Recall it: it goes for Bob too, and the report moves to the resolved ones.
    await report.get_by_role("button", name="Recall the message…").click()
    confirm = root.get_by_role("dialog", name="Recall this message?")
    await confirm.get_by_label("Note").fill("spam link")
    await confirm.get_by_role("button", name="Recall", exact=True).click()
    await expect(confirm).to_have_count(0)
    await expect(open_reports.locator(".report")).to_have_count(1)  # the report of the user stays open
    resolved = root.get_by_role("list", name="Resolved reports").locator(".report")
    await expect(resolved.locator(".report-outcome")).to_contain_text("Resolved: message recalled, by root")
    await expect(resolved.locator(".report-outcome")).to_contain_text("spam link")
    await expect(bob.locator(".recalled-note")).to_have_count(1)
    # Bob, who reported it, is told the admins acted (not who, nor how).
    await expect(bob.get_by_role("status")).to_contain_text("Your report was reviewed. The admins took action.")
    await expect(bob.locator(".msg .text")).to_have_text(["hi Bob"])


async def test_the_queue_shows_a_reported_image(server: NodeServer, contexts: list[BrowserContext]) -> None:
    """The admin is no member of the chat: the image comes through the report."""
    people = await users(server, ("root", "Root"), ("alice", "Alice"), ("bob", "Bob"))
    await make_admin(server, people["root"]["user_id"])
    async with aiohttp.ClientSession(server.url) as http:
        media = await uploaded(http, people["alice"], png(640, 480), kind="image", name="nasty.png")
        alice = Device(http, people["alice"])
        await alice.connect()
        sent = await alice.request(
            "send", to=people["bob"]["user_id"], kind="image", body={"media_id": media["media_id"]}, client_msg_id="i"
        )
        bob = Device(http, people["bob"])
        await bob.connect()
        await bob.request("report", conv_id=sent["conv_id"], seq=sent["seq"], category="abuse")
        await alice.close()
        await bob.close()
    root = await contexts[0].new_page()
    await login_in_ui(root, server.url, "root", "Root")
    await root.get_by_role("link", name="Admin").click()
    await root.get_by_role("tab", name="Reports").click()
    report = root.get_by_role("list", name="Open reports").locator(".report")
    img = report.locator(".report-media .media-img")
    await expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    await expect(img).to_have_js_property("naturalWidth", 320)  # the thumbnail
    await report.get_by_role("button", name="Open image nasty.png").click()
    await expect(root.locator(".lightbox-img")).to_have_js_property("naturalWidth", 640)
    await shot(root, "report-image")
