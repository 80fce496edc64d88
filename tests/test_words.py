"""Sensitive-word filter: normalisation and matching (Chinese, mixed, full-width,
zero-width, spaced, case), masking that leaves the rest byte-identical, reloading without a
restart, settings, the cost per 100 characters, and end to end through real nodes."""

# ruff: noqa: RUF001 - the texts use full-width characters and punctuation on purpose

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import time
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, ProtocolError, make_users
from tests.report import LINES
from yim.config import SettingsError, WordList, load_settings
from yim.protocol.errors import ERROR_STATUS, YimError
from yim.services.words import WordFilter, build_automaton, mask, normalise, normalise_mapped

# --- normalising -------------------------------------------------------------------------------

NORMALISED = [
    ("敏感词", "敏感词"),
    ("敏 感 词", "敏感词"),  # spaces between Chinese characters
    ("敏　感　词", "敏感词"),  # ideographic space
    ("敏*感*词", "敏感词"),
    ("敏。感，词！", "敏感词!"),  # punctuation between; the last one has no CJK after it
    ("敏\u200b感\u200d词", "敏感词"),  # zero-width space / joiner
    ("敏 \u200b ★ 感词", "敏感词"),  # a mixed run of spacing, invisible and symbol characters
    ("ＦＵＣＫ", "fuck"),  # full-width -> half-width, case-folded
    ("FuCk", "fuck"),
    ("f\u200bu\ufeffc\u00adk", "fuck"),  # invisible characters go everywhere
    ("f u c k", "f u c k"),  # spaces between Latin letters stay
    ("bad word", "bad word"),
    ("Straße", "strasse"),
    ("ｈｅｌｌｏ 世界", "hello 世界"),  # a space between Latin and CJK stays
    ("世界 hello", "世界 hello"),
    ("第1 2名", "第1 2名"),  # digits are not spacing
    ("敏_感", "敏感"),
    ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana -> full-width
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_normalise_shortcuts_change_nothing() -> None:
    """normalise() skips the steps a text cannot need (ASCII, no full-width form, nothing
    invisible, no gap): on random texts it gives exactly what every step run in full gives."""
    from yim.services.words import _CJK_GAP, _INVISIBLE_RUN

    def in_full(text: str) -> str:
        return _CJK_GAP.sub("", _INVISIBLE_RUN.sub("", unicodedata.normalize("NFKC", text).casefold()))

    rng = random.Random(23)
    alphabets = [
        "你好敏感词ｶﾀ①ⅫßﬁΣς",  # letters and digits only: no gap, whatever the script
        "你好敏感词 ,，。！\u200b\u3000_FUCKfuckＦＵＣＫßﬁe\u0301①🙂\n",
        "Hello World_-Ab1 ",  # ASCII
    ]
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert normalise(text) == in_full(text), text


# --- matching and masking ------------------------------------------------------------------------

ENTRIES = ["敏感词", "FUCK", "bad word", "法轮", "ｓｐａｍ"]

MASKED = [
    ("你好，世界", "你好，世界"),  # clean
    ("这是敏感词啊", "这是***啊"),
    ("这是敏 感 词啊", "这是* * *啊"),  # only the matched characters; the spaces stay
    ("这是敏*感*词啊", "这是*****啊"),
    ("这是敏\u200b感词", "这是*\u200b**"),  # the zero-width character stays where it was
    ("ＦＵＣＫ you", "**** you"),
    ("what the FuCk!", "what the ****!"),
    ("what a Bad Word.", "what a ********."),
    ("a badword", "a badword"),  # the entry's space is required
    ("SPAM and Spam", "**** and ****"),  # a full-width entry matches half-width text
    ("法轮法轮", "****"),
    ("e\u0301 法 \u200b 轮 é", "e\u0301 * \u200b * é"),  # a combining mark keeps its base
    ("🙂敏感词🙂", "🙂***🙂"),
    ("混合 text 敏感词 and fuck 结束", "混合 text *** and **** 结束"),
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_mask(text: str, expected: str) -> None:
    automaton = build_automaton([normalise(e) for e in ENTRIES])
    assert mask(automaton, text) == expected
    # Everything that is not a star in the result is the original text, byte for byte.
    assert len(mask(automaton, text).encode()) <= len(text.encode())


def test_mask_keeps_every_unmatched_character_identical() -> None:
    automaton = build_automaton([normalise(e) for e in ENTRIES])
    rng = random.Random(7)
    alphabet = "你好世界敏感词法轮 ,.!，。\u200bFUCKfuckＦＵＣＫabc🙂\n\t"
    starred = 0
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        masked = mask(automaton, text)
        # one "*" per masked character, every other character unchanged in its place
        assert len(masked) == len(text)
        assert all(m == t or m == "*" for m, t in zip(masked, text, strict=True))
        starred += masked != text
        if masked != text:
            assert normalise(masked) != normalise(text)
    assert starred > 30  # the random texts did hit entries


def test_mapping_back_to_the_original_characters() -> None:
    """Both ways of mapping (one for one, and character by character when NFKC composes or
    expands) give exactly normalise()'s text, each character traced to where it came from."""
    rng = random.Random(11)
    alphabet = "你好敏感词 ,，。！\u200b\u3000FUCKfuckＦＵＣＫßﬁe\u0301①🙂\n"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        norm, starts, ends = normalise_mapped(text)
        assert norm == normalise(text)
        assert len(starts) == len(ends) == len(norm)
        for k, ch in enumerate(norm):
            assert ch in unicodedata.normalize("NFKC", text[starts[k] : ends[k]]).casefold()


# --- the filter: actions, reload ------------------------------------------------------------------


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def make_filter(tmp_path: Path, reject: list[str], masked: list[str], check_s: float = 5.0) -> WordFilter:
    return WordFilter(
        [
            WordList(path=str(write(tmp_path / "reject.txt", *reject)), action="reject"),
            WordList(path=str(write(tmp_path / "mask.txt", *masked)), action="mask"),
        ],
        check_s,
    )


def test_reject_and_mask_lists(tmp_path: Path) -> None:
    words = make_filter(tmp_path, ["# comment", "", "法轮功", "ＢＬＯＣＫ me"], ["笨蛋", "idiot"])
    with pytest.raises(YimError) as err:
        words.apply("我喜欢法 轮 功", "the message")
    assert err.value.code == "content_blocked"
    assert err.value.message == "the message contains words that are not allowed"  # never the word itself
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("please block ME", "the message")
    assert words.apply("你这个笨 蛋, IDIOT", "the message") == "你这个* *, *****"
    clean = "没问题"
    assert words.apply(clean, "the message") is clean  # clean text: the very same object
    # a text with both: reject wins
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("笨蛋法轮功", "the message")
    assert ERROR_STATUS["content_blocked"] == 422


def test_one_automaton_for_both_lists(tmp_path: Path) -> None:
    """Both lists are matched in one scan: an entry on both lists rejects, a reject entry
    after a mask entry still rejects, and masking touches only the mask list's entries."""
    words = make_filter(tmp_path, ["炸弹", "both"], ["笨蛋", "BOTH", "ab"])
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("Both ways", "x")  # on both lists: reject wins
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("ab 笨蛋 ... 炸 弹", "x")  # two mask hits before the reject one
    assert words.apply("笨蛋 abc", "x") == "** **c"
    (tmp_path / "second").mkdir()
    only_reject = make_filter(tmp_path / "second", ["炸弹"], [])
    assert only_reject.apply("笨蛋", "x") == "笨蛋"


def test_overlapping_and_nested_matches(tmp_path: Path) -> None:
    """Every match counts, also one that overlaps or lies inside another: masking covers
    their union, and a reject entry is found even when a mask entry's match starts first
    and covers part of it (a scan that resumed after each match would miss it)."""
    words = make_filter(tmp_path, ["感词典"], ["敏感", "感词", "ab", "bc", "abcd", "c"])
    assert words.apply("一个敏感词啊", "x") == "一个***啊"  # 敏感 and 感词 overlap
    assert words.apply("abcd e abc", "x") == "**** e ***"  # nested and chained
    assert words.apply("xcx", "x") == "x*x"  # an entry inside longer ones, alone
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("敏感词典", "x")  # 敏感 and 感词 (mask) start before 感词典 (reject)


@pytest.mark.parametrize("text", ["Hello, World!", "\x00\x1f\x7f TAB\tEND", "", "A_B-C d", "MiXeD 123"])
def test_ascii_text_normalises_as_the_full_path_would(text: str) -> None:
    """ASCII text skips NFKC, the invisible characters and the CJK gaps: none can change it."""
    assert text.isascii()
    assert normalise(text) == unicodedata.normalize("NFKC", text).casefold()


def test_entry_that_normalises_to_nothing_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="yim.words"):
        words = make_filter(tmp_path, ["\u200b", "ok词"], [])
    assert any("line 1" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("OK词", "the message")
    assert words.apply("fine", "x") == "fine"


def blocked(words: WordFilter, text: str) -> bool:
    try:
        words.apply(text, "x")
    except YimError as exc:
        assert exc.code == "content_blocked"
        return True
    return False


def bump(path: Path, *lines: str) -> None:
    """Rewrite a list so that its signature surely changes (mtime_ns may not, on a fast write)."""
    write(path, *lines)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_reload_picks_up_a_changed_file_and_keeps_the_old_list_if_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    words = make_filter(tmp_path, ["旧词"], [])
    assert await words.reload(force=False) is False  # nothing changed
    bump(tmp_path / "reject.txt", "新词")
    assert await words.reload(force=False) is True
    assert words.apply("旧词", "x") == "旧词"
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("新 词", "x")

    # not UTF-8: the reload fails, the list in use stays, one warning says why
    (tmp_path / "reject.txt").write_bytes(b"\xff\xfe broken\n")
    os.utime(tmp_path / "reject.txt", ns=(0, time.time_ns() + 2_000_000_000))
    with caplog.at_level(logging.WARNING, logger="yim.words"):
        assert await words.reload(force=False) is False
        assert await words.reload(force=False) is False  # the same broken state: not again
    assert [r.getMessage() for r in caplog.records if "not reloaded" in r.getMessage()] == [
        f"word lists not reloaded, the old ones stay: {tmp_path / 'reject.txt'}: not UTF-8 (byte 0)"
    ]
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("新词", "x")

    # a missing file: the same
    (tmp_path / "reject.txt").unlink()
    assert await words.reload(force=False) is False
    with pytest.raises(YimError, match="content_blocked"):
        words.apply("新词", "x")

    # fixed again: picked up
    bump(tmp_path / "reject.txt", "第三")
    assert await words.reload(force=False) is True
    assert words.apply("新词", "x") == "新词"


async def test_watcher_and_sighup_reload_without_restart(tmp_path: Path) -> None:
    words = make_filter(tmp_path, ["甲乙"], [], check_s=0.05)
    words.start()
    try:
        bump(tmp_path / "reject.txt", "丙丁")
        async with asyncio.timeout(10):  # the file watch (every 0.05 s here)
            while blocked(words, "甲乙"):
                await asyncio.sleep(0.02)
        with pytest.raises(YimError, match="content_blocked"):
            words.apply("丙丁", "x")
    finally:
        await words.stop()

    # SIGHUP: reload now, however long the check period
    words = make_filter(tmp_path, ["戊己"], [], check_s=3600)
    words.start()
    try:
        assert words.sighup, "the test's loop runs on the main thread: SIGHUP must be taken"
        write(tmp_path / "reject.txt", "庚辛")
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(10):
            while blocked(words, "戊己"):
                await asyncio.sleep(0.02)
        with pytest.raises(YimError, match="content_blocked"):
            words.apply("庚辛", "x")
    finally:
        await words.stop()


# --- settings -----------------------------------------------------------------------------------------


def test_settings_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "yim.toml"
    toml.write_text('word_lists = [{path = "/a.txt", action = "reject"}, {path = "/b.txt", action = "mask"}]\n')
    assert load_settings(str(toml)).word_lists == [
        WordList(path="/a.txt", action="reject"),
        WordList(path="/b.txt", action="mask"),
    ]
    monkeypatch.setenv("YIM_WORD_LISTS", "reject:/a.txt, mask:/b.txt")
    assert load_settings(None).word_lists == [
        WordList(path="/a.txt", action="reject"),
        WordList(path="/b.txt", action="mask"),
    ]
    monkeypatch.delenv("YIM_WORD_LISTS")
    assert load_settings(None).word_lists == []
    with pytest.raises(SettingsError, match=r"word_lists item 'drop:/a\.txt' is not ACTION:PATH"):
        load_settings(None, word_lists="drop:/a.txt")
    toml.write_text('word_lists = [{path = "/a.txt", action = "hide"}]\n')
    with pytest.raises(SettingsError, match=r"Invalid enum value 'hide' - at `\$\.word_lists\[0\]\.action`"):
        load_settings(str(toml))
    missing = tmp_path / "missing.txt"
    with pytest.raises(SettingsError, match=f"bad setting: word_lists: cannot load {missing}: No such file"):
        WordFilter.from_settings(load_settings(None, word_lists=f"reject:{missing}"))
    assert WordFilter.from_settings(load_settings(None)) is None  # no lists: no filter at all


def test_serve_refuses_a_missing_list_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "YIM_WORD_LISTS": f"mask:{tmp_path / 'nope.txt'}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "yim", "serve", "--port", "0", "--data", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"yim serve: cannot start: bad setting: word_lists: cannot load {tmp_path / 'nope.txt'}:"
        " No such file or directory"
    )


def test_sighup_reloads_a_running_node(server_process: Any, tmp_path: Path) -> None:
    words = write(tmp_path / "words.txt", "旧词")
    node = server_process(YIM_WORD_LISTS=f"reject:{words}", YIM_WORD_LISTS_CHECK_S="0")  # 0: SIGHUP only
    node.start()
    assert node.proc is not None

    def register(name: str, display_name: str) -> int:
        body = json.dumps({"username": name, "password": "password123", "display_name": display_name}).encode()
        request = urllib.request.Request(f"{node.url}/api/v1/accounts", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert register("user1", "旧 词") == 422
    assert register("user2", "新词") == 201
    write(words, "新词", "另一个词")
    os.kill(node.proc.pid, signal.SIGHUP)
    # every process that serves reloads its own lists: one, or each worker (the listening
    # line says how many: `yim serve` runs one per core by default)
    served_by = re.search(r"with (\d+) workers", node.log_path.read_text())
    processes = int(served_by.group(1)) if served_by else 1
    deadline = time.monotonic() + 10
    while node.log_path.read_text().count("word lists reloaded: 2 entries to reject") < processes:
        assert time.monotonic() < deadline, node.log_path.read_text()
        time.sleep(0.05)
    assert node.proc.poll() is None  # SIGHUP reloaded; it did not end the process
    assert register("user3", "新词") == 422
    assert register("user4", "旧词") == 201


# --- cost -----------------------------------------------------------------------------------------------

#: common Chinese characters, for a word list and texts that look like real ones
COMMON = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
    "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把"
    "性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质"
    "气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活"
    "设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则"
    "任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美"
    "再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元"
    "况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委"
)


def word_list(n: int = 10_000, seed: int = 19) -> list[str]:
    """A deterministic mixed list: 70 % Chinese words of 2-4 characters, 30 % English of 4-8 letters."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        if rng.random() < 0.7:
            out.add("".join(rng.choice(COMMON) for _ in range(rng.randint(2, 4))))
        else:
            out.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8))))
    return sorted(out)


def chat_text(rng: random.Random, n: int = 100) -> str:
    """~n characters of chat: Chinese runs with full-width punctuation, English words, spaces."""
    parts: list[str] = []
    size = 0
    while size < n:
        roll = rng.random()
        if roll < 0.55:
            part = "".join(rng.choice(COMMON) for _ in range(rng.randint(3, 10)))
        elif roll < 0.8:
            part = rng.choice(["，", "。", "！", " "])
        else:
            part = rng.choice([" hello ", " OK ", " see you ", " 2026 ", " thanks "])
        parts.append(part)
        size += len(part)
    return "".join(parts)[:n]


def _us_per_text(words: WordFilter, texts: list[str], rounds: int) -> float:
    """CPU time per text, the best of ``rounds`` for each chunk of 50 texts: the machine is
    shared, and a chunk's best round is the one no other process interrupted."""
    total = 0.0
    for at in range(0, len(texts), 50):
        chunk = texts[at : at + 50]
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for text in chunk:
                try:
                    words.apply(text, "x")
                except YimError:
                    pass
            best = min(best, time.perf_counter() - started)
        total += best
    return total / len(texts) * 1e6


def test_cost_per_100_characters_with_10000_words(tmp_path: Path) -> None:
    entries = word_list()
    rng = random.Random(5)
    texts = [chat_text(rng) for _ in range(2000)]
    reject = WordFilter([WordList(path=str(write(tmp_path / "r.txt", *entries)), action="reject")], 5.0)
    masker = WordFilter([WordList(path=str(write(tmp_path / "m.txt", *entries)), action="mask")], 5.0)
    with_hits = [t for t in texts if masker.apply(t, "x") != t]
    clean = [t for t in texts if masker.apply(t, "x") == t]
    assert len(with_hits) > 100 and len(clean) > 100  # both kinds are measured
    clean_us = _us_per_text(reject, clean, 5)
    reject_us = _us_per_text(reject, with_hits, 5)
    mask_us = _us_per_text(masker, with_hits, 5)
    LINES.append(
        f"sensitive words, 10,000 entries, per 100 characters: clean {clean_us:.1f} µs,"
        f" rejected {reject_us:.1f} µs, masked {mask_us:.1f} µs"
    )
    # A generous bound (the machine is shared): a clean text must not cost a hundred µs.
    assert clean_us < 100


# --- end to end: real nodes -------------------------------------------------------------------------


async def devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    found = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in found))
    return found


