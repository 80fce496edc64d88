"""Fixes of the web client found by trying it as a new user, each in a real browser (Debian's
chromium, Playwright's async API; fixtures and helpers from tests/test_web.py):

- "read by k of n" on one's own group message follows the members' reads live, and the
  tick turns double once everyone read it;
- no presence is shown for people whose presence the server does not show (non-friends),
  rather than a false "offline";
- customer service: an unknown shop id is refused before chatting, the chat is named after
  the shop, the Agent tab appears without a reload, the customer rates a closed session;
- recall, block and closing a session ask first;
- sign-up says what a valid username is, and a lockout says how long it lasts.

The client does not depend on the store backend, so these run on SQLite only.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Locator, expect

from tests import test_web
from tests.conftest import MakeServer
from tests.rawclient import Device
from tests.test_web import PASSWORD, send, shot
from tests.test_web_features import conv_item, login_in_ui, users
from yim.node import NodeServer

browser = test_web.browser
contexts = test_web.contexts

pytestmark = pytest.mark.backends("sqlite")

#: Receipts are asked again with back-off (at most every 8 s while nothing changes): a
#: generous bound for the page to notice a read it is not told about.
RECEIPT_WAIT_MS = 15000


async def test_group_receipts_follow_reads_live_and_recall_asks_first(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("carol", "陈晓"))
    async with aiohttp.ClientSession(server.url) as http:
        bob, carol = Device(http, people["bob"]), Device(http, people["carol"])
        await bob.connect()
        await carol.connect()
        change = await bob.request(
            "group_create", name="项目组", members=[people["alice"]["user_id"], people["carol"]["user_id"]]
        )
        conv_id = change["group"]["conv_id"]

        alice = await contexts[0].new_page()
        await login_in_ui(alice, server.url, "alice", "爱丽丝")
        await conv_item(alice, "项目组").click()
        await send(alice, "今晚八点上线，请大家确认")  # noqa: RUF001
        mine = alice.locator(".msg.mine")
        await expect(mine.locator(".receipt")).to_have_text("Not read yet")
        await expect(mine.locator(".status")).to_have_attribute("data-status", "sent")
        seq = int(await mine.get_attribute("data-seq") or 0)
        assert seq > 0

        # The others read without writing anything: nothing is pushed to Alice, yet her
        # page follows (it asks again while the message is open to readers).
        await bob.request("read", conv_id=conv_id, seq=seq)
        await expect(mine.locator(".receipt")).to_have_text("Read by 1 of 2", timeout=RECEIPT_WAIT_MS)
        await expect(mine.locator(".status")).to_have_attribute("data-status", "sent")
        await carol.request("read", conv_id=conv_id, seq=seq)
        await expect(mine.locator(".receipt")).to_have_text("Read by all", timeout=RECEIPT_WAIT_MS)
        status = mine.locator(".status")
        await expect(status).to_have_attribute("data-status", "read")
        await expect(status).to_have_text("✓✓")
        await shot(alice, "fix-group-read-by-all")

        # Recall asks first; cancelling keeps the message for everyone.
        await mine.locator(".bubble").hover()
        await mine.get_by_role("button", name="Message actions").click()
        await alice.get_by_role("menuitem", name="Recall").click()
        dialog = alice.get_by_role("dialog", name="Recall this message?")
        await expect(dialog.locator(".confirm-text")).to_contain_text("removed for everyone")
        await shot(alice, "fix-recall-confirm")
        await dialog.get_by_role("button", name="Cancel").click()
        await expect(dialog).to_have_count(0)
        await expect(mine.locator(".text")).to_have_text("今晚八点上线，请大家确认")  # noqa: RUF001
        page = await bob.request("history", conv_id=conv_id)
        assert not any(m.get("recalled") for m in page["messages"]), page
        await mine.locator(".bubble").hover()
        await mine.get_by_role("button", name="Message actions").click()
        await alice.get_by_role("menuitem", name="Recall").click()
        await dialog.get_by_role("button", name="Recall").click()
        await expect(alice.locator(".recalled-note")).to_have_text("You recalled a message")
        page = await bob.request("history", conv_id=conv_id)
        assert [m["seq"] for m in page["messages"] if m.get("recalled")] == [seq]
        await bob.close()
        await carol.close()


async def test_no_false_offline_for_non_friends_and_block_asks_first(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"))
    alice_id = people["alice"]["user_id"]
    async with aiohttp.ClientSession(server.url) as http:
        bob = Device(http, people["bob"])  # online all along, but not Alice's friend
        await bob.connect()
        hello = "你好，我是鲍勃"  # noqa: RUF001
        sent = await bob.request("send", to=alice_id, kind="text", body={"text": hello}, client_msg_id="b1")

        alice = await contexts[0].new_page()
        await login_in_ui(alice, server.url, "alice", "爱丽丝")
        item = conv_item(alice, "鲍勃")
        await expect(item).to_be_visible()
        await item.click()
        await expect(alice.locator(".chat-title")).to_have_text("鲍勃")
        await bob.request("typing", conv_id=sent["conv_id"])
        await expect(alice.locator(".typing-line")).to_have_text("鲍勃 is typing…")
        # Presence of a non-friend is not shown at all: no dot, no "offline".
        await expect(alice.locator(".chat-sub")).to_have_text("@bob")
        await expect(alice.locator(".chat-head .presence-dot")).to_have_count(0)
        await expect(item.locator(".presence-dot")).to_have_count(0)
        await shot(alice, "fix-non-friend-presence")

        # Once friends, the server shows his presence, and so does the page.
        await bob.request("friend_request", to=alice_id, message="")
        await alice.get_by_role("tab", name="Friends").click()
        await alice.get_by_role("list", name="Friend requests").get_by_role("button", name="Accept").click()
        await expect(alice.locator(".chat-head .presence-dot")).to_have_attribute("data-presence", "online")
        await expect(alice.locator(".chat-sub")).to_have_text("@bob · online")

        # Block asks first; cancelling changes nothing.
        await alice.locator(".chat-head").get_by_role("button", name="More about 鲍勃").click()
        await alice.get_by_role("menuitem", name="Block").click()
        dialog = alice.get_by_role("dialog", name="Block 鲍勃?")
        await expect(dialog.locator(".confirm-text")).to_contain_text("will not be able to message you")
        await shot(alice, "fix-block-confirm")
        await dialog.get_by_role("button", name="Cancel").click()
        await expect(dialog).to_have_count(0)
        assert (await bob.request("relation", user_id=alice_id))["blocked_by"] is False
        await alice.locator(".chat-head").get_by_role("button", name="More about 鲍勃").click()
        await alice.get_by_role("menuitem", name="Block").click()
        await dialog.get_by_role("button", name="Block").click()
        await expect(alice.locator(".toast").last).to_have_text("鲍勃 blocked.")
        assert (await bob.request("relation", user_id=alice_id))["blocked_by"] is True
        # The block ended the friendship: his presence is hidden again, not "offline".
        await expect(alice.locator(".chat-head .presence-dot")).to_have_count(0)
        await expect(alice.locator(".chat-sub")).to_have_text("@bob")
        await bob.close()


async def test_customer_service_shop_checks_confirmation_and_rating(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("owner", "店主"))
    async with aiohttp.ClientSession(server.url) as http:
        owner = {"Authorization": "Bearer " + people["owner"]["token"]}
        r = await http.post("/api/v1/shops", json={"name": "小米旗舰店"}, headers=owner)
        assert r.status == 201, await r.text()
        shop_id = (await r.json())["shop_id"]

        alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
        await login_in_ui(alice, server.url, "alice", "爱丽丝")
        await login_in_ui(bob, server.url, "bob", "鲍勃")
        await expect(alice.get_by_role("tab", name="Agent")).to_be_hidden()

        # A shop id that does not exist is refused in the dialog, before any chat opens.
        await bob.get_by_role("button", name="New group or shop chat").click()
        await bob.get_by_role("menuitem", name="Chat with a shop").click()
        dialog = bob.get_by_role("dialog", name="Chat with a shop")
        await dialog.get_by_label("Shop id").fill("12345")
        await dialog.get_by_role("button", name="Open chat").click()
        await expect(dialog.locator(".form-error")).to_have_text(
            "There is no shop with id 12345. Check the number with the shop."
        )
        await expect(bob.locator(".chat-pane")).to_be_hidden()
        await shot(bob, "fix-unknown-shop")
        # The real one: the header names the shop from the start.
        await dialog.get_by_label("Shop id").fill(shop_id)
        await dialog.get_by_role("button", name="Open chat").click()
        await expect(bob.locator(".chat-title")).to_have_text("小米旗舰店")
        await expect(bob.locator(".chat-sub")).to_have_text(f"Shop id {shop_id}")

        # Alice is made an agent while her page is open; the first customer brings the tab.
        r = await http.put(
            f"/api/v1/shops/{shop_id}/agents/{people['alice']['user_id']}",
            json={"role": "agent", "skills": ["pre_sale", "after_sale"], "capacity": 5},
            headers=owner,
        )
        assert r.status == 200, await r.text()
        await send(bob, "你好，这款手机有货吗？")  # noqa: RUF001
        await expect(bob).to_have_url(re.compile(r"#/c/\d+$"))
        await expect(bob.locator(".chat-title")).to_have_text("小米旗舰店")
        await expect(bob.locator(".chat-sub")).to_have_text("Chatting with 爱丽丝")
        await expect(alice.get_by_role("tab", name="Agent")).to_be_visible()
        await alice.get_by_role("tab", name="Agent").click()
        mine = alice.get_by_role("list", name="My customers in 小米旗舰店")
        await mine.locator(".person-main").click()
        await expect(alice.locator(".chat-title")).to_have_text("鲍勃 · 小米旗舰店")

        # Closing the session asks first; cancelling keeps it open.
        await alice.get_by_role("button", name="Close session").click()
        confirm = alice.get_by_role("dialog", name="Close this session?")
        await expect(confirm.locator(".confirm-text")).to_contain_text("鲍勃 will see that the chat is closed")
        await shot(alice, "fix-close-session-confirm")
        await confirm.get_by_role("button", name="Cancel").click()
        await expect(confirm).to_have_count(0)
        await expect(alice.locator(".composer")).to_be_visible()
        r = await http.get(
            f"/api/v1/shops/{shop_id}/service", headers={"Authorization": "Bearer " + people["bob"]["token"]}
        )
        assert (await r.json())["status"] == "active"
        await alice.get_by_role("button", name="Close session").click()
        await confirm.get_by_role("button", name="Close session").click()
        await expect(bob.locator(".chat-sub")).to_have_text("Chat closed · write again to start a new one")

        # The customer rates the closed session.
        await bob.locator(".chat-head").get_by_role("button", name="Rate this chat").click()
        rating = bob.get_by_role("dialog", name="Rate this chat")
        await rating.get_by_role("button", name="Send rating").click()
        await expect(rating.locator(".form-error")).to_have_text("Choose 1 to 5 stars.")
        await rating.get_by_role("radio", name="4 of 5").click()
        await expect(rating.locator(".form-error")).to_be_empty()
        await rating.get_by_label("Comment").fill("回复很快")
        await shot(bob, "fix-rate")
        await rating.get_by_role("button", name="Send rating").click()
        await expect(rating).to_have_count(0)
        await expect(bob.locator(".chat-sub")).to_have_text(
            "Chat closed · you rated it 4 of 5 · write again to start a new one"
        )
        await expect(bob.locator(".chat-head").get_by_role("button", name="Change rating")).to_be_visible()
        await shot(bob, "fix-rated")
        r = await http.get(
            f"/api/v1/shops/{shop_id}/service", headers={"Authorization": "Bearer " + people["bob"]["token"]}
        )
        session = await r.json()
        assert (session["status"], session["rating"], session["comment"]) == ("closed", 4, "回复很快")

        # A link to a shop that does not exist says so, with nothing to write into (opened
        # as a fresh page load: the shop is looked up once the connection is up).
        await bob.goto("about:blank")
        await bob.goto(f"{server.url}/#/s/99999")
        await expect(bob.locator(".chat-title")).to_have_text("No such shop")
        await expect(bob.locator(".chat-gone")).to_have_text(
            "There is no shop with id 99999. Check the number with the shop."
        )
        await expect(bob.locator(".composer")).to_be_hidden()
        await shot(bob, "fix-no-such-shop")


USERNAME_RULE = (
    "A username is 3 to 32 characters long and uses only letters a-z or A-Z, digits 0-9, and _ . - (no spaces)."
)


async def test_sign_up_says_what_a_username_is_and_a_lockout_says_how_long(
    make_server: MakeServer, contexts: list[BrowserContext]
) -> None:
    # One free failure, then a lockout of 600 s (10 minutes).
    server = await make_server(login_free_failures=1, login_backoff_base_s=600)
    await users(server, ("alice", "爱丽丝"))
    page = await contexts[0].new_page()
    await page.goto(server.url)
    await page.get_by_role("button", name="Create an account").click()
    error = page.locator(".login-card .form-error")
    username = page.get_by_label("Username")
    await page.get_by_label("Password").fill(PASSWORD)
    for bad in ("鲍勃", "ab", "bob smith", "bob!"):
        await username.fill(bad)
        await page.get_by_role("button", name="Create account").click()
        await expect(error).to_have_text(USERNAME_RULE)
        await expect(username).to_have_attribute("aria-invalid", "true")
        assert await page.evaluate("location.hash") == ""  # still the sign-up form
    await shot(page, "fix-signup-username")
    await username.fill("bob")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Create account").click()
    await expect(error).to_have_text("A password has at least 8 characters.")
    await username.fill("ALICE")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(error).to_have_text("That username is taken. Pick another one.")

    # Log in: wrong passwords, then the lockout says how long it lasts.
    await page.get_by_role("button", name="Log in").click()  # the switch below the form
    await expect(page.locator(".login-sub")).to_have_text("Log in to chat")
    await username.fill("alice")
    for _ in range(2):
        await page.get_by_label("Password").fill("not the password")
        async with page.expect_response("**/api/v1/sessions") as answer:
            await page.get_by_role("button", name="Log in").click()
        assert (await answer.value).status == 401
        await expect(error).to_have_text("Wrong username or password.")
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_response("**/api/v1/sessions") as answer:
        await page.get_by_role("button", name="Log in").click()
    assert (await answer.value).status == 429
    await expect(error).to_have_text("Too many failed log-in attempts. Try again in 10 minutes.")
    await shot(page, "fix-lockout")


async def test_a_request_to_a_hung_node_fails_with_timeout_instead_of_spinning(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    """The page's HTTP client bounds every JSON request (yim/web/js/api.js): a node that
    accepts the request and never answers (SIGSTOPped, wedged) yields the error code
    ``timeout`` and a sentence, not a button that spins forever. The route below holds the
    request unanswered, as such a node does; the module is the page's own, with a short bound."""
    page = await contexts[0].new_page()
    await page.goto(server.url)
    held: list[object] = []
    await page.route("**/api/v1/me", lambda route: held.append(route))  # never answered
    # page.evaluate has no bound of its own: without the client's, this would hang, not fail
    outcome = await asyncio.wait_for(
        page.evaluate(
            """async () => {
            const { Api, REQUEST_TIMEOUT_MS } = await import("/static/js/api.js");
            const api = new Api("", { timeoutMs: 500 });
            const started = performance.now();
            try {
                await api.me();
                return { resolved: true };
            } catch (e) {
                return { code: e.code, message: e.message, waited: performance.now() - started,
                         fallback: REQUEST_TIMEOUT_MS };
            }
        }"""
        ),
        timeout=10,
    )
    assert held, "the request never reached the held route"
    assert outcome.get("code") == "timeout", outcome
    assert outcome["message"] == "The server did not answer in time. Try again in a moment."
    assert outcome["waited"] >= 500  # it did wait for its bound, it did not fail at once
    assert outcome["fallback"] == 15000  # what the page itself uses (app.js builds Api("") )

    # A node that answers within the bound is not cut off: the same client, a real answer.
    await page.unroute("**/api/v1/me")
    answered = await page.evaluate(
        """async () => {
            const { Api } = await import("/static/js/api.js");
            try { await new Api("", { timeoutMs: 5000 }).me(); return "resolved"; }
            catch (e) { return e.code; }
        }"""
    )
    assert answered == "unauthorized"  # no token: the node answered, in time


