"""The terminal client and the one-shot commands, run as real processes against a node
started with ``yim serve``: ``yim register``, ``yim send``, ``yim history`` and ``yim chat``
(over plain pipes, and in a pseudo-terminal)."""

# ruff: noqa: RUF001 - Chinese test texts use fullwidth punctuation, as real ones do

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from yim.client import Client, HttpApi
from yim.client.terminal import display_width

from .conftest import ROOT, ServerProcess, free_port

PASSWORD = "password123"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``yim serve`` for the module (the tests use different usernames)."""
    server = ServerProcess(tmp_path_factory.mktemp("terminal") / "node")
    server.start()
    yield server
    server.stop()


class Cli:
    """Runs ``python -m yim`` commands against one node, with their own state folder."""

    def __init__(self, server: ServerProcess, home: Path) -> None:
        self.server = server
        self.state = home / "state"
        self.env = {
            **os.environ,
            "YIM_PASSWORD": PASSWORD,
            "XDG_CONFIG_HOME": str(home / "config"),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("YIM_SERVER", None)

    def argv(self, command: str, user: str, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "yim", command, "--server", self.server.url, "--user", user]
        if command != "register":
            argv += ["--state", str(self.state)]
        return argv + list(args)

    def run(
        self, command: str, user: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, user, *args),
            env=env or self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            encoding="utf-8",
            input=stdin,
            timeout=30,
        )

    def ok(self, command: str, user: str, *args: str) -> str:
        done = self.run(command, user, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def cli(node: ServerProcess, tmp_path: Path) -> Cli:
    return Cli(node, tmp_path)


def register(url: str, *usernames: str) -> None:
    """Accounts made through the SDK (faster than a process each, where the command is not under test)."""

    async def go() -> None:
        async with HttpApi(url) as api:
            for name in usernames:
                await api.register(name, PASSWORD)

    asyncio.run(go())


def as_user(url: str, username: str, action: Callable[[HttpApi], Awaitable[Any]]) -> Any:
    """Run ``action`` on the HTTP API logged in as ``username`` (through the SDK)."""

    async def go() -> Any:
        async with HttpApi(url) as api:
            await api.login(username, PASSWORD, "test-helper", "web")
            return await action(api)

    return asyncio.run(go())


def call(url: str, username: str, op: str, **fields: Any) -> Any:
    """One WebSocket operation as ``username`` (through the SDK), e.g. ``recall`` or ``read``."""

    async def go() -> Any:
        async with HttpApi(url) as api:
            login = await api.login(username, PASSWORD, "test-helper-ws", "web")
        async with Client(url, login.token) as client:
            return await client.call(op, **fields)

    return asyncio.run(go())


def say(url: str, sender: str, to_username: str, text: str) -> None:
    async def send(api: HttpApi) -> None:
        peer = await api.user_by_name(to_username)
        await api.send(to=peer.user_id, body={"text": text})

    as_user(url, sender, send)


class Lines:
    """The output of a process, line by line, read by a thread; ``expect`` waits (bounded)."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._read = read
        self.tail = ""  # what follows the last newline so far (e.g. a prompt)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._read()
            except OSError:
                chunk = b""
            if not chunk:
                if buffer:
                    self._queue.put(buffer.decode("utf-8", errors="replace"))
                self._queue.put(None)
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._queue.put(line.decode("utf-8", errors="replace").rstrip("\r"))
            self.tail = buffer.decode("utf-8", errors="ignore")

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line from now on that matches ``pattern`` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {self.seen}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def wait_tail(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the unfinished last line ends with ``text`` (a prompt waiting for input)."""
        deadline = time.monotonic() + timeout
        while not self.tail.endswith(text):
            if time.monotonic() > deadline:
                raise AssertionError(f"the last line is {self.tail!r}, not ending in {text!r}")
            time.sleep(0.01)


class PipedChat:
    """``yim chat`` over plain pipes: ``out`` is what it prints, ``type_line`` types a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._stdin = proc.stdin
        stdout = proc.stdout
        self.out = Lines(lambda: os.read(stdout.fileno(), 65536))

    def type_line(self, text: str) -> None:
        self._stdin.write((text + "\n").encode())
        self._stdin.flush()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def piped_chat(cli: Cli, user: str, extra_env: dict[str, str] | None = None) -> Iterator[PipedChat]:
    """``yim chat USER`` as a process on pipes, killed (if still running) on the way out."""
    proc = subprocess.Popen(
        cli.argv("chat", user),
        env={**cli.env, **(extra_env or {})},
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield PipedChat(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_register_send_and_history_commands(cli: Cli, tmp_path: Path) -> None:
    alice = json.loads(cli.ok("register", "alice"))
    password_file = tmp_path / "bob.pw"
    password_file.write_text("another-secret\n", encoding="utf-8")
    env = {k: v for k, v in cli.env.items() if k != "YIM_PASSWORD"}
    done = cli.run("register", "bob", "--password-file", str(password_file), "--display-name", "Bob 鲍勃", env=env)
    assert done.returncode == 0, done.stderr
    bob = json.loads(done.stdout)
    assert (alice["username"], bob["display_name"]) == ("alice", "Bob 鲍勃")

    taken = cli.run("register", "ALICE")
    assert taken.returncode == 1 and "username_taken" in taken.stderr
    # No password anywhere and no terminal to ask on: refused, not hung.
    nothing = cli.run("send", "alice", "--to", "bob", "hi", env=env, stdin="")
    assert nothing.returncode == 1 and "no password" in nothing.stderr
    wrong = cli.run("send", "bob", "--to", "alice", "hi")  # bob's password is not YIM_PASSWORD's
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr

    ack = json.loads(cli.ok("send", "alice", "--to", "bob", "你好，Bob！这是第一条消息 👋"))
    assert ack["seq"] == 1 and ack["duplicate"] is False and ack["msg_id"].isdigit()
    done = cli.run("send", "bob", "--password-file", str(password_file), "--to", "alice", "-", env=env, stdin="收到\n")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert (reply["conv_id"], reply["seq"]) == (ack["conv_id"], 2)

    lines = cli.ok("history", "alice", "--with", "bob").splitlines()
    assert re.fullmatch(r"#1 \d{4}-\d\d-\d\d \d\d:\d\d alice: 你好，Bob！这是第一条消息 👋", lines[0]), lines
    assert re.fullmatch(r"#2 .* Bob 鲍勃: 收到", lines[1]), lines
    page = json.loads(cli.ok("history", "alice", "--conv", ack["conv_id"], "--limit", "1", "--json"))
    # The line break that ended stdin is not part of the message.
    assert [m["body"]["text"] for m in page["messages"]] == ["收到"] and page["has_more"] is True
    unknown = cli.run("history", "alice", "--with", "nobody")
    assert unknown.returncode == 1 and "no conversation with nobody" in unknown.stderr

    # A group by its name (as people know it) or by its id.
    group = call(cli.server.url, "alice", "group_create", name="项目组", members=[bob["user_id"]])["group"]
    by_name = json.loads(cli.ok("send", "alice", "--group", "项目组", "开会了"))
    by_id = json.loads(cli.ok("send", "alice", "--group", group["conv_id"], "三点"))
    assert by_name["conv_id"] == by_id["conv_id"] == group["conv_id"]
    nameless = cli.run("send", "alice", "--group", "没有这个组", "hi")
    assert nameless.returncode == 1 and "no group named 没有这个组" in nameless.stderr

    # The one-shot commands keep one device id per user and server.
    state = json.loads((cli.state / "state.json").read_text(encoding="utf-8"))
    devices = {key.split("|")[1]: value["cli_device_id"] for key, value in state["accounts"].items()}
    assert set(devices) == {"alice", "bob"} and all(d.startswith("desktop-cli-") for d in devices.values())


def test_chat_over_pipes_lists_opens_sends_and_receives(cli: Cli) -> None:
    url = cli.server.url
    register(url, "wang", "liu", "zhao")
    say(url, "liu", "wang", "早上好")
    say(url, "liu", "wang", "在吗？")

    with piped_chat(cli, "wang") as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Logged in as wang")
        out.expect(r"^Conversations \(2 unread\):")
        assert re.search(r"1\. liu +2 unread +\d\d:\d\d liu: 在吗？", out.expect(r"1\. liu"))

        type_line("/open 1")
        out.expect(r"── liu ──")
        out.expect(r"\d\d:\d\d liu: 早上好")
        out.expect(r"\d\d:\d\d liu: 在吗？")
        type_line("我在，刚看到 😀")
        out.expect(r"^\d\d:\d\d wang: 我在，刚看到 😀$")

        # A message from the open conversation, and one from another user, arrive live.
        cli.ok("send", "liu", "--to", "wang", "好的，晚点聊")
        out.expect(r"^\d\d:\d\d liu: 好的，晚点聊$")
        say(url, "zhao", "wang", "我是 zhao")
        out.expect(r"^\d\d:\d\d \[zhao\] zhao: 我是 zhao$")

        # A group: created from the chat, answered by a member with `yim send --group`.
        type_line("/create 周末计划 liu zhao")
        header = out.expect(r"── #周末计划 ── \(group \d+, 3 members\)")
        group_id = re.search(r"group (\d+)", header).group(1)  # type: ignore[union-attr]
        out.expect(r"\* wang created the group 周末计划")
        type_line("周六出发")
        out.expect(r"^\d\d:\d\d wang: 周六出发$")
        cli.ok("send", "zhao", "--group", group_id, "好主意")
        out.expect(r"^\d\d:\d\d zhao: 好主意$")

        type_line("/list")
        out.expect(r"^Conversations \(\d+ unread\):")
        type_line("/dm zhao")
        out.expect(r"── zhao ──")
        type_line("/read")
        # Whatever arrived in the open conversation was read there: nothing is left unread.
        out.expect(r"^\* marked read; nothing unread$")
        type_line("/nonsense")
        out.expect(r"unknown command /nonsense")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0
    # The group's first entry is both in the history shown on opening and pushed: shown once.
    assert sum("created the group 周末计划" in line for line in out.seen) == 1, out.seen

    # What was typed is in the timelines, for the others too.
    async def timelines(api: HttpApi) -> tuple[list[str], list[str]]:
        page = await api.conversations()
        direct = next(c for c in page.conversations if c.peer is not None and c.peer.username == "wang")
        one = await api.history(direct.conv_id)
        group = await api.history(group_id)
        return [m.body["text"] for m in one.messages], [m.body["text"] for m in group.messages if m.kind == "text"]

    direct, group = as_user(url, "liu", timelines)
    assert direct == ["早上好", "在吗？", "我在，刚看到 😀", "好的，晚点聊"]
    assert group == ["周六出发", "好主意"]


def test_chat_in_a_terminal_prints_arrivals_above_the_prompt(cli: Cli) -> None:
    url = cli.server.url
    register(url, "mei", "lei")
    say(url, "lei", "mei", "你好")
    master, slave = pty.openpty()
    chat = subprocess.Popen(
        cli.argv("chat", "mei"), env={**cli.env, "TERM": "xterm"}, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)

    def read() -> bytes:
        while chat.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                return os.read(master, 65536)
        return b""

    out = Lines(read)
    try:
        out.expect(r"1\. lei +1 unread")
        out.wait_tail("> ")
        os.write(master, b"/open lei\n")
        out.expect(r"lei: 你好")
        out.wait_tail("lei> ")
        os.write(master, "写了一半".encode())  # typed, not sent yet
        out.wait_tail("lei> 写了一半")
        say(url, "lei", "mei", "插话")
        # The arrival clears the prompt line, prints itself, and draws the prompt and the typing again.
        assert re.fullmatch(r"lei> 写了一半\r\x1b\[K\d\d:\d\d lei: 插话", out.expect(r"lei: 插话"))
        os.write(master, "完\n".encode())
        assert out.expect(r"写了一半完") == "lei> 写了一半完"
        # the typed line is replaced by the message as sent
        assert re.fullmatch(r"\x1b\[1A\x1b\[2K\d\d:\d\d mei: 写了一半完", out.expect(r"mei: 写了一半完"))
        out.wait_tail("lei> ")
        os.write(master, b"/quit\n")
        assert chat.wait(timeout=10) == 0
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait(timeout=10)
        os.close(master)


def test_chat_reads_what_it_shows_and_speaks_in_words(cli: Cli) -> None:
    """The open conversation is read as messages arrive (the other devices' badges go), the
    list keeps one row per conversation, a recall is told once, and receipts and /read say
    nothing of internal sequence numbers."""
    url = cli.server.url
    register(url, "sun", "qian")
    long_text = "这是一条很长很长的消息，" * 20
    say(url, "qian", "sun", long_text)

    def unread_elsewhere() -> int:
        """sun's unread count as another device of sun's sees it."""

        async def total(api: HttpApi) -> int:
            return sum(c.unread for c in (await api.conversations()).conversations)

        return int(as_user(url, "sun", total))

    with piped_chat(cli, "sun", extra_env={"COLUMNS": "80"}) as chat:
        out, type_line = chat.out, chat.type_line
        out.expect(r"^Conversations \(1 unread\):")
        row = out.expect(r"1\. qian")
        assert display_width(row) <= 80 and row.endswith("…"), row  # cut to the line, not wrapped

        type_line("/open 5")
        out.expect(r"^! no conversation 5: /list shows 1 to 1$")
        type_line("/open 1")
        out.expect(r"── qian ──")
        out.expect(r"qian: 这是一条很长很长的消息")
        conv_id = call(url, "qian", "conversations", limit=1)["conversations"][0]["conv_id"]

        say(url, "qian", "sun", "还在吗")
        out.expect(r"^\d\d:\d\d qian: 还在吗$")
        deadline = time.monotonic() + 10
        while unread_elsewhere() != 0:  # shown in the open conversation, so read everywhere
            assert time.monotonic() < deadline, "the message shown in the open conversation stayed unread"
            time.sleep(0.1)

        call(url, "qian", "recall", conv_id=conv_id, seq=2)
        out.expect(r"^\d\d:\d\d \* qian recalled a message: “还在吗”$")
        type_line("/history")
        out.expect(r"^\d\d:\d\d qian: \(recalled\)$")
        type_line("在的")
        out.expect(r"^\d\d:\d\d sun: 在的$")
        call(url, "qian", "read", conv_id=conv_id, seq=4)
        out.expect(r"^\* seen by qian$")
        type_line("/read")
        out.expect(r"^\* marked read; nothing unread$")
        type_line("/quit")
        assert chat.wait(timeout=10) == 0
    # The recall was told once: the history shows the message as recalled, not the recall again.
    assert sum("recalled a message" in line for line in out.seen) == 1, out.seen
    assert not any(re.search(r"#\d", line) for line in out.seen), out.seen  # no internal numbers


def test_register_says_what_is_wrong_before_the_password_prompt(cli: Cli) -> None:
    bad_name = cli.run("register", "a!")
    assert bad_name.returncode == 1 and "'a!' cannot be a username: 3 to 32" in bad_name.stderr
    short = cli.run("register", "shorty", env={**cli.env, "YIM_PASSWORD": "short"})
    assert short.returncode == 1 and "the password must be 8 to 256 characters long" in short.stderr
    assert "Expected" not in short.stderr  # not the server's validation text

    # At the prompt, a short password is refused at once, not after typing it a second time.
    env = {k: v for k, v in cli.env.items() if k != "YIM_PASSWORD"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli.argv("register", "shorty"), env=env, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)

    def read() -> bytes:
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    return os.read(master, 65536)
                except OSError:
                    return b""
        return b""

    out = Lines(read)
    try:
        out.wait_tail("password for shorty: ")
        os.write(master, b"short\n")
        out.expect(r"the password must be 8 to 256 characters long")
        assert proc.wait(timeout=10) == 1
        assert not any("again" in line for line in out.seen), out.seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)

    # A server that does not answer is said at once, before asking for a password (twice).
    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "yim", "register", "--server", f"http://127.0.0.1:{free_port()}", "--user", "nobody"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        said = b"".join(chunks).decode("utf-8", errors="replace")
        assert "cannot reach the server" in said and "password" not in said, said
        assert proc.wait(timeout=10) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
