"""The web client's Admin page and Settings page in a real browser (Debian's chromium,
Playwright's async API; fixtures from tests/test_web.py): a server admin finds a user,
disables them (their open page is signed out with a clear message) and enables them again,
and reads it all in the audit log; a shop owner opens a shop and adds an agent without
leaving the page; anyone changes their display name and password (their other sessions are
signed out, saying why).

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import BrowserContext, expect

from tests import test_web
from tests.test_web import PASSWORD, shot
from tests.test_web_features import login_in_ui, users
from yim.node import NodeServer
from yim.storage.admin import AuditEntry
from yim.storage.records import UserRec

browser = test_web.browser
contexts = test_web.contexts


async def make_admin(server: NodeServer, user_id: str) -> None:
    """What `yim admin create-admin` does on the host: the audit log's oldest entry."""
    entry = AuditEntry(at=1, source="cli", action="set_role", target=f"user:{user_id}", detail=b'{"admin":true}')
    await server.node.store.admin.set_admin(None, int(user_id), True, entry)


async def test_an_admin_disables_a_user_whose_open_page_is_signed_out(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    made = await users(server, ("root", "Root"), ("alice", "Alice"), ("alfred", "Alfred"))
    await make_admin(server, made["root"]["user_id"])
    root, alice = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "Alice")
    await login_in_ui(root, server.url, "root", "Root")

    # Only the admin has the Admin page: the server answered the page's admin read with 403 for Alice.
    await root.get_by_role("link", name="Admin").click()
    await expect(root.get_by_role("heading", name="Server administration")).to_be_visible()
    await alice.goto(server.url + "/#/admin")
    await expect(alice.get_by_role("navigation", name="Pages")).to_have_attribute("data-admin", "no")
    await expect(alice.get_by_role("link", name="Admin")).to_be_hidden()
    await expect(alice).to_have_url(server.url + "/#/")
    await expect(alice.get_by_role("heading", name="Server administration")).to_have_count(0)

    # Search, then open Alice's detail: her live device, her counts.
    await root.get_by_label("Search users").fill("ali")
    await root.get_by_role("button", name="Search").click()
    rows = root.get_by_role("table", name="Users").locator("tbody tr")
    await expect(rows).to_have_count(1)
    await rows.get_by_role("button", name="alice").click()
    detail = root.get_by_role("region", name="User alice")
    await expect(detail.locator(".admin-state")).to_have_text("Active")
    await expect(
        detail.get_by_role("heading", name="Signed-in devices (2)")
    ).to_be_visible()  # the test login + the page

    # Disable, with a confirm and a reason.
    await detail.get_by_role("button", name="Disable…").click()
    dialog = root.get_by_role("dialog", name="Disable Alice (@alice)?")
    await dialog.get_by_label("Reason").fill("spam reports")
    await shot(root, "admin-disable")
    await dialog.get_by_role("button", name="Disable", exact=True).click()
    await expect(dialog).to_have_count(0)
    await expect(detail.locator(".admin-state")).to_have_text(re.compile(r"^Disabled since "))
    await expect(rows.first).to_contain_text("disabled")
    await expect(detail.get_by_role("heading", name="Signed-in devices (0)")).to_be_visible()

    # Alice's open page goes back to the login form, saying why; logging in again is refused, saying why.
    await expect(alice.get_by_role("alert")).to_have_text(
        "Your session has ended: a server administrator disabled this account. "
        "You cannot log in until it is enabled again."
    )
    await expect(alice.get_by_role("button", name="Log in")).to_be_visible()
    await shot(alice, "admin-disabled-user")
    await alice.get_by_label("Username").fill("alice")
    await alice.get_by_label("Password").fill(PASSWORD)
    await alice.get_by_role("button", name="Log in").click()
    await expect(alice.get_by_role("alert")).to_have_text(
        "This account is disabled. Ask a server administrator to enable it again."
    )

    # Enable again: she logs in.
    await detail.get_by_role("button", name="Enable…").click()
    await root.get_by_role("dialog", name="Enable Alice (@alice)?").get_by_role("button", name="Enable").click()
    await expect(detail.locator(".admin-state")).to_have_text("Active")
    await alice.get_by_role("button", name="Log in").click()
    await expect(alice.locator(".me-name")).to_have_text("Alice")

    # The audit log, newest first, with the admin's name and the reason (the oldest entry:
    # the operator made root an admin on the host).
    await root.get_by_role("tab", name="Audit log").click()
    audit = root.get_by_role("table", name="Audit log").locator("tbody tr")
    await expect(audit).to_have_count(3)
    await expect(audit.nth(2).locator("td")).to_have_text(
        [re.compile("."), "operator (host)", "set_role", f"user:{made['root']['user_id']}", "admin: true", "cli"]
    )
    await expect(audit.nth(0).locator("td").nth(2)).to_have_text("enable")
    await expect(audit.nth(1).locator("td").nth(2)).to_have_text("disable")
    await expect(audit.nth(1).locator("td").nth(1)).to_have_text("root")
    await expect(audit.nth(1)).to_contain_text('reason: "spam reports"')
    await expect(root.locator(".admin-body")).not_to_contain_text("null")
    await shot(root, "admin-audit")