async def middle(locator: Locator) -> tuple[float, float]:
    """Where an item of a list is (bounded wait): read again while a render replaces it."""
    async with asyncio.timeout(8):
        while (box := await locator.bounding_box()) is None:
            await asyncio.sleep(0.05)
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def test_a_click_on_the_list_survives_a_render_between_press_and_release(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    """The lists of the sidebar are rebuilt on every render (a message, a presence change):
    one between the press and the release of a click detached the item pressed, and the
    browser clicked nothing. Seen as a chat that did not open on a loaded machine, where a
    render (likely the page's own presence notice, a second after it connects) came mid-click."""
    people = await users(server, ("dora", "朵拉"), ("eric", "埃里克"), ("fay", "菲"))
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.post(
            "/api/v1/messages",
            json={"to": people["dora"]["user_id"], "kind": "text", "body": {"text": "你好"}, "client_msg_id": "c1"},
            headers={"Authorization": "Bearer " + people["eric"]["token"]},
        )
        assert r.status == 201, await r.text()
        dora, fay = Device(http, people["dora"]), Device(http, people["fay"])  # friends, for the Friends tab
        await dora.connect()
        await fay.connect()
        asked = await dora.request("friend_request", to=fay.user_id)
        await fay.request("friend_accept", request_id=asked["request_id"])
        await dora.close()
        await fay.close()
    page = await contexts[0].new_page()
    await login_in_ui(page, server.url, "dora", "朵拉")
    item = conv_item(page, "埃里克")
    await page.mouse.move(*await middle(item))
    await page.mouse.down()
    await page.evaluate("window.yim.sidebar.render()")  # what a pushed message or presence does
    await page.mouse.up()
    await expect(page.locator(".chat-title")).to_have_text("埃里克")
    await expect(page.locator(".msg.theirs .text")).to_have_text(["你好"])
    # and the render put off during the press ran after it: the list shows the chat open, read
    await expect(item).to_have_attribute("aria-current", "page")
    await expect(item.locator(".badge")).to_have_count(0)

    # The same in the Friends tab: a friend pressed while the list is rebuilt opens a chat.
    await page.get_by_role("tab", name="Friends").click()
    friend = page.get_by_role("list", name="Friends").locator(".person", has_text="菲").locator(".person-main")
    await page.mouse.move(*await middle(friend))
    await page.mouse.down()
    await page.evaluate("window.yim.sidebar.render()")
    await page.mouse.up()
    await expect(page.locator(".chat-title")).to_have_text("菲")