def settings_for(tmp_path: Path) -> dict[str, Any]:
    reject = write(tmp_path / "reject.txt", "法轮功", "炸弹", "evilcorp")
    masked = write(tmp_path / "mask.txt", "笨蛋", "idiot")
    return {"word_lists": f"reject:{reject},mask:{masked}"}


async def test_send_rejected_or_masked_end_to_end(make_server: MakeServer, tmp_path: Path) -> None:
    server = await make_server(**settings_for(tmp_path))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        first = await alice.request("send", to=bob.user_id, kind="text", body={"text": "你好"}, client_msg_id="m1")
        conv = first["conv_id"]
        assert "body" not in first  # an unchanged body is not echoed

        # rejected: an error, nothing stored, nothing delivered
        with pytest.raises(ProtocolError) as err:
            await alice.request("send", conv_id=conv, kind="text", body={"text": "买 炸 弹"}, client_msg_id="m2")
        assert err.value.code == "content_blocked"
        assert "炸弹" not in str(err.value)
        r = await http.post(
            "/api/v1/messages",
            json={"conv_id": conv, "kind": "text", "body": {"text": "EvilCorp!"}, "client_msg_id": "m3"},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert r.status == 422 and (await r.json())["code"] == "content_blocked"

        # masked: stored, delivered, echoed and found masked
        ack = await alice.request(
            "send", conv_id=conv, kind="text", body={"text": "你这个笨\u200b蛋, IDIOT!"}, client_msg_id="m4"
        )
        masked = "你这个*\u200b*, *****!"
        assert ack["body"] == {"text": masked}
        assert ack["seq"] == 2  # the rejected ones took no seq
        async with asyncio.timeout(10):
            while len(bob.events) < 2:
                await asyncio.sleep(0.01)
        assert [e["data"]["body"]["text"] for e in bob.events] == ["你好", masked]
        history = await bob.pull(conv, 0)
        assert [m["body"]["text"] for m in history] == ["你好", masked]
        assert (await bob.request("search", q="笨蛋"))["hits"] == []
        await asyncio.sleep(0.2)
        assert len(bob.events) == 2  # the rejected messages never arrived

        # a resend of the masked message: the same stored body, echoed again
        again = await alice.request(
            "send", conv_id=conv, kind="text", body={"text": "你这个笨\u200b蛋, IDIOT!"}, client_msg_id="m4"
        )
        assert again["duplicate"] is True and again["body"] == {"text": masked}

        # other kinds pass: an emoji is not text
        await alice.request("send", conv_id=conv, kind="emoji", body={"emoji": "👍"}, client_msg_id="m5")

        # a custom message's text fallback is what other clients show: filtered like a text;
        # its app data is the app's, and passes untouched
        with pytest.raises(ProtocolError, match="content_blocked"):
            await alice.request(
                "send",
                conv_id=conv,
                kind="custom",
                body={"type": "card", "data": {}, "text": "炸 弹"},
                client_msg_id="m6",
            )
        card = {"type": "card", "data": {"note": "笨蛋"}, "text": "看看这个笨蛋"}
        ack = await alice.request("send", conv_id=conv, kind="custom", body=card, client_msg_id="m7")
        assert ack["body"] == {"type": "card", "data": {"note": "笨蛋"}, "text": "看看这个**"}
        plain = await alice.request(
            "send", conv_id=conv, kind="custom", body={"type": "card", "data": {"x": 1}}, client_msg_id="m8"
        )
        assert "body" not in plain  # no text: nothing to filter, nothing echoed


async def test_group_names_announcements_and_display_names(make_server: MakeServer, tmp_path: Path) -> None:
    server = await make_server(**settings_for(tmp_path))
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        with pytest.raises(ProtocolError) as err:
            await alice.request("group_create", name="法轮功学习群", members=[bob.user_id])
        assert err.value.code == "content_blocked" and "group name" in str(err.value)
        with pytest.raises(ProtocolError, match="content_blocked"):
            await alice.request("group_create", name="ok", announcement="炸 弹", members=[bob.user_id])
        created = await alice.request("group_create", name="笨蛋群", announcement="idiots welcome", members=[])
        group = created["group"]
        assert group["name"] == "**群" and group["announcement"] == "*****s welcome"
        with pytest.raises(ProtocolError, match="content_blocked"):
            await alice.request("group_update", conv_id=group["conv_id"], name="EVILCORP fans")
        updated = await alice.request("group_update", conv_id=group["conv_id"], announcement="no 笨 蛋 here")
        assert updated["group"]["announcement"] == "no * * here"
        info = await alice.request("group_info", conv_id=group["conv_id"])
        assert info["name"] == "**群" and info["announcement"] == "no * * here"

        # display names on register: rejected, masked; a username standing in is filtered too
        r = await http.post(
            "/api/v1/accounts", json={"username": "carol", "password": "password123", "display_name": "法轮功"}
        )
        assert r.status == 422 and (await r.json())["code"] == "content_blocked"
        r = await http.post("/api/v1/accounts", json={"username": "carol", "password": "password123"})
        assert r.status == 201  # the name was not taken by the refused attempt
        r = await http.post(
            "/api/v1/accounts", json={"username": "dave", "password": "password123", "display_name": "大笨蛋"}
        )
        assert r.status == 201 and (await r.json())["display_name"] == "大**"
        r = await http.post("/api/v1/accounts", json={"username": "evilcorp1", "password": "password123"})
        assert r.status == 422

        # a changed display name, like one given at registration
        with pytest.raises(ProtocolError, match="content_blocked"):
            await alice.request("profile_set", display_name="法轮功")
        renamed = await alice.request("profile_set", display_name="小笨蛋")
        assert renamed["display_name"] == "小**"

        # a friend request's note is read by its recipient: rejected, or masked as it is stored
        with pytest.raises(ProtocolError, match="content_blocked"):
            await alice.request("friend_request", to=bob.user_id, message="来学法轮功吧")
        asked = await alice.request("friend_request", to=bob.user_id, message="hi 笨蛋")
        assert asked["message"] == "hi **"
        incoming = await bob.request("friend_requests", direction="incoming")
        assert [r["message"] for r in incoming["requests"]] == ["hi **"]


# --- measuring, by hand: PYTHONPATH=. python -m tests.test_words [--before REV] ----------------------


def _chinese_text(rng: random.Random, n: int = 100) -> str:
    """~n characters of Chinese chat: runs of common characters and full-width punctuation."""
    parts: list[str] = []
    size = 0
    while size < n:
        if rng.random() < 0.8:
            part = "".join(rng.choice(COMMON) for _ in range(rng.randint(3, 10)))
        else:
            part = rng.choice("，。！？")
        parts.append(part)
        size += len(part)
    return "".join(parts)[:n]


def _measure(before: str | None, libraries: bool = False) -> None:
    """The filter's CPU time per 100 characters with the 10,000 entries of word_list(): clean
    Chinese, clean mixed (one list, and the entries split over a reject and a mask list),
    texts with matches (a reject list, a mask list) and clean ASCII, at 100 and 1,000
    characters; each the median of 3 rounds of the best of 5 per chunk of 50 texts. With
    ``before`` (a git revision) yim/services/words.py of that revision is measured in the same
    run, interleaved, for a before/after comparison; with ``libraries``, the scan alone of
    each Aho-Corasick library installed (:func:`_measure_libraries`)."""
    import importlib.util
    import statistics
    import subprocess
    import tempfile
    import types

    from yim.services import words as current

    folder = Path(tempfile.mkdtemp())
    entries = word_list()
    one = [WordList(path=str(write(folder / "all.txt", *entries)), action="reject")]
    split = [
        WordList(path=str(write(folder / "r.txt", *entries[0::2])), action="reject"),
        WordList(path=str(write(folder / "m.txt", *entries[1::2])), action="mask"),
    ]
    masked = [WordList(path=str(folder / "all.txt"), action="mask")]
    versions: dict[str, types.ModuleType] = {"now": current}
    if before is not None:
        source = subprocess.run(
            ["git", "show", f"{before}:yim/services/words.py"], capture_output=True, check=True, text=True
        ).stdout
        (folder / "words_before.py").write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("words_before", folder / "words_before.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        versions = {before: module, "now": current}
    filters = {
        name: {
            "one": mod.WordFilter(one, 5.0),
            "split": mod.WordFilter(split, 5.0),
            "mask": mod.WordFilter(masked, 5.0),
        }
        for name, mod in versions.items()
    }
    probe = filters["now"]["mask"]

    def hit(text: str) -> bool:
        return probe.apply(text, "x") != text

    def texts(make: Any, n: int, hits: bool, count: int, seed: int) -> list[str]:
        # Built of 100-character pieces: with 10,000 entries of common characters almost
        # every 1,000 characters drawn at once hold one, so a clean long text grows piece by
        # piece, keeping only pieces that leave it clean.
        rng = random.Random(seed)
        out: list[str] = []
        while len(out) < count:
            text = ""
            while len(text) < n:
                longer = text + make(rng, 100)
                if hits or not hit(longer):
                    text = longer
            if hit(text) == hits:
                out.append(text)
        return out

    def cost(words: Any, sample: list[str]) -> float:
        total = 0.0
        for at in range(0, len(sample), 50):
            chunk, best = sample[at : at + 50], float("inf")
            for _ in range(5):
                started = time.thread_time()
                for text in chunk:
                    try:
                        words.apply(text, "x")
                    except YimError:
                        pass
                best = min(best, time.thread_time() - started)
            total += best
        return total / len(sample) * 1e6

    ascii_rng = random.Random(7)
    words_ = ["hello", "OK", "see", "you", "2026", "thanks", "world", "later", "meeting"]
    ascii_texts = [" ".join(ascii_rng.choice(words_) for _ in range(30))[:100] for _ in range(400)]
    cases: list[tuple[str, int, str, list[str]]] = []
    for n, count in ((100, 400), (1000, 60)):
        mixed = texts(chat_text, n, False, count, 2)
        with_hits = texts(chat_text, n, True, count, 3)
        cases += [
            ("clean Chinese", n, "one", texts(_chinese_text, n, False, count, 1)),
            ("clean mixed", n, "one", mixed),
            ("clean mixed, two lists", n, "split", mixed),
            ("with matches, reject list", n, "one", with_hits),
            ("with matches, mask list", n, "mask", with_hits),
        ]
    cases.append(("clean ASCII", 100, "one", [t for t in ascii_texts if not hit(t)]))
    rounds: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(3):
        for name, n, kind, sample in cases:
            for version, by_kind in filters.items():
                rounds.setdefault((name, n, version), []).append(cost(by_kind[kind], sample) * 100 / n)
    print("µs per 100 characters, median of 3:")
    print(f"{'text':28s} {'chars':>5s}" + "".join(f" {v:>10s}" for v in filters))
    for name, n, _, _ in cases:
        row = "".join(f" {statistics.median(rounds[(name, n, v)]):10.2f}" for v in filters)
        print(f"{name:28s} {n:5d}{row}")
    if libraries:
        _measure_libraries(entries, [(name, n, sample) for name, n, kind, sample in cases if kind != "split"])


def _measure_libraries(entries: list[str], cases: list[tuple[str, int, list[str]]]) -> None:
    """The Aho-Corasick scan alone, every match overlapping ones included, of each library
    that is installed, on the same normalised texts: pyahocorasick over the text's UTF-8 bytes
    (one character each, its fastest form: a Chinese character's node has thousands of
    children), ahocorasick-rs (its DFA) and daachorse (character-wise double array) over the
    text. The median of 3 rounds of the best of 5 per chunk of 50 texts."""
    import importlib
    import statistics

    words = sorted({normalise(e) for e in entries})
    scans: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        ahocorasick = importlib.import_module("ahocorasick")
        automaton = ahocorasick.Automaton()
        for word in words:
            key = word.encode().decode("latin-1")
            automaton.add_word(key, len(key))
        automaton.make_automaton()
        scans["pyahocorasick"] = lambda text: list(automaton.iter(text.encode().decode("latin-1")))
    with contextlib.suppress(ImportError):
        rs = importlib.import_module("ahocorasick_rs")
        dfa = rs.AhoCorasick(words, implementation=rs.Implementation.DFA)
        scans["ahocorasick-rs"] = lambda text: dfa.find_matches_as_indexes(text, overlapping=True)
    with contextlib.suppress(ImportError):
        daachorse = importlib.import_module("daachorse")
        scans["daachorse"] = daachorse.CharwiseDoubleArrayAhoCorasick(words).find_overlapping
    rounds: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(3):
        for name, n, sample in cases:
            norms = [normalise(text) for text in sample]
            for library, scan in scans.items():
                total = 0.0
                for at in range(0, len(norms), 50):
                    chunk, best = norms[at : at + 50], float("inf")
                    for _ in range(5):
                        started = time.thread_time()
                        for norm in chunk:
                            scan(norm)
                        best = min(best, time.thread_time() - started)
                    total += best
                rounds.setdefault((name, n, library), []).append(total / len(norms) * 1e6 * 100 / n)
    print("the scan alone, µs per 100 characters, median of 3:")
    print(f"{'text':28s} {'chars':>5s}" + "".join(f" {v:>15s}" for v in scans))
    for name, n, _ in cases:
        row = "".join(f" {statistics.median(rounds[(name, n, v)]):15.2f}" for v in scans)
        print(f"{name:28s} {n:5d}{row}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The sensitive-word filter's cost (docs/performance.md).")
    parser.add_argument("--before", metavar="REV", help="also measure yim/services/words.py of this git revision")
    parser.add_argument(
        "--libraries",
        action="store_true",
        help="also measure the scan alone of each Aho-Corasick library installed (pyahocorasick, ahocorasick-rs,"
        " daachorse)",
    )
    args = parser.parse_args()
    _measure(args.before, args.libraries)


async def test_a_masked_send_is_answered_in_its_place(make_server: MakeServer, tmp_path: Path) -> None:
    """Replies come in the order of the sends (docs/protocol.md, "Reply order"), a masked
    send's echoed ACK too: sends committed in one batch are answered in it."""
    server = await make_server(**settings_for(tmp_path))
    async with aiohttp.ClientSession(server.url) as http:
        [alice, bob] = await make_users(http, ["alice", "bob"])
        ws = await http.ws_connect("/ws")
        await ws.send_json({"op": "auth", "rid": 1, "token": alice["token"]})
        assert (await ws.receive_json(timeout=10))["t"] == "ok"
        rid = 100
        for burst in range(5):
            texts = ["a", "你这个笨蛋", "b", "c", "idiot", "d"]
            sent = list(range(rid, rid + len(texts)))
            for r, text in zip(sent, texts, strict=True):  # one burst: committed together
                await ws.send_json(
                    {"op": "send", "rid": r, "to": bob["user_id"], "kind": "text", "body": {"text": text},
                     "client_msg_id": f"b{burst}-{r}"}
                )  # fmt: skip
            answered = []
            while len(answered) < len(sent):
                frame = await ws.receive_json(timeout=10)
                if frame["t"] in ("ok", "err"):
                    assert frame["t"] == "ok", frame
                    answered.append(frame["rid"])
            assert answered == sent
            rid += len(texts)
        await ws.close()
        # over HTTP the awaited result carries the echo
        r = await http.post(
            "/api/v1/messages",
            json={"to": bob["user_id"], "kind": "text", "body": {"text": "idiot"}, "client_msg_id": "h1"},
            headers={"Authorization": f"Bearer {alice['token']}"},
        )
        assert r.status == 201 and (await r.json())["body"] == {"text": "*****"}
