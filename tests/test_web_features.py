"""The web client's features beyond one-to-one chat, in a real browser (Debian's chromium,
Playwright's async API; fixtures and helpers from tests/test_web.py): groups with
@mentions, read receipts, typing and recall; friends, presence, blocking and media; history
search and the customer-service agent view.

Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import io
import re
from typing import Any

import aiohttp
from PIL import Image, ImageDraw
from playwright.async_api import BrowserContext, Page, expect

from tests import test_web
from tests.rawclient import Device
from tests.test_web import PASSWORD, _http_login, _ws_send, send, shot
from yim.node import NodeServer

# The browser fixtures of tests/test_web.py (pytest finds fixtures among a module's attributes).
browser = test_web.browser
contexts = test_web.contexts


async def login_in_ui(page: Page, url: str, username: str, display_name: str) -> None:
    await page.goto(url)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator(".me-name")).to_have_text(display_name)


async def users(server: NodeServer, *names: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """Register users over HTTP: {username: login (token, user_id, ...)}."""
    async with aiohttp.ClientSession(server.url) as http:
        return {name: await _http_login(http, name, display) for name, display in names}


def png(width: int, height: int) -> bytes:
    img = Image.new("RGB", (width, height), (15, 118, 110))
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(250, 204, 21))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


HELLO = "大家好，设计稿在共享盘"  # noqa: RUF001 - full-width punctuation, as people type it
REPLY = "收到，配色我再调一下"  # noqa: RUF001


def conv_item(page: Page, name: str) -> Any:
    return page.locator("#panel-chats .conv", has_text=name)


async def test_group_with_mention_typing_receipts_recall_and_members(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("carol", "陈晓"), ("dave", "大卫"))
    async with aiohttp.ClientSession(server.url) as http:
        await _ws_send(http, people["carol"]["token"], people["alice"]["user_id"], ["明天的评审改到下午两点"])
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")

    # Alice creates a group with two members named by username.
    await alice.get_by_role("button", name="New group or shop chat").click()
    await alice.get_by_role("menuitem", name="New group").click()
    await alice.get_by_label("Group name").fill("项目组")
    await alice.get_by_label("Members (usernames)").fill("bob, carol")
    await alice.get_by_role("button", name="Create group").click()
    await expect(alice.locator(".chat-title")).to_have_text("项目组")
    await expect(alice.locator(".chat-sub")).to_have_text("3 members")
    await expect(alice.locator(".system-note")).to_have_text(["You created the group “项目组”"])
    await expect(conv_item(bob, "项目组")).to_be_visible()
    conv_id = alice.url.rsplit("/", 1)[1]
    async with aiohttp.ClientSession(server.url) as http:  # Carol says hello from another client
        r = await http.post(
            "/api/v1/messages",
            json={
                "conv_id": conv_id,
                "kind": "text",
                "body": {"text": HELLO},
                "client_msg_id": "c1",
            },
            headers={"Authorization": "Bearer " + people["carol"]["token"]},
        )
        assert r.status == 201, await r.text()
    await expect(alice.locator(".msg.theirs .sender")).to_have_text(["陈晓"])

    # An @mention chosen from the member picker.
    box = alice.get_by_label("Message", exact=True)
    await box.press_sequentially("@鲍")
    picker = alice.get_by_role("listbox", name="Mention someone")
    await expect(picker.get_by_role("option")).to_have_count(1)
    await expect(picker.get_by_role("option", name="@everyone")).to_have_count(0)  # filtered out by "鲍"
    await picker.get_by_role("option").first.dispatch_event("pointerdown")
    await expect(box).to_have_value("@鲍勃 ")
    await box.press_sequentially("请看一下新版设计稿")
    await box.press("Enter")
    await expect(alice.locator(".msg.mine .status")).to_have_attribute("data-status", "sent")

    # Bob's list marks the group as mentioning him until he reads it.
    group = conv_item(bob, "项目组")
    await expect(group.locator(".mention-mark")).to_be_visible()
    await expect(group.locator(".badge")).to_have_text("2")
    await expect(group.locator(".conv-preview")).to_have_text("爱丽丝: @鲍勃 请看一下新版设计稿")
    await shot(bob, "group-mentioned")
    await group.click()
    await expect(bob.locator(".msg.theirs .sender")).to_have_text(["陈晓", "爱丽丝"])
    await expect(bob.locator(".msg.theirs.mentions-me .text")).to_have_text("@鲍勃 请看一下新版设计稿")
    await expect(bob.locator(".system-note")).to_have_text(["爱丽丝 created the group “项目组”"])
    await expect(group.locator(".mention-mark")).to_have_count(0)

    # A picture in the group, shown inline under its sender's name.
    await bob.locator("input[type=file]").set_input_files(
        files=[{"name": "设计稿.png", "mimeType": "image/png", "buffer": png(480, 360)}]
    )
    await expect(alice.locator(".msg.theirs .media-img")).to_have_js_property("naturalWidth", 320)

    # Bob types: Alice sees it; his messages tell her he read hers (1 of its 2 readers).
    await bob.get_by_label("Message", exact=True).press_sequentially(REPLY)
    await expect(alice.locator(".typing-line")).to_have_text("鲍勃 is typing…")
    await expect(alice.locator(".msg.mine .receipt")).to_have_text("Read by 1 of 2")
    await shot(alice, "group")
    await bob.get_by_label("Message", exact=True).press("Enter")
    await expect(alice.locator(".msg.theirs .text")).to_have_text([HELLO, REPLY])
    await expect(alice.locator(".typing-line")).to_be_hidden()

    # Alice recalls her message from its menu; both sides show the marker.
    await alice.locator(".msg.mine .bubble").hover()
    await alice.locator(".msg.mine").get_by_role("button", name="Message actions").click()
    await alice.get_by_role("menuitem", name="Recall").click()
    await alice.get_by_role("dialog", name="Recall this message?").get_by_role("button", name="Recall").click()
    await expect(alice.locator(".recalled-note")).to_have_text("You recalled a message")
    await expect(bob.locator(".recalled-note")).to_have_text("爱丽丝 recalled a message")
    await expect(bob.locator(".msg .text")).to_have_text([HELLO, REPLY])

    # Members and roles; Alice (the owner) adds Dave.
    await alice.get_by_role("button", name="Group info").click()
    members = alice.get_by_role("list", name="Members")
    await expect(members.locator(".person-name")).to_have_text(["爱丽丝 (you)", "鲍勃", "陈晓"])
    await expect(members.locator('[data-role="owner"] .role-badge')).to_have_text("Owner")
    await alice.get_by_label("Usernames to add").fill("dave")
    await alice.get_by_role("button", name="Add", exact=True).click()
    await expect(members.locator(".person")).to_have_count(4)
    await shot(alice, "group-info")
    await alice.get_by_role("button", name="Close").click()
    await expect(alice.locator(".system-note").last).to_have_text("You added 大卫")
    await expect(alice.locator(".chat-sub")).to_have_text("4 members")

    # Bob leaves: his chat turns read-only, Alice sees him go.
    await bob.get_by_role("button", name="Group info").click()
    await bob.get_by_role("button", name="Leave group").click()
    await expect(bob.locator(".chat-gone")).to_have_text("You are no longer a member of this group.")
    await expect(bob.locator(".composer")).to_be_hidden()
    await expect(alice.locator(".system-note").last).to_have_text("鲍勃 left the group")
    await expect(alice.locator(".chat-sub")).to_have_text("3 members")


async def set_hidden(page: Page, hidden: bool) -> None:
    """Play the page going to the background (or coming back), as a minimized tab does."""
    await page.evaluate(
        """(hidden) => {
            const state = hidden ? 'hidden' : 'visible';
            Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        hidden,
    )


