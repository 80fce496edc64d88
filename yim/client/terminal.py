"""The terminal client and the scriptable account and message commands, built on the SDK.

- ``yim chat``: an interactive chat in line mode. It lists the conversations with their
  unread counts, opens one (by number, username or group name), shows its history, sends
  what is typed and prints what arrives above the prompt, live; what the open conversation
  shows is marked read, as a person is looking at it.
- ``yim send``, ``yim history``, ``yim register``: one-shot commands for operators and
  scripts. ``send`` prints the server's ACK as JSON; ``history`` prints lines or JSON.

Passwords come from ``--password-file``, the ``YIM_PASSWORD`` environment variable, or a
prompt, never from the command line (it would show in ``ps`` and shell history).

A device id per user and server is kept in ``state.json`` under ``--state`` (default
``$XDG_CONFIG_HOME/yim`` or ``~/.config/yim``). ``yim chat`` and the one-shot commands
use different device ids: logging a device in again ends its earlier session, so a
``yim send`` never disconnects a running ``yim chat`` of the same user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import math
import os
import shutil
import socket
import sys
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import aiohttp
import msgspec

from yim.client.core import GroupItem, InboxItem
from yim.client.sdk import (
    ApiError,
    Client,
    ClientClosed,
    ConnectionLost,
    HttpApi,
    SessionEnded,
    YimClientError,
)
from yim.protocol.frames import ConversationOut, MessageOut, Notice, Password, Username, UserOut

DEFAULT_SERVER = "http://127.0.0.1:8080"
PLATFORM = "desktop"
HISTORY_LINES = 20
#: texts of the entries shown lately, to quote when one is recalled or read (bounded)
SHOWN_MAX = 1000
#: columns of a /list row before its preview: "NNN. " + title (24) + " " + unread (10) + " "
LIST_PREFIX_COLUMNS = 41

log = logging.getLogger("yim.terminal")


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


# --- passwords and local state ------------------------------------------------------------------


def read_password(
    args: argparse.Namespace, *, confirm: bool = False, check: Callable[[str], None] | None = None
) -> str:
    """From ``--password-file`` (its first line), ``YIM_PASSWORD``, or a prompt on the terminal.
    ``check`` refuses a password (with a UsageError) before it is asked for a second time."""
    if args.password_file:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the password file: {exc}") from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise UsageError(f"the password file {args.password_file} is empty")
        if check is not None:
            check(password)
        return password
    env = os.environ.get("YIM_PASSWORD")
    if env:
        if check is not None:
            check(env)
        return env
    if not sys.stdin.isatty():
        raise UsageError("no password: give --password-file, set YIM_PASSWORD, or run in a terminal")
    password = getpass.getpass(f"password for {args.user}: ")
    if check is not None:
        check(password)
    if confirm and getpass.getpass("again: ") != password:
        raise UsageError("the passwords do not match")
    return password


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "yim"


class LocalState:
    """``state.json``: device ids per (server, user), so a device stays the same device."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else default_state_dir()
        self.path = self.folder / "state.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def device_id(self, server: str, username: str, role: str) -> str:
        """The stable device id of ``role`` ("chat" or "cli") for this user on this server."""
        data = self._load()
        accounts = data.setdefault("accounts", {})
        account = accounts.setdefault(f"{server}|{username.casefold()}", {})
        key = f"{role}_device_id"
        if not isinstance(account.get(key), str):
            account[key] = f"{PLATFORM}-{role}-{uuid.uuid4().hex[:12]}"
            self._save(data)
        return account[key]

    def _save(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
        os.replace(tmp, self.path)


# --- text layout -----------------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Columns a string takes in a terminal: CJK and other wide characters take two."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """Cut to ``width`` columns (with an ellipsis) and pad with spaces to exactly that."""
    if display_width(text) > width:
        out, used = [], 0
        for ch in text:
            w = display_width(ch)
            if used + w > width - 1:
                break
            out.append(ch)
            used += w
        text = "".join(out) + "…"
    return text + " " * (width - display_width(text))


def one_line(text: str) -> str:
    return " ".join(text.split())


def clock(ms: int, *, full: bool = False) -> str:
    t = time.localtime(ms / 1000)
    if full:
        return time.strftime("%Y-%m-%d %H:%M", t)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", t)
    return time.strftime("%m-%d %H:%M", t)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


# --- names ---------------------------------------------------------------------------------------


class Directory:
    """User names by id, looked up once over HTTP and remembered."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.users: dict[str, UserOut] = {}

    def remember(self, user: UserOut | None) -> None:
        if user is not None:
            self.users[user.user_id] = user

    async def user(self, user_id: str) -> UserOut | None:
        if user_id not in self.users:
            try:
                self.users[user_id] = await self.api.user(user_id)
            except (ApiError, ConnectionLost, aiohttp.ClientError, TimeoutError):
                return None
        return self.users[user_id]

    async def name(self, user_id: str) -> str:
        user = await self.user(user_id)
        if user is None:
            return f"user {user_id}"
        return user.display_name or user.username

    async def names(self, user_ids: Sequence[str]) -> str:
        return ", ".join([await self.name(u) for u in user_ids])

    async def by_username(self, username: str) -> UserOut:
        user: UserOut = await self.api.user_by_name(username)
        self.remember(user)
        return user


_SYSTEM_TEXT: dict[str, str] = {
    "created": "{actor} created the group {name}",
    "invited": "{actor} invited {users}",
    "joined": "{actor} joined",
    "left": "{actor} left",
    "removed": "{actor} removed {users}",
    "role": "{actor} made {users} {role}",
    "owner": "{actor} made {users} the owner",
    "muted": "{actor} muted {users}",
    "unmuted": "{actor} unmuted {users}",
    "dissolved": "{actor} dissolved the group",
}


async def describe(message: MessageOut, names: Directory) -> tuple[str, str]:
    """(who, what) for one timeline entry; ``who`` is empty for system and recall entries."""
    body = message.body if isinstance(message.body, dict) else {}
    kind = message.kind
    if message.recalled:
        return await names.name(message.sender_id), "(recalled)"
    if kind == "text":
        return await names.name(message.sender_id), str(body.get("text", ""))
    if kind == "emoji":
        return await names.name(message.sender_id), str(body.get("emoji", ""))
    if kind in ("image", "video", "file"):
        name = body.get("name") or kind
        extra = []
        if body.get("width") and body.get("height"):
            extra.append(f"{body['width']}x{body['height']}")
        if isinstance(body.get("size"), int):
            extra.append(_size(body["size"]))
        detail = f" ({', '.join(extra)})" if extra else ""
        return await names.name(message.sender_id), f"[{kind}: {name}{detail}]"
    if kind == "recall":
        return "", f"* {await names.name(message.sender_id)} recalled a message"
    if kind == "system":
        event = str(body.get("event", ""))
        fields = {
            "actor": await names.name(str(body.get("actor", message.sender_id))),
            "users": await names.names([str(u) for u in body.get("users", [])]),
            "name": body.get("name", ""),
            "role": body.get("role", ""),
        }
        if event == "updated":
            changes = body.get("changes", {})
            listed = ", ".join(f"{k}={v}" for k, v in changes.items()) if isinstance(changes, dict) else ""
            return "", f"* {fields['actor']} changed {listed}"
        template = _SYSTEM_TEXT.get(event, "{actor}: " + event)
        return "", "* " + template.format(**fields)
    return await names.name(message.sender_id), f"[{kind}]"


def shown_in_history(message: MessageOut) -> bool:
    """Whether a history view lists an entry: a recall entry is not listed, since the message
    it recalled already reads "(recalled)" at its own place (listing both says it twice)."""
    return message.kind != "recall"


async def history_line(message: MessageOut, names: Directory, *, full_time: bool = False) -> str:
    who, what = await describe(message, names)
    stamp = clock(message.created_at, full=full_time)
    return f"#{message.seq} {stamp} {who}: {what}" if who else f"#{message.seq} {stamp} {what}"


# --- the interactive chat ---------------------------------------------------------------------------


class Screen:
    """Output in line mode. On a terminal, what arrives is printed above the prompt and the
    prompt is drawn again with what was typed so far; on a pipe, lines are just printed."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.prompt = "> "
        self.reading = False  # the input thread waits at the prompt
        self._lock = threading.Lock()
        self._readline: Any = None
        if tty:
            with contextlib.suppress(ImportError):
                import readline

                self._readline = readline

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self.reading:
                typed = self._readline.get_line_buffer() if self._readline else ""
                self.out.write(f"\r\x1b[K{text}\n{self.prompt}{typed}")
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def erase_typed(self, typed: str) -> None:
        """Remove the line just typed at the prompt (it is printed again once sent)."""
        if not self.tty:
            return
        columns = max(1, shutil.get_terminal_size().columns)
        rows = max(1, math.ceil(display_width(self.prompt + typed) / columns))
        with self._lock:
            self.out.write("\x1b[1A\x1b[2K" * rows)
            self.out.flush()

    def read(self) -> str | None:
        """One line from the user (None at end of input). Runs in the input thread."""
        if self.tty:
            self.reading = True
            try:
                return input(self.prompt)
            except EOFError:
                return None
            finally:
                self.reading = False
        return _read_stdin_line()


_stdin_buffer = bytearray()


def _read_stdin_line() -> str | None:
    """A line from fd 0 with ``os.read`` (no lock of ``sys.stdin`` is held while waiting, so
    the process can exit while this thread still waits)."""
    while True:
        end = _stdin_buffer.find(b"\n")
        if end >= 0:
            line = bytes(_stdin_buffer[:end])
            del _stdin_buffer[: end + 1]
            return line.decode("utf-8", errors="replace").rstrip("\r")
        chunk = os.read(0, 65536)
        if not chunk:
            if _stdin_buffer:
                line = bytes(_stdin_buffer)
                _stdin_buffer.clear()
                return line.decode("utf-8", errors="replace")
            return None
        _stdin_buffer.extend(chunk)


class Target(NamedTuple):
    """The open conversation: ``conv_id`` is None for a first message to ``peer_id``."""

    conv_id: str | None
    title: str
    peer_id: str | None = None


HELP = """\
commands:
  /list               conversations, with unread counts
  /open N|NAME        open conversation N of the list, or by username or group name
  /dm USER            open the one-to-one chat with USER
  /group NAME         open a group by its name
  /create NAME USER…  create a group with these members and open it
  /history [N]        the last N messages of the open conversation (default 20)
  /read               mark the open conversation read (what it shows is read already)
  /quit               leave (also Ctrl-D)
anything else is sent to the open conversation"""


class ChatApp:
    """``yim chat``: one desktop device of one user, in the terminal."""

    def __init__(
        self,
        servers: list[str],
        username: str,
        password: str,
        device_id: str,
        *,
        out: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self.servers = servers
        self.username = username
        self._password = password
        self.device_id = device_id
        out = out or sys.stdout
        self.screen = Screen(out, out.isatty() and sys.stdin.isatty() if tty is None else tty)
        self.client: Client | None = None
        self.names: Directory | None = None
        self.me: UserOut | None = None
        self.target: Target | None = None
        self.listed: list[ConversationOut] = []
        self.convs: dict[str, ConversationOut] = {}
        self._opening: list[MessageOut] | None = None  # entries that arrive while a conversation opens
        self._shown: OrderedDict[tuple[str, int], str] = OrderedDict()  # (conv_id, seq) -> text, SHOWN_MAX
        self._own_last: dict[str, int] = {}  # conv_id -> seq of the last entry of this user seen
        self._shown_upto: dict[str, int] = {}  # conv_id -> seq of the last entry shown as the open one
        self._read_wanted: dict[str, int] = {}  # conv_id -> seq the open conversation should be read to
        self._read_done: dict[str, int] = {}  # conv_id -> seq it was marked read to
        self._marking: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._termios: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._save_terminal()
        async with HttpApi(self.servers) as api:
            login = await api.login(
                self.username, self._password, self.device_id, PLATFORM, f"yim chat on {socket.gethostname()}"[:64]
            )
            self._password = ""
            self.me = await api.me()
        client = self.client = Client(self.servers, login.token, cursor=None)
        try:
            await client.start()
            self.names = Directory(client.http())
            self.names.remember(self.me)
            self.say(f"Logged in as {self.me.username} on {client.endpoint.http}. Type /help for commands.")
            await self.cmd_list("")
            tasks = [
                asyncio.create_task(self._pump(), name="yim-chat-events"),
                asyncio.create_task(self._watch_connection(), name="yim-chat-connection"),
                asyncio.create_task(self.done.wait(), name="yim-chat-done"),
            ]
            self._start_reader()
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(client.ended, SessionEnded):
                self.say(f"* session ended: {client.ended.reason or client.ended.close_code}")
                self.exit_code = 1
        finally:
            if self._marking is not None:  # a read still on its way is let through, briefly
                await asyncio.wait({self._marking}, timeout=2.0)
                self._marking.cancel()
            await client.close()
        return self.exit_code

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_lines, name="yim-chat-input", daemon=True)
        self._reader.start()

    def reader_waiting(self) -> bool:
        """Whether the input thread still waits for a line (it cannot be interrupted)."""
        if self._reader is None:
            return False
        self._reader.join(0.2)
        return self._reader.is_alive()

    def _save_terminal(self) -> None:
        if self.screen.tty:
            with contextlib.suppress(Exception):
                import termios

                self._termios = termios.tcgetattr(0)

    def restore_terminal(self) -> None:
        if self._termios is not None:
            with contextlib.suppress(Exception):
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, self._termios)

    def _read_lines(self) -> None:
        """The input thread: read a line, let the event loop handle it, then read the next."""
        loop = self._loop
        assert loop is not None
        while True:
            line = self.screen.read()
            if line is not None and line.strip() and not line.lstrip().startswith("/"):
                self.screen.erase_typed(line)
            try:
                go_on = asyncio.run_coroutine_threadsafe(self.handle_line(line), loop).result()
            except Exception:  # the event loop is gone (closed, or the call was cancelled)
                return
            if not go_on:
                return

    def say(self, text: str) -> None:
        self.screen.line(text)

    def _set_target(self, target: Target | None) -> None:
        self.target = target
        self.screen.prompt = f"{target.title}> " if target else "> "

    # -- input -----------------------------------------------------------------------------------
    async def handle_line(self, line: str | None) -> bool:
        """Handle one typed line; False once the user leaves."""
        if line is None:
            self.done.set()
            return False
        text = line.strip()
        if not text:
            return True
        try:
            if text.startswith("/"):
                name, _, rest = text[1:].partition(" ")
                if name in ("quit", "exit", "q"):
                    self.done.set()
                    return False
                command: Callable[[str], Any] | None = getattr(self, f"cmd_{name.lower()}", None)
                if command is None:
                    self.say(f"! unknown command /{name} (try /help)")
                else:
                    await command(rest.strip())
            else:
                await self.send(line)
        except ApiError as exc:
            self.say(f"! {exc.code}: {exc.message}")
        except UsageError as exc:
            self.say(f"! {exc}")
        except (ConnectionLost, aiohttp.ClientError, TimeoutError) as exc:
            self.say(f"! not connected, try again: {exc}")
        except (SessionEnded, ClientClosed):
            self.done.set()
            return False
        return True

    async def send(self, text: str) -> None:
        assert self.client is not None
        target = self.target
        if target is None:
            raise UsageError("open a conversation first: /open N, /dm USER or /group NAME")
        if target.conv_id is None:
            ack = await self.client.send_text(text, to=target.peer_id)
            if self.target == target:
                self._set_target(target._replace(conv_id=ack.conv_id))
        else:
            await self.client.send_text(text, conv_id=target.conv_id)

    # -- commands --------------------------------------------------------------------------------
    async def cmd_help(self, _: str) -> None:
        self.say(HELP)

    async def _refresh(self) -> list[ConversationOut]:
        assert self.client is not None and self.names is not None
        page = await self.client.conversations(limit=100)
        self.listed = page.conversations
        for conv in page.conversations:
            self.convs[conv.conv_id] = conv
            self.names.remember(conv.peer)
        return page.conversations

    async def cmd_list(self, _: str) -> None:
        assert self.client is not None
        convs = await self._refresh()
        total = sum(c.unread for c in convs)
        if not convs:
            self.say("No conversations yet: /dm USER to start one.")
            return
        self.say(f"Conversations ({total} unread):")
        # The preview is cut to the rest of the line: one row per conversation, however long.
        preview_width = max(10, shutil.get_terminal_size().columns - LIST_PREFIX_COLUMNS - 1)
        for i, conv in enumerate(convs, 1):
            title = await self._title(conv)
            unread = f"{conv.unread} unread" if conv.unread else ""
            last = ""
            if conv.last_message is not None:
                who, what = await describe(conv.last_message, self._names())
                last = f"{clock(conv.last_message.created_at)} {who + ': ' if who else ''}{one_line(what)}"
                last = fit(last, preview_width).rstrip()
            state = "" if conv.active else " (left)"
            self.say(f"{i:>3}. {fit(title + state, 24)} {fit(unread, 10)} {last}")

    async def cmd_open(self, arg: str) -> None:
        if not arg:
            raise UsageError("/open N, /open USERNAME or /open GROUPNAME")
        if arg.isdigit() and 1 <= int(arg) <= len(self.listed):
            await self._open(self.listed[int(arg) - 1])
            return
        conv = await self._find(arg, direct=True) or await self._find(arg, direct=False)
        if conv is not None:
            await self._open(conv)
            return
        try:
            await self.cmd_dm(arg)
        except UsageError:
            if not arg.isdigit():
                raise
            # A number is meant as a place in the list, not as a username.
            if not self.listed:
                raise UsageError(f"no conversation {arg}: the list is empty (/dm USER starts one)") from None
            raise UsageError(f"no conversation {arg}: /list shows 1 to {len(self.listed)}") from None

    async def cmd_dm(self, username: str) -> None:
        if not username:
            raise UsageError("/dm USERNAME")
        conv = await self._find(username, direct=True)
        if conv is not None:
            await self._open(conv)
            return
        try:
            user = await self._names().by_username(username)
        except ApiError as exc:
            if exc.code == "not_found":
                raise UsageError(f"no user {username}") from None
            raise
        if self.me is not None and user.user_id == self.me.user_id:
            raise UsageError("that is you")
        self._set_target(Target(conv_id=None, title=user.username, peer_id=user.user_id))
        self.say(f"── {user.username} ── (new conversation)")

    async def cmd_group(self, name: str) -> None:
        if not name:
            raise UsageError("/group NAME")
        conv = await self._find(name, direct=False)
        if conv is None:
            raise UsageError(f"no group named {name} (/create NAME USER… makes one)")
        await self._open(conv)

    async def cmd_create(self, arg: str) -> None:
        assert self.client is not None
        if not arg:
            raise UsageError("/create NAME USER…")
        name, *usernames = arg.split()
        members = [(await self._names().by_username(u)).user_id for u in usernames]
        change = await self.client.call("group_create", name=name, members=members)
        group = change["group"]
        header = f"── #{group['name']} ── (group {group['conv_id']}, {group['member_count']} members)"
        await self._open_id(group["conv_id"], f"#{group['name']}", None, header)

    async def cmd_history(self, arg: str) -> None:
        assert self.client is not None
        target = self._require_target()
        if target.conv_id is None:
            self.say("(no messages yet)")
            return
        limit = int(arg) if arg.isdigit() else HISTORY_LINES
        page = await self.client.history(target.conv_id, limit=max(1, min(limit, 200)))
        shown = [m for m in page.messages if shown_in_history(m)]
        if not shown:
            self.say("(no messages yet)")
        for message in shown:
            self.say(await self._format(message, current=True))

    async def cmd_read(self, _: str) -> None:
        assert self.client is not None
        target = self._require_target()
        if target.conv_id is None:
            return
        conv = await self.client.conversation(target.conv_id)
        result = await self.client.mark_read(target.conv_id, conv.last_seq)
        self._read_done[target.conv_id] = max(self._read_done.get(target.conv_id, 0), result.read_seq)
        elsewhere = f"{result.total_unread} unread in other conversations" if result.total_unread else "nothing unread"
        self.say(f"* marked read; {elsewhere}")

    # -- helpers ---------------------------------------------------------------------------------
    def _names(self) -> Directory:
        assert self.names is not None
        return self.names

    def _require_target(self) -> Target:
        if self.target is None:
            raise UsageError("open a conversation first: /open N, /dm USER or /group NAME")
        return self.target

    async def _find(self, name: str, *, direct: bool) -> ConversationOut | None:
        """A conversation by the peer's username (direct) or the group's name / id."""
        for attempt in range(2):
            convs = self.listed if attempt == 0 else await self._refresh()
            for exact in (True, False):
                for conv in convs:
                    if direct and conv.type == "direct" and conv.peer is not None:
                        candidate = conv.peer.username
                    elif not direct and conv.type == "group":
                        if conv.conv_id == name:
                            return conv
                        candidate = conv.name
                    else:
                        continue
                    if candidate == name if exact else candidate.casefold() == name.casefold():
                        return conv
        return None

    async def _title(self, conv: ConversationOut) -> str:
        if conv.type == "direct" and conv.peer is not None:
            return conv.peer.username
        return f"#{conv.name}" if conv.name else f"#{conv.conv_id}"

    async def _conv(self, conv_id: str) -> ConversationOut | None:
        conv = self.convs.get(conv_id)
        if conv is None and self.client is not None:
            with contextlib.suppress(ApiError, ConnectionLost):
                conv = self.convs[conv_id] = await self.client.conversation(conv_id)
                self._names().remember(conv.peer)
        return conv

    async def _open(self, conv: ConversationOut) -> None:
        title = await self._title(conv)
        peer = conv.peer.user_id if conv.peer is not None else None
        header = f"── {title} ──"
        if conv.type == "group":  # the id is what `yim send --group` takes
            header = f"── {title} ── (group {conv.conv_id}, {conv.member_count} members)"
        await self._open_id(conv.conv_id, title, peer, header)

    async def _open_id(self, conv_id: str, title: str, peer_id: str | None, header: str) -> None:
        """Make a conversation the open one, show its latest messages, and mark them read.
        Entries that arrive meanwhile wait, so that nothing is shown twice or out of order."""
        assert self.client is not None
        self._opening = []
        self._set_target(Target(conv_id=conv_id, title=title, peer_id=peer_id))
        try:
            self.say(header)
            page = await self.client.history(conv_id, limit=HISTORY_LINES)
            if page.has_more:
                self.say("(older messages: /history N)")
            if not page.messages and not self._opening:
                self.say("(no messages yet)")
            last = 0
            batch = [m for m in page.messages if shown_in_history(m)]
            while batch:
                for message in batch:
                    if message.seq > last:
                        self.say(await self._format(message, current=True))
                        last = message.seq
                batch = sorted(self._opening, key=lambda m: m.seq)
                self._opening.clear()
        finally:
            self._opening = None
        last = max([last] + [m.seq for m in page.messages])
        self._shown_upto[conv_id] = max(self._shown_upto.get(conv_id, 0), last)
        if last:
            self._mark_read(conv_id, last)

    def _mark_read(self, conv_id: str, seq: int) -> None:
        """Mark the open conversation read up to ``seq``, as the person at the terminal has seen
        it (so the badges on the user's other devices go too). A burst of arrivals costs one
        ``read`` at a time: the latest wanted seq per conversation is sent once the last call is done."""
        if seq <= max(self._read_done.get(conv_id, 0), self._read_wanted.get(conv_id, 0)):
            return
        self._read_wanted[conv_id] = seq
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._send_reads(), name="yim-chat-read")

    async def _send_reads(self) -> None:
        assert self.client is not None
        while self._read_wanted:
            conv_id, seq = next(iter(self._read_wanted.items()))
            del self._read_wanted[conv_id]
            try:
                await self.client.mark_read(conv_id, seq)
            except (YimClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("could not mark %s read to %d: %s", conv_id, seq, exc)
                continue  # the next arrival or /read tries again
            self._read_done[conv_id] = max(self._read_done.get(conv_id, 0), seq)

    async def _is_current(self, conv_id: str) -> bool:
        target = self.target
        if target is None:
            return False
        if target.conv_id is not None:
            return target.conv_id == conv_id
        conv = await self._conv(conv_id)  # a first message to a peer: its conversation is new
        if conv is not None and conv.peer is not None and conv.peer.user_id == target.peer_id:
            self._set_target(target._replace(conv_id=conv_id))
            return True
        return False

    def _remember(self, message: MessageOut, what: str) -> None:
        """Keep what an entry said (to quote it if it is recalled) and the user's own last entry."""
        if self.me is not None and message.sender_id == self.me.user_id and message.kind not in ("system", "recall"):
            self._own_last[message.conv_id] = max(self._own_last.get(message.conv_id, 0), message.seq)
        if message.kind in ("system", "recall") or message.recalled:
            return
        self._shown[(message.conv_id, message.seq)] = one_line(what)
        self._shown.move_to_end((message.conv_id, message.seq))
        while len(self._shown) > SHOWN_MAX:
            self._shown.popitem(last=False)

    def _quote(self, conv_id: str, seq: int) -> str:
        """The text of an entry shown lately, shortened and in quotes; "" if it was not shown."""
        text = self._shown.get((conv_id, seq))
        return f"“{fit(text, 40).rstrip()}”" if text else ""

    async def _format(self, message: MessageOut, *, current: bool) -> str:
        who, what = await describe(message, self._names())
        self._remember(message, what)
        if message.kind == "recall" and isinstance(message.body, dict):
            quote = self._quote(message.conv_id, int(message.body.get("seq", 0)))
            if quote:
                what = f"{what}: {quote}"
        where = ""
        if not current:
            conv = await self._conv(message.conv_id)
            where = f"[{await self._title(conv) if conv else message.conv_id}] "
        return f"{clock(message.created_at)} {where}{who + ': ' if who else ''}{what}"

    # -- what arrives ------------------------------------------------------------------------------
    async def _pump(self) -> None:
        assert self.client is not None
        async for item in self.client.events():
            try:
                await self._show(item)
            except YimClientError as exc:
                log.debug("could not show %r: %s", item, exc)

    async def _show(self, item: InboxItem | GroupItem | Notice) -> None:
        if isinstance(item, Notice):
            return  # typing and presence: not shown in line mode
        data = item.data
        if isinstance(data, MessageOut):
            if data.kind == "system":
                self.convs.pop(data.conv_id, None)  # name or membership may have changed
            current = await self._is_current(data.conv_id)
            if current and self._opening is not None:
                self._opening.append(data)  # shown after the history being loaded
                return
            if current:
                # An entry pushed while its conversation was opening may be in the history
                # page already (the event is handled after the page): not shown twice.
                if data.seq <= self._shown_upto.get(data.conv_id, 0):
                    return
                self._shown_upto[data.conv_id] = data.seq
            self.say(await self._format(data, current=current))
            if current and (self.me is None or data.sender_id != self.me.user_id):
                self._mark_read(data.conv_id, data.seq)  # it is on the screen: read
            return
        if isinstance(item, InboxItem) and item.type == "receipt" and isinstance(data, dict):
            await self._show_receipt(data)
            return
        if isinstance(item, InboxItem) and item.type == "relation" and isinstance(data, dict):
            event = str(data.get("event", "")).replace("_", " ")
            self.say(f"* {event}: {await self._names().name(str(data.get('user_id')))}")

    async def _show_receipt(self, data: dict[str, Any]) -> None:
        """A read receipt of the open conversation, in words: "seen by X" once X has read the
        user's last message, else which message X has read up to (if it is still on screen)."""
        conv_id, user_id, read_seq = data.get("conv_id"), str(data.get("user_id")), data.get("read_seq")
        if self.target is None or conv_id != self.target.conv_id or not isinstance(read_seq, int):
            return
        if self.me is not None and user_id == self.me.user_id:
            return  # another device of this user
        name = await self._names().name(user_id)
        if read_seq >= self._own_last.get(conv_id, 0):
            self.say(f"* seen by {name}")
            return
        quote = self._quote(conv_id, read_seq)
        if quote:
            self.say(f"* {name} has read up to {quote}")

    async def _watch_connection(self) -> None:
        """Say when the connection drops and when it is back (the SDK reconnects by itself)."""
        assert self.client is not None
        online = True
        while True:
            await asyncio.sleep(0.5)
            if self.client.connected != online:
                online = self.client.connected
                self.say("* connected again" if online else "* connection lost, reconnecting…")


def _tolerant_output() -> None:
    """Never fail on a character the terminal's encoding lacks (a C locale is UTF-8 anyway)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def _chat(args: argparse.Namespace) -> int:
    _tolerant_output()
    servers = _servers(args)
    password = read_password(args)
    device_id = LocalState(args.state).device_id(servers[0], args.user, "chat")
    logging.getLogger("yim.client").setLevel(max(logging.WARNING, logging.getLogger().level))
    app = ChatApp(servers, args.user, password, device_id)
    try:
        code = asyncio.run(app.run())
    except KeyboardInterrupt:
        code = 130
    finally:
        app.restore_terminal()
    if app.reader_waiting():
        # The input thread still waits for a line that will never be used; leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# --- one-shot commands ------------------------------------------------------------------------------


def _servers(args: argparse.Namespace) -> list[str]:
    servers = args.server or [os.environ.get("YIM_SERVER", DEFAULT_SERVER)]
    return [s for item in servers for s in item.split(",") if s]


async def _logged_in(args: argparse.Namespace, api: HttpApi) -> None:
    password = read_password(args)
    device_id = LocalState(args.state).device_id(_servers(args)[0], args.user, "cli")
    await api.login(args.user, password, device_id, PLATFORM, "yim command line")


def _print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _check(value: str, rule: Any, what: str) -> None:
    """``value`` against a field type of the protocol (frames.py keeps the rule itself)."""
    try:
        msgspec.convert(value, rule)
    except msgspec.ValidationError:
        raise UsageError(what) from None


async def _register(args: argparse.Namespace) -> int:
    # What can be wrong is said before the password is asked for (twice, at a prompt).
    _check(args.user, Username, f"{args.user!r} cannot be a username: 3 to 32 letters, digits, '_', '.' or '-'")
    async with HttpApi(_servers(args)) as api:
        await api.request("GET", "/healthz", auth=False)  # unreachable: said now, not after the prompt
        password = read_password(
            args, confirm=True, check=lambda p: _check(p, Password, "the password must be 8 to 256 characters long")
        )
        user = await api.register(args.user, password, args.display_name or "")
    _print_json(user)
    return 0


async def _send(args: argparse.Namespace) -> int:
    # From stdin, the line break that ends the input (`echo`, a file) is not part of the message.
    text = sys.stdin.read().rstrip("\r\n") if args.text == ["-"] else " ".join(args.text)
    if not text.strip():
        raise UsageError("nothing to send")
    async with HttpApi(_servers(args)) as api:
        await _logged_in(args, api)
        try:
            if args.to is not None:
                target = {"to": (await api.user_by_name(args.to)).user_id}
            else:
                target = {"conv_id": await _group_conversation(api, args.group)}
            client_msg_id = uuid.uuid4().hex
            for attempt in range(3):  # a resend with the same client_msg_id is never a second message
                try:
                    ack = await api.send(body={"text": text}, client_msg_id=client_msg_id, **target)
                    break
                except (ConnectionLost, aiohttp.ClientError, TimeoutError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()
    _print_json(ack)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with HttpApi(_servers(args)) as api:
        await _logged_in(args, api)
        try:
            conv_id = args.conv or await _direct_conversation(api, args.with_user)
            page = await api.history(conv_id, limit=args.limit)
            if args.json:
                _print_json(page)
                return 0
            names = Directory(api)
            for message in filter(shown_in_history, page.messages):
                sys.stdout.write(await history_line(message, names, full_time=True) + "\n")
            if page.has_more:
                sys.stdout.write(f"(older messages before #{page.messages[0].seq})\n")
        finally:
            with contextlib.suppress(YimClientError, aiohttp.ClientError, TimeoutError):
                await api.logout()
    return 0


async def _group_conversation(api: HttpApi, group: str) -> str:
    """A group's conversation id, from the id itself (digits) or from the group's name:
    exactly as written, else ignoring case; a name that two groups share is refused."""
    if group.isdigit():
        return group
    exact: list[ConversationOut] = []
    folded: list[ConversationOut] = []
    before: str | None = None
    while True:
        page = await api.conversations(limit=200, before=before)
        for conv in page.conversations:
            if conv.type == "group" and conv.active:
                if conv.name == group:
                    exact.append(conv)
                elif conv.name.casefold() == group.casefold():
                    folded.append(conv)
        if page.next_before is None:
            break
        before = page.next_before
    found = exact or folded
    if not found:
        raise UsageError(f"no group named {group} among your conversations")
    if len(found) > 1:
        ids = ", ".join(c.conv_id for c in found)
        raise UsageError(f"{len(found)} groups are named {group}: give the id instead ({ids})")
    return found[0].conv_id


async def _direct_conversation(api: HttpApi, username: str) -> str:
    before: str | None = None
    while True:
        page = await api.conversations(limit=200, before=before)
        for conv in page.conversations:
            if conv.type == "direct" and conv.peer is not None and conv.peer.username.casefold() == username.casefold():
                return conv.conv_id
        if page.next_before is None:
            raise UsageError(f"no conversation with {username}")
        before = page.next_before


def _one_shot(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Run an async command; print API and usage errors on stderr (exit status 1)."""

    def run(args: argparse.Namespace) -> int:
        _tolerant_output()
        logging.getLogger("yim.client").setLevel(max(logging.WARNING, logging.getLogger().level))
        try:
            return asyncio.run(command(args))
        except ApiError as exc:
            print(f"yim {args.command}: {exc.code}: {exc.message}", file=sys.stderr)
        except UsageError as exc:
            print(f"yim {args.command}: {exc}", file=sys.stderr)
        except (ConnectionLost, aiohttp.ClientError, TimeoutError, OSError) as exc:
            print(f"yim {args.command}: cannot reach the server: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            return 130
        return 1

    return run


def _chat_entry(args: argparse.Namespace) -> int:
    try:
        return _chat(args)
    except ApiError as exc:
        print(f"yim chat: {exc.code}: {exc.message}", file=sys.stderr)
    except UsageError as exc:
        print(f"yim chat: {exc}", file=sys.stderr)
    except (SessionEnded, ConnectionLost, aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"yim chat: cannot connect: {exc}", file=sys.stderr)
    return 1


def _account_args(parser: argparse.ArgumentParser, *, state: bool = True) -> None:
    parser.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help=f"node URL, e.g. {DEFAULT_SERVER} (repeat for more nodes; default $YIM_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument("--user", required=True, metavar="NAME", help="your username")
    parser.add_argument(
        "--password-file", metavar="FILE", help="read the password from FILE (else $YIM_PASSWORD, else a prompt)"
    )
    if state:
        parser.add_argument("--state", metavar="DIR", help="where the device id is kept (default ~/.config/yim)")


def add_terminal_parsers(sub: Any) -> None:
    """Add ``chat``, ``send``, ``history`` and ``register`` to the ``yim`` command."""
    chat = sub.add_parser("chat", help="chat in the terminal")
    _account_args(chat)
    chat.set_defaults(func=_chat_entry)

    send = sub.add_parser("send", help="send one text message; prints the ACK as JSON")
    _account_args(send)
    to = send.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", metavar="USER", help="a username: the one-to-one conversation with them")
    to.add_argument("--group", metavar="NAME|ID", help="a group you are in, by its name or conversation id")
    send.add_argument("text", nargs="+", metavar="TEXT", help="the message ('-': read it from stdin)")
    send.set_defaults(func=_one_shot(_send))

    history = sub.add_parser("history", help="print a conversation's latest messages")
    _account_args(history)
    which = history.add_mutually_exclusive_group(required=True)
    which.add_argument("--with", dest="with_user", metavar="USER", help="the one-to-one conversation with USER")
    which.add_argument("--conv", metavar="CONV_ID", help="a conversation id (one-to-one or group)")
    history.add_argument("--limit", type=int, default=50, help="how many messages (1…200, default 50)")
    history.add_argument("--json", action="store_true", help="print the page as JSON")
    history.set_defaults(func=_one_shot(_history))

    register = sub.add_parser("register", help="create an account; prints it as JSON")
    _account_args(register, state=False)
    register.add_argument("--display-name", metavar="NAME", help="shown instead of the username")
    register.set_defaults(func=_one_shot(_register))
