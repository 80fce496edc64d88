"""The web client in 简体中文 and English.

Static checks (no browser): every t()/tn() text in yim/web/js has its Chinese entry, with
the same {placeholders}; the catalog holds nothing that no code uses; and no literal that
the page shows (an h() child, an aria-label, title or placeholder, a dialog's or menu's
label, a toast, an Error's text) bypasses t(). tests/jsscan.py does the scanning.

In a browser (fixtures of tests/test_web.py): a zh-CN browser gets the login page and the
chat in Chinese with dates in Chinese, an en-US one in English, and the language chosen in
Settings wins over the browser's and stays after a reload."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, expect

from tests import test_web
from tests.jsscan import tokenize, translation_keys, untranslated
from tests.test_web import PASSWORD, VIEWPORT, _http_login, _ws_send, shot
from yim.node import NodeServer

browser = test_web.browser
pytestmark = pytest.mark.backends("sqlite")  # the page's language does not depend on the store

JS = Path(__file__).resolve().parent.parent / "yim" / "web" / "js"
CATALOG = JS / "i18n" / "zh-CN.js"
PLACEHOLDER = re.compile(r"\{\w+\}")


def sources() -> list[Path]:
    return sorted(p for p in JS.rglob("*.js") if p.parent.name != "i18n")


def catalog() -> dict[str, str]:
    """The zh-CN catalog's entries ("English": "中文"), read with the same tokenizer."""
    toks = tokenize(CATALOG.read_text(encoding="utf-8"))
    entries: dict[str, str] = {}
    for i in range(len(toks) - 2):
        key, colon, value = toks[i : i + 3]
        # A key is a string or, where JavaScript allows it, a bare word (Notifications: "通知").
        if key.kind in ("str", "id") and colon.text == ":" and value.kind == "str":
            # Two features may both bring a text (each appends its own block): fine if they agree.
            assert entries.get(key.value, value.value) == value.value, f"{key.value!r}: two translations"
            entries[key.value] = value.value
    return entries


def used_keys() -> dict[str, str]:
    """Every t()/tn() text in the client ({key: where}); for tn() the plural is the key."""
    keys: dict[str, str] = {}
    bad: list[str] = []
    for path in sources():
        found = translation_keys(tokenize(path.read_text(encoding="utf-8")))
        where = path.relative_to(JS)
        bad += [f"{where}:{line}: {fn}() needs literal texts" for fn, line in found.bad]
        for key, line in found.plain:
            keys.setdefault(key, f"{where}:{line}")
        for _one, other, line in found.plural:
            keys.setdefault(other, f"{where}:{line}")
    assert not bad, "\n".join(bad)
    return keys


def test_every_text_has_its_chinese_and_the_catalog_nothing_more() -> None:
    keys, zh = used_keys(), catalog()
    assert len(keys) > 300  # the scan found the client's texts, not nothing
    missing = [f"{where}: {key!r}" for key, where in keys.items() if key not in zh]
    assert not missing, "texts without a zh-CN entry:\n" + "\n".join(missing)
    unused = [key for key in zh if key not in keys]
    assert not unused, f"zh-CN entries that no code uses: {unused}"
    for key, text in zh.items():
        assert sorted(PLACEHOLDER.findall(key)) == sorted(PLACEHOLDER.findall(text)), (key, text)
    # An "entry" that is the English again is a translation not written yet.
    same = [key for key, text in zh.items() if text == key and re.search(r"[A-Za-z]{2}", key)]
    assert not same, f"zh-CN entries still in English: {same}"


def test_no_visible_literal_bypasses_t() -> None:
    found = [
        f"{path.relative_to(JS)}:{tok.line}: {tok.text}"
        for path in sources()
        for tok in untranslated(tokenize(path.read_text(encoding="utf-8")))
    ]
    assert not found, "shown untranslated (wrap in t()):\n" + "\n".join(found)


def test_the_scanner_catches_what_it_must() -> None:
    """The check above can fail: each kind of untranslated literal is found, t() is not."""
    src = """
    import { t } from "./i18n.js";
    const re = /"not a string/g;
    h("p", { class: "note", title: "Shown title" }, "Shown text", t("Fine"), ok ? "Yes" : `No ${x}`);
    h("input", { placeholder: t("Fine"), "aria-label": "Label" });
    el.textContent = "Assigned";
    el.setAttribute("aria-label", `Count ${n}`);
    toast("Toasted");
    throw new Error("Failed");
    openMenu(at, [{ label: "Item", onSelect }], "Menu");
    field("Field", input);
    if (err.code === "not_found") x();
    h("h1", null, "yim", h("span", null, "y"), "·", " ");
    """
    shown = [tok.value for tok in untranslated(tokenize(src))]
    expected = ["Shown text", "Yes", "No ", "Shown title", "Label", "Assigned", "Count ", "Toasted", "Failed"]
    assert sorted(shown) == sorted([*expected, "Item", "Menu", "Field"])
    keys = translation_keys(tokenize(src + 'tn("{n} cat", "{n} cats", n); t(`tpl`);'))
    assert [k for k, _ in keys.plain] == ["Fine", "Fine"]
    assert [(o, p) for o, p, _ in keys.plural] == [("{n} cat", "{n} cats")]
    assert [fn for fn, _ in keys.bad] == ["t"]