async def test_an_admin_manages_groups_roles_and_shops(server: NodeServer, contexts: list[BrowserContext]) -> None:
    made = await users(server, ("root", "Root"), ("bob", "Bob"), ("carol", "Carol"))
    await make_admin(server, made["root"]["user_id"])
    async with aiohttp.ClientSession(server.url) as http:
        auth = {"Authorization": f"Bearer {made['bob']['token']}"}
        r = await http.post(
            "/api/v1/groups", json={"name": "Book Club", "members": [made["carol"]["user_id"]]}, headers=auth
        )
        assert r.status == 201, await r.text()
    for i in range(52):  # more accounts than one page of the users table (50)
        user = UserRec(server.node.ids.next_id(), f"member{i:02}", f"Member {i}", "not a hash", 1)
        await server.node.store.create_user(user)
    root = await contexts[0].new_page()
    await login_in_ui(root, server.url, "root", "Root")
    await root.get_by_role("link", name="Admin").click()

    # Users, a page at a time.
    rows = root.get_by_role("table", name="Users").locator("tbody tr")
    await expect(rows).to_have_count(50)
    await root.get_by_role("button", name="More users").click()
    await expect(rows).to_have_count(55)
    await expect(root.get_by_role("button", name="More users")).to_have_count(0)

    # Groups: transfer to a member, then dissolve.
    await root.get_by_role("tab", name="Groups").click()
    row = root.get_by_role("table", name="Groups").locator("tbody tr", has_text="Book Club")
    await expect(row.locator("td").nth(2)).to_have_text("bob")
    await row.get_by_role("button", name="Transfer…").click()
    dialog = root.get_by_role("dialog", name="Transfer “Book Club”")
    await dialog.get_by_label("New owner's username").fill("carol")
    await dialog.get_by_role("button", name="Transfer").click()
    await expect(row.locator("td").nth(2)).to_have_text("carol")
    await row.get_by_role("button", name="Dissolve…").click()
    await root.get_by_role("dialog", name="Dissolve “Book Club”?").get_by_role("button", name="Dissolve").click()
    await expect(row.locator("td").nth(3)).to_have_text("dissolved")

    # Roles: Bob becomes an admin; his role shows in the table and the detail.
    await root.get_by_role("tab", name="Users").click()
    await root.get_by_role("table", name="Users").get_by_role("button", name="bob").click()
    detail = root.get_by_role("region", name="User bob")
    await detail.get_by_role("button", name="Make admin…").click()
    await (
        root.get_by_role("dialog", name="Make Bob (@bob) a server admin?")
        .get_by_role("button", name="Make admin")
        .click()
    )
    await expect(detail.locator(".admin-state")).to_have_text("Active · server admin")
    await expect(detail.get_by_role("button", name="Remove admin…")).to_be_visible()

    # Bob's password is reset to one the admin types: his session ends, the new password works.
    await expect(detail.get_by_role("heading", name="Signed-in devices (1)")).to_be_visible()
    await detail.get_by_role("button", name="Reset password…").click()
    dialog = root.get_by_role("dialog", name="Reset the password of Bob (@bob)")
    await dialog.get_by_label("New password").fill("bob's new password")
    await dialog.get_by_role("button", name="Reset password").click()
    await expect(root.locator(".toast").filter(has_text="Password reset")).to_have_text(
        "Password reset; 1 session(s) signed out."
    )
    await expect(detail.get_by_role("heading", name="Signed-in devices (0)")).to_be_visible()
    async with aiohttp.ClientSession(server.url) as http:
        login = {"username": "bob", "password": "bob's new password", "device_id": "d2", "platform": "desktop"}
        r = await http.post("/api/v1/sessions", json=login)
        assert r.status == 201, await r.text()

    # Shops: open one for Carol, then make Bob its agent.
    await root.get_by_role("tab", name="Shops").click()
    create = root.get_by_role("form", name="Open a shop for a user")
    await create.get_by_label("Owner's username").fill("carol")
    await create.get_by_label("Shop name").fill("Carol's Teas")
    await create.get_by_role("button", name="Open shop").click()
    await expect(create.get_by_role("status")).to_contain_text("Shop “Carol's Teas” (id ")
    agent = root.get_by_role("form", name="Set a shop's agent")
    await agent.get_by_label("Agent's username").fill("bob")
    await agent.get_by_role("button", name="Set agent").click()
    await expect(agent.get_by_role("status")).to_contain_text("bob is an agent of shop")

    # Everything above is in the audit log, once each.
    await root.get_by_role("tab", name="Audit log").click()
    actions = root.get_by_role("table", name="Audit log").locator("tbody tr td:nth-child(3)")
    await expect(actions).to_have_text(
        [
            "shop_agent_set",
            "shop_create",
            "reset_password",
            "set_role",
            "group_dissolve",
            "group_transfer",
            "set_role",  # the operator made root an admin
        ]
    )