async def test_friends_presence_blocking_and_media(server: NodeServer, contexts: list[BrowserContext]) -> None:
    await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"))
    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")
    await login_in_ui(bob, server.url, "bob", "鲍勃")

    # Alice asks Bob to be friends; Bob sees the request with a badge and accepts.
    await alice.get_by_role("tab", name="Friends").click()
    await alice.get_by_label("Username to add as a friend").fill("bob")
    await alice.get_by_role("button", name="Add", exact=True).click()
    await expect(alice.locator(".toast")).to_have_text("Friend request sent to 鲍勃.")
    await expect(alice.get_by_role("list", name="Sent requests").locator(".person-name")).to_have_text(["鲍勃"])
    await expect(bob.locator(".tab-badge")).to_have_text("1")
    await bob.get_by_role("tab", name="Friends").click()
    requests = bob.get_by_role("list", name="Friend requests")
    await expect(requests.locator(".person-name")).to_have_text(["爱丽丝"])
    await shot(bob, "friend-request")
    await requests.get_by_role("button", name="Accept").click()
    await expect(bob.locator(".tab-badge")).to_be_hidden()
    await expect(bob.get_by_role("list", name="Friends").locator(".person-name")).to_have_text(["爱丽丝"])

    # Presence: Bob is online, away while his page is hidden, offline once it is gone.
    friend = alice.get_by_role("list", name="Friends").locator(".person", has_text="鲍勃")
    dot = friend.locator(".presence-dot")
    await expect(dot).to_have_attribute("data-presence", "online")
    await expect(alice.get_by_role("list", name="Sent requests")).to_be_hidden()
    await set_hidden(bob, True)
    await expect(dot).to_have_attribute("data-presence", "away")
    await set_hidden(bob, False)
    await expect(dot).to_have_attribute("data-presence", "online")
    await shot(alice, "friends")
    await bob.close()
    await expect(dot).to_have_attribute("data-presence", "offline")
    bob = await contexts[1].new_page()
    await bob.goto(server.url)
    await expect(dot).to_have_attribute("data-presence", "online")

    # An image: uploaded by Alice, shown inline from its thumbnail on Bob's side, full size on click.
    await friend.locator(".person-main").click()
    await expect(alice.locator(".chat-title")).to_have_text("鲍勃")
    await expect(alice.locator(".chat-head .presence-dot")).to_have_attribute("data-presence", "online")
    picture = png(640, 480)
    await alice.locator("input[type=file]").set_input_files(
        files=[{"name": "海边.png", "mimeType": "image/png", "buffer": picture}]
    )
    await expect(alice).to_have_url(re.compile(r"#/c/\d+$"))
    await expect(alice.locator(".msg.mine .status")).to_have_attribute("data-status", "sent")
    chat = conv_item(bob, "爱丽丝")
    await expect(chat.locator(".conv-preview")).to_have_text("[Image]")
    await bob.get_by_role("tab", name="Chats").click()
    await chat.click()
    img = bob.locator(".msg.theirs .media-img")
    await expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    await expect(img).to_have_js_property("naturalWidth", 320)  # the thumbnail (fits 320 px), not the original
    await bob.get_by_role("button", name="Open image 海边.png").click()
    full = bob.locator(".lightbox-img")
    await expect(full).to_have_js_property("naturalWidth", 640)
    await shot(bob, "image")
    await bob.keyboard.press("Escape")
    await expect(full).to_have_count(0)

    # A file: name and size, downloaded with the token.
    notes = "会议纪要：周五发布。\n".encode() * 40  # noqa: RUF001
    await alice.locator("input[type=file]").set_input_files(
        files=[{"name": "会议纪要.txt", "mimeType": "text/plain", "buffer": notes}]
    )
    card = bob.locator(".msg.theirs .file-card")
    await expect(card.locator(".file-name")).to_have_text("会议纪要.txt")
    await expect(card.locator(".file-size")).to_have_text(f"{len(notes) / 1024:.1f} KB")
    async with bob.expect_download() as info:
        await card.get_by_role("button", name="Download 会议纪要.txt").click()
    download = await info.value
    assert download.suggested_filename == "会议纪要.txt"
    assert (await download.path()).read_bytes() == notes

    # Alice blocks Bob from his menu: his messages bounce; unblocking lets them through.
    await alice.locator(".chat-head").get_by_role("button", name="More about 鲍勃").click()
    await alice.get_by_role("menuitem", name="Block").click()
    await alice.get_by_role("dialog", name="Block 鲍勃?").get_by_role("button", name="Block").click()
    await expect(alice.locator(".toast").last).to_have_text("鲍勃 blocked.")
    await send(bob, "还在吗？")  # noqa: RUF001
    await expect(bob.locator(".msg.mine.is-failed .failed-note")).to_contain_text("doesn't accept your messages")
    await alice.get_by_role("tab", name="Friends").click()
    await expect(alice.get_by_role("list", name="Blocked users").locator(".person-name")).to_have_text(["鲍勃"])
    await expect(alice.get_by_role("list", name="Friends").locator(".person")).to_have_count(0)
    await alice.locator(".chat-head").get_by_role("button", name="More about 鲍勃").click()
    await alice.get_by_role("menuitem", name="Unblock").click()
    await expect(alice.get_by_role("list", name="Blocked users")).to_be_hidden()
    await bob.locator(".failed-note").get_by_role("button", name="Retry").click()
    await expect(alice.locator(".msg.theirs .text")).to_have_text(["还在吗？"])  # noqa: RUF001