# --- in a browser ---------------------------------------------------------------------

# The day separator's text for 15 January 2025, noon in Shanghai (the contexts' time zone).
DAY_LABEL = "import('/static/js/format.js').then((f) => f.dayLabel(Date.UTC(2025, 0, 15, 4)))"


@pytest_asyncio.fixture
async def make_context(browser: Browser) -> AsyncIterator[object]:
    made: list[BrowserContext] = []
    errors: list[str] = []

    async def make(locale: str) -> BrowserContext:
        c = await browser.new_context(viewport=VIEWPORT, locale=locale, timezone_id="Asia/Shanghai")
        c.set_default_timeout(8000)
        c.on("weberror", lambda e: errors.append(str(e.error)))
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def test_the_page_speaks_the_browsers_language_or_the_one_chosen(
    server: NodeServer, make_context: object
) -> None:
    make = make_context
    async with aiohttp.ClientSession(server.url) as http:
        alice = await _http_login(http, "alice", "爱丽丝")
        bob = await _http_login(http, "bob", "鲍勃")
        await _ws_send(http, bob["token"], alice["user_id"], ["你好"])

    # A Chinese browser: the login page, the chat list, a chat and its day separator.
    zh = await (await make("zh-CN")).new_page()  # type: ignore[operator]
    await zh.goto(server.url)
    await expect(zh.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(zh.locator(".login-sub")).to_have_text("登录后开始聊天")
    await zh.get_by_label("用户名").fill("alice")
    await zh.get_by_label("密码").fill(PASSWORD)
    await zh.get_by_role("button", name="登录", exact=True).click()
    await expect(zh.get_by_role("tab", name="好友")).to_be_visible()
    await expect(zh.locator(".chat-empty p")).to_have_text("选择一个会话，或输入用户名发起聊天。")  # noqa: RUF001 - Chinese punctuation
    await zh.locator(".conv", has_text="鲍勃").click()
    await expect(zh.locator(".day-sep")).to_have_text("今天")
    await expect(zh.get_by_role("button", name="发送", exact=True)).to_be_visible()
    await expect(zh.get_by_placeholder("发消息")).to_be_visible()
    await shot(zh, "i18n-zh-chat")
    # Dates of other years, as the day separators and lists show them: Intl in the page's language.
    assert await zh.evaluate(DAY_LABEL) == "2025年1月15日"

    # An English browser: English, whatever the server's users write.
    en = await (await make("en-US")).new_page()  # type: ignore[operator]
    await en.goto(server.url)
    await expect(en.locator("html")).to_have_attribute("lang", "en")
    await expect(en.locator(".login-sub")).to_have_text("Log in to chat")
    await en.get_by_label("Username").fill("alice")
    await en.get_by_label("Password").fill(PASSWORD)
    await en.get_by_role("button", name="Log in", exact=True).click()
    await expect(en.get_by_role("tab", name="Friends")).to_be_visible()
    assert await en.evaluate(DAY_LABEL) == "Jan 15, 2025"

    # Choosing 简体中文 in Settings reloads the page in Chinese, and a reload keeps it.
    await en.get_by_role("link", name="Settings").click()
    await en.get_by_role("combobox", name="Language").select_option(label="简体中文")
    await expect(en.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(en.locator(".page-title")).to_have_text("设置")
    await en.reload()
    await expect(en.locator(".page-title")).to_have_text("设置")
    await expect(en.get_by_role("tab", name="消息")).to_be_visible()
    await expect(en.get_by_role("combobox", name="语言")).to_have_value("zh-CN")
    await shot(en, "i18n-zh-settings")
    assert await en.evaluate(DAY_LABEL) == "2025年1月15日"  # the page's language, not the browser's
    # …and back to English.
    await en.get_by_role("combobox", name="语言").select_option(label="English")
    await expect(en.locator(".page-title")).to_have_text("Settings")
    await expect(en.locator("html")).to_have_attribute("lang", "en")