async def test_a_shop_owner_opens_a_shop_and_adds_an_agent_in_the_page(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    await users(server, ("olivia", "Olivia"), ("bob", "Bob"), ("carol", "Carol"))
    owner, customer = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(owner, server.url, "olivia", "Olivia")
    await owner.evaluate("window.sameDocument = true")  # gone if the page reloads

    await owner.get_by_role("link", name="Settings").click()
    await expect(owner.get_by_text("You do not run or serve any shop.")).to_be_visible()
    opened = owner.get_by_role("form", name="Open a shop")
    await opened.get_by_label("New shop name").fill("Tea House")
    await opened.get_by_role("button", name="Open shop").click()
    await expect(opened.get_by_role("status")).to_have_text(re.compile(r"^Shop “Tea House” is open\. Its id is \d+\.$"))
    shop_id = re.search(r"\d+", await opened.get_by_role("status").inner_text())
    assert shop_id
    agents = owner.get_by_role("list", name="Agents of Tea House")
    await expect(agents.locator(".agent-row")).to_have_count(1)
    await expect(agents).to_contain_text("Olivia (@olivia)admin")
    await expect(owner.get_by_role("tab", name="Agent")).to_be_visible()  # she runs a shop now

    add = owner.get_by_role("form", name="Add an agent to Tea House")
    await add.get_by_label("Agent's username").fill("nobody")
    await add.get_by_role("button", name="Add agent").click()
    await expect(add.get_by_role("alert")).to_have_text("No user named “nobody”.")
    await add.get_by_label("Agent's username").fill("bob")
    await add.get_by_role("button", name="Add agent").click()
    await expect(add.get_by_role("status")).to_have_text("Bob is now an agent of Tea House.")
    await expect(agents.locator(".agent-row")).to_have_count(2)
    await expect(agents).to_contain_text("Bob (@bob)agent")
    await shot(owner, "settings-shop")
    assert await owner.evaluate("window.sameDocument") is True
    assert owner.url.endswith("#/settings")

    # The server agrees: Bob is an agent of the shop.
    async with aiohttp.ClientSession(server.url) as http:
        token = await owner.evaluate("JSON.parse(localStorage.getItem('yim.session')).token")
        r = await http.get(f"/api/v1/shops/{shop_id.group()}/agents", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, await r.text()
        assert {(a["role"]) for a in (await r.json())["agents"]} == {"admin", "agent"}

    # Removing him asks first.
    await agents.get_by_role("button", name="Remove Bob (@bob) from Tea House").click()
    await owner.get_by_role("dialog").get_by_role("button", name="Remove").click()
    await expect(agents.locator(".agent-row")).to_have_count(1)

    # A customer opens the shop's chat by its id: the header names the shop at once.
    await login_in_ui(customer, server.url, "carol", "Carol")
    await customer.get_by_role("button", name="New group or shop chat").click()
    await customer.get_by_role("menuitem", name="Chat with a shop").click()
    await customer.get_by_label("Shop id").fill(shop_id.group())
    await customer.get_by_role("button", name="Open chat").click()
    await expect(customer.locator(".chat-title")).to_have_text("Tea House")


async def test_settings_change_the_name_and_the_password(server: NodeServer, contexts: list[BrowserContext]) -> None:
    await users(server, ("dora", "Dora"))
    here, other = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(here, server.url, "dora", "Dora")
    await login_in_ui(other, server.url, "dora", "Dora")

    await here.get_by_role("link", name="Settings").click()
    await here.get_by_label("Display name").fill("Dora the Explorer")
    await here.get_by_role("button", name="Save name").click()
    await expect(here.get_by_role("form", name="Profile").get_by_role("status")).to_have_text(
        "Your name is now “Dora the Explorer”."
    )
    await expect(here.locator(".me-name")).to_have_text("Dora the Explorer")  # no reload

    password = here.get_by_role("form", name="Change password")
    await password.get_by_label("Current password").fill("not my password")
    await password.get_by_label("New password", exact=True).fill("a brand new secret")
    await password.get_by_label("New password again").fill("a brand new secret")
    await password.get_by_role("button", name="Change password").click()
    await expect(password.get_by_role("alert")).to_have_text("The current password is not right. Nothing was changed.")
    await password.get_by_label("Current password").fill(PASSWORD)
    await password.get_by_role("button", name="Change password").click()
    await expect(password.get_by_role("status")).to_have_text(
        "Password changed. This session stays signed in; 2 other sessions were signed out."
    )
    await shot(here, "settings")

    # The other browser was signed out, saying why; the new password works there.
    await expect(other.get_by_role("alert")).to_have_text(
        "Your session has ended: the password was changed in another session. Log in with the new password."
    )
    await other.get_by_label("Username").fill("dora")
    await other.get_by_label("Password").fill("a brand new secret")
    await other.get_by_role("button", name="Log in").click()
    await expect(other.locator(".me-name")).to_have_text("Dora the Explorer")
    await expect(here.locator(".me-name")).to_have_text("Dora the Explorer")