async def test_search_jumps_to_a_chinese_message_and_an_agent_serves_a_customer(
    server: NodeServer, contexts: list[BrowserContext]
) -> None:
    people = await users(server, ("alice", "爱丽丝"), ("bob", "鲍勃"), ("carol", "陈晓"), ("owner", "店主"))
    async with aiohttp.ClientSession(server.url) as http:
        # History to search: the hit is far above the newest page.
        texts = ["我们要支持亿级消息量", *(f"第 {i} 条进度" for i in range(1, 80))]
        await _ws_send(http, people["carol"]["token"], people["alice"]["user_id"], texts)
        # A shop whose admin Alice also serves customers.
        auth = {"Authorization": "Bearer " + people["owner"]["token"]}
        r = await http.post("/api/v1/shops", json={"name": "小米旗舰店"}, headers=auth)
        assert r.status == 201, await r.text()
        shop_id = (await r.json())["shop_id"]
        for name, role in (("alice", "admin"), ("carol", "agent")):
            r = await http.put(
                f"/api/v1/shops/{shop_id}/agents/{people[name]['user_id']}",
                json={"role": role, "skills": ["pre_sale", "after_sale"], "capacity": 5},
                headers=auth,
            )
            assert r.status == 200, await r.text()

    alice, bob = await contexts[0].new_page(), await contexts[1].new_page()
    await login_in_ui(alice, server.url, "alice", "爱丽丝")

    # Search finds the Chinese message (a substring, no spaces) and jumps to it.
    await alice.get_by_role("tab", name="Search").click()
    await alice.get_by_label("Search messages").fill("亿级消息")
    await alice.get_by_label("Search messages").press("Enter")
    hit = alice.locator(".search-hit")
    await expect(hit).to_have_count(1)
    await expect(hit.locator(".conv-name")).to_have_text("陈晓")
    await expect(hit.locator("mark")).to_have_text("亿级消息")
    await expect(hit.locator(".hit-text")).to_have_text("陈晓: 我们要支持亿级消息量")
    await shot(alice, "search")
    await hit.click()
    target = alice.locator(".msg", has_text="我们要支持亿级消息量")
    await expect(target).to_be_in_viewport()
    await expect(alice.locator(".msg.theirs").last).to_have_text(re.compile("第 79 条进度"))

    # A customer writes to the shop by its id and gets one conversation with it.
    await login_in_ui(bob, server.url, "bob", "鲍勃")
    await bob.get_by_role("button", name="New group or shop chat").click()
    await bob.get_by_role("menuitem", name="Chat with a shop").click()
    await bob.get_by_label("Shop id").fill(shop_id)
    await bob.get_by_role("button", name="Open chat").click()
    await expect(bob.locator(".chat-title")).to_have_text("小米旗舰店")
    await send(bob, "你好，我的订单 #12345678 还没到")  # noqa: RUF001
    await expect(bob).to_have_url(re.compile(r"#/c/\d+$"))
    await expect(bob.locator(".chat-title")).to_have_text("小米旗舰店")
    await expect(bob.locator(".chat-sub")).to_have_text("Chatting with 爱丽丝")

    # The agent sees the session assigned to her, with its category, and the dashboard.
    await alice.get_by_role("tab", name="Agent").click()
    mine = alice.get_by_role("list", name="My customers in 小米旗舰店")
    await expect(mine.locator(".person-name")).to_have_text(["鲍勃"])
    await expect(mine.locator(".person-sub")).to_contain_text("after-sale")
    await expect(alice.locator(".stat", has_text="active").locator(".stat-value")).to_have_text("1")
    await expect(alice.get_by_label("My status in 小米旗舰店")).to_have_value("online")
    await shot(alice, "agent")
    await mine.locator(".person-main").click()
    await expect(alice.locator(".chat-title")).to_have_text("鲍勃 · 小米旗舰店")
    await expect(alice.locator(".msg.theirs .text")).to_have_text(["你好，我的订单 #12345678 还没到"])  # noqa: RUF001
    await send(alice, "您好，我来查一下物流")  # noqa: RUF001
    await expect(bob.locator(".msg.theirs .text")).to_have_text(["您好，我来查一下物流"])  # noqa: RUF001
    await expect(bob.locator(".msg.theirs .sender")).to_have_text(["爱丽丝"])

    # Closing the session ends it on both sides.
    await alice.get_by_role("button", name="Close session").click()
    await alice.get_by_role("dialog", name="Close this session?").get_by_role("button", name="Close session").click()
    await expect(bob.locator(".chat-sub")).to_have_text("Chat closed · write again to start a new one")
    await expect(alice.locator(".chat-gone")).to_have_text("This customer is no longer assigned to you.")
    await expect(alice.locator(".composer")).to_be_hidden()
    await alice.get_by_role("tab", name="Agent").click()
    await expect(mine).to_have_count(0)

    # The customer writes again: a new session, back to the same agent, who hands it to Carol.
    async with aiohttp.ClientSession(server.url) as http:
        carol = Device(http, people["carol"])  # the other agent, online in another client
        await carol.connect()
        await send(bob, "还有一个问题")
        await expect(mine.locator(".person-name")).to_have_text(["鲍勃"])
        await mine.locator(".person-main").click()
        await alice.locator(".chat-head").get_by_role("button", name="Transfer").click()
        await alice.get_by_label("Transfer to").select_option(label="陈晓 (online)")
        await alice.get_by_role("dialog").get_by_role("button", name="Transfer").click()
        await expect(bob.locator(".chat-sub")).to_have_text("Chatting with 陈晓")
        await expect(alice.locator(".chat-gone")).to_be_visible()
        page = await carol.request("history", conv_id=alice.url.rsplit("/", 1)[1])
        assert page["messages"][-1]["body"] == {"text": "还有一个问题"}
        await carol.close()

    # Her status: away takes no new customers.
    await alice.get_by_role("tab", name="Agent").click()
    await alice.get_by_label("My status in 小米旗舰店").select_option("away")
    agents = alice.get_by_role("list", name="Agents")
    await expect(agents.locator(".person", has_text="爱丽丝").locator(".person-sub")).to_have_text("admin · away · 0/5")
