"""``yim chat``: the I/O loop of the interactive chat. It reads typed lines in a thread,
runs the commands against the SDK, shows what arrives, and marks read what the open
conversation shows (commands.py parses, render.py formats, state.py keeps what is shown,
screen.py draws)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import aiohttp

from yim.client.core import GroupItem, InboxItem
from yim.client.sdk import ApiError, Client, ClientClosed, ConnectionLost, HttpApi, SessionEnded, YimClientError
from yim.client.terminal.commands import (
    HELP,
    HISTORY_LINES,
    Quit,
    Text,
    UsageError,
    create_args,
    history_limit,
    known,
    list_number,
    parse_line,
    pick_shop,
    reply_args,
)
from yim.client.terminal.mentions import MEMBERS_SCANNED, Mentions, resolve, wants_lookup
from yim.client.terminal.render import (
    Directory,
    describe,
    entry_line,
    fit,
    list_row,
    shown_in_history,
    title,
)
from yim.client.terminal.screen import Screen
from yim.client.terminal.state import PLATFORM, ChatState, Target
from yim.protocol.frames import ConversationOut, MessageOut, Notice, UserOut, UsersPage

log = logging.getLogger("yim.terminal")


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
        self.state = ChatState()
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
            self.state.me_id = self.me.user_id
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

    @property
    def target(self) -> Target | None:
        return self.state.target

    def _set_target(self, target: Target | None) -> None:
        self.state.target = target
        self.screen.prompt = f"{target.title}> " if target else "> "

    # -- input -----------------------------------------------------------------------------------
    async def handle_line(self, line: str | None) -> bool:
        """Handle one typed line; False once the user leaves."""
        typed = parse_line(line)
        if isinstance(typed, Quit):
            self.done.set()
            return False
        if typed is None:
            return True
        try:
            if isinstance(typed, Text):
                await self.send(typed.text)
            elif not known(typed):
                self.say(f"! unknown command /{typed.name} (try /help)")
            else:
                command: Callable[[str], Awaitable[None]] = getattr(self, f"cmd_{typed.name}")
                await command(typed.arg)
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
            if target.shop_id is not None:  # the first message to a shop opens the conversation
                ack = await self.client.send(shop_id=target.shop_id, kind="text", body={"text": text})
            else:
                ack = await self.client.send_text(text, to=target.peer_id)
            if self.target == target:
                self._set_target(target._replace(conv_id=ack.conv_id))
        else:
            mentions = await self._mentions(target.conv_id, text)
            await self.client.send(
                conv_id=target.conv_id,
                kind="text",
                body={"text": text},
                mentions=mentions.ids or None,
                mention_all=mentions.everyone,
            )

    # -- commands --------------------------------------------------------------------------------
    async def cmd_help(self, _: str) -> None:
        self.say(HELP)

    async def _refresh(self) -> list[ConversationOut]:
        assert self.client is not None and self.names is not None
        page = await self.client.conversations(limit=100)
        self.state.listed_now(page.conversations)
        for conv in page.conversations:
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
        columns = shutil.get_terminal_size().columns
        for i, conv in enumerate(convs, 1):
            self.say(await list_row(i, conv, self._names(), columns))

    async def cmd_open(self, arg: str) -> None:
        if not arg:
            raise UsageError("/open N, /open USERNAME or /open GROUPNAME")
        listed = self.state.listed
        number = list_number(arg, len(listed))
        if number is not None:
            await self._open(listed[number - 1])
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
            if not listed:
                raise UsageError(f"no conversation {arg}: the list is empty (/dm USER starts one)") from None
            raise UsageError(f"no conversation {arg}: /list shows 1 to {len(listed)}") from None

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

    async def cmd_shop(self, name: str) -> None:
        assert self.client is not None
        if not name:
            raise UsageError("/shop NAME (or a part of it)")
        page = await self.client.shop_search(name, limit=10)
        shop = page.shops[pick_shop([s.name for s in page.shops], name)]
        mine = self.me.user_id if self.me is not None else None
        for conv in await self._refresh():
            if conv.type == "service" and conv.shop_id == shop.shop_id and conv.customer_id == mine:
                await self._open(conv)
                return
        self._set_target(Target(conv_id=None, title=shop.name, shop_id=shop.shop_id))
        self.say(f"── {shop.name} ── (shop, new conversation)")

    async def cmd_create(self, arg: str) -> None:
        assert self.client is not None
        name, usernames = create_args(arg)
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
        page = await self.client.history(target.conv_id, limit=history_limit(arg))
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
        self.state.read_done(target.conv_id, result.read_seq)
        elsewhere = f"{result.total_unread} unread in other conversations" if result.total_unread else "nothing unread"
        self.say(f"* marked read; {elsewhere}")

    async def cmd_reply(self, arg: str) -> None:
        assert self.client is not None
        seq, text = reply_args(arg)
        target = self._require_target()
        if target.conv_id is None:
            raise UsageError("nothing to reply to yet in this conversation")
        mentions = await self._mentions(target.conv_id, text)
        await self.client.send(
            conv_id=target.conv_id,
            kind="text",
            body={"text": text},
            reply_to=seq,
            mentions=mentions.ids or None,
            mention_all=mentions.everyone,
        )

    # -- helpers ---------------------------------------------------------------------------------
    async def _mentions(self, conv_id: str, text: str) -> Mentions:
        """The members a line for a group names with ``@`` (mentions.py has the rule); none
        elsewhere, and no lookup for a line without an ``@`` starting a word."""
        if not wants_lookup(text):
            return Mentions([])
        conv = await self._conv(conv_id)
        if conv is None or conv.type != "group":
            return Mentions([])
        return resolve(text, await self._members(conv_id), self.state.me_id)

    async def _members(self, conv_id: str) -> list[UserOut]:
        """A group's members as users (at most MEMBERS_SCANNED), with their names as they are
        now: a name changed since it was last shown is the name a mention is typed with."""
        assert self.client is not None
        ids: list[str] = []
        after: str | None = None
        while len(ids) < MEMBERS_SCANNED:
            page = await self.client.call("group_members", conv_id=conv_id, after=after, limit=1000)
            ids += [m["user_id"] for m in page["members"]]
            after = page["next_after"]
            if after is None:
                break
        ids = ids[:MEMBERS_SCANNED]
        names = self._names()
        for start in range(0, len(ids), 500):  # the most one `users` call takes
            found = await self.client.call("users", user_ids=ids[start : start + 500], reply_type=UsersPage)
            for user in found.users:
                names.remember(user)
        return [names.users[i] for i in ids if i in names.users]

    def _names(self) -> Directory:
        assert self.names is not None
        return self.names

    def _require_target(self) -> Target:
        if self.target is None:
            raise UsageError("open a conversation first: /open N, /dm USER or /group NAME")
        return self.target

    async def _find(self, name: str, *, direct: bool) -> ConversationOut | None:
        """A conversation by the peer's username (direct) or the group's name / id."""
        for attempt in range(2):  # the list as last shown, then as it is now
            convs = self.state.listed if attempt == 0 else await self._refresh()
            conv = self.state.find(convs, name, direct=direct)
            if conv is not None:
                return conv
        return None

    async def _conv(self, conv_id: str) -> ConversationOut | None:
        conv = self.state.convs.get(conv_id)
        if conv is None and self.client is not None:
            with contextlib.suppress(ApiError, ConnectionLost):
                conv = self.state.convs[conv_id] = await self.client.conversation(conv_id)
                self._names().remember(conv.peer)
        return conv

    async def _open(self, conv: ConversationOut) -> None:
        name = title(conv)
        peer = conv.peer.user_id if conv.peer is not None else None
        header = f"── {name} ──"
        if conv.type == "group":  # the id is what `yim send --group` takes
            header = f"── {name} ── (group {conv.conv_id}, {conv.member_count} members)"
        await self._open_id(conv.conv_id, name, peer, header)

    async def _open_id(self, conv_id: str, title: str, peer_id: str | None, header: str) -> None:
        """Make a conversation the open one, show its latest messages, and mark them read.
        Entries that arrive meanwhile wait, so that nothing is shown twice or out of order."""
        assert self.client is not None
        opening: list[MessageOut] = []
        self.state.opening = opening
        self._set_target(Target(conv_id=conv_id, title=title, peer_id=peer_id))
        try:
            self.say(header)
            page = await self.client.history(conv_id, limit=HISTORY_LINES)
            if page.has_more:
                self.say("(older messages: /history N)")
            if not page.messages and not opening:
                self.say("(no messages yet)")
            last = 0
            batch = [m for m in page.messages if shown_in_history(m)]
            while batch:
                for message in batch:
                    if message.seq > last:
                        self.say(await self._format(message, current=True))
                        last = message.seq
                batch = sorted(opening, key=lambda m: m.seq)
                opening.clear()
        finally:
            self.state.opening = None
        last = max([last] + [m.seq for m in page.messages])
        self.state.shown_up_to(conv_id, last)
        if last:
            self._mark_read(conv_id, last)

    def _mark_read(self, conv_id: str, seq: int) -> None:
        """Mark the open conversation read up to ``seq``, as the person at the terminal has seen
        it (so the badges on the user's other devices go too). A burst of arrivals costs one
        ``read`` at a time: the latest wanted seq per conversation is sent once the last call is done."""
        if not self.state.want_read(conv_id, seq):
            return
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._send_reads(), name="yim-chat-read")

    async def _send_reads(self) -> None:
        assert self.client is not None
        while (owed := self.state.next_read()) is not None:
            conv_id, seq = owed
            try:
                await self.client.mark_read(conv_id, seq)
            except (YimClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("could not mark %s read to %d: %s", conv_id, seq, exc)
                continue  # the next arrival or /read tries again
            self.state.read_done(conv_id, seq)

    async def _is_current(self, conv_id: str) -> bool:
        target = self.target
        if target is None:
            return False
        if target.conv_id is not None:
            return target.conv_id == conv_id
        conv = await self._conv(conv_id)  # a first message to a peer or a shop: its conversation is new
        if conv is None:
            return False
        if (conv.peer is not None and conv.peer.user_id == target.peer_id) or (
            target.shop_id is not None and conv.shop_id == target.shop_id
        ):
            self._set_target(target._replace(conv_id=conv_id))
            return True
        return False

    def _quote(self, conv_id: str, seq: int) -> str:
        """The text of an entry shown lately, shortened and in quotes; "" if it was not shown."""
        text = self.state.shown_text(conv_id, seq)
        return f"“{fit(text, 40).rstrip()}”" if text else ""

    async def _format(self, message: MessageOut, *, current: bool) -> str:
        who, what = await describe(message, self._names())
        self.state.remember(message, what)
        if message.kind == "recall" and isinstance(message.body, dict):
            quote = self._quote(message.conv_id, int(message.body.get("seq", 0)))
            if quote:
                what = f"{what}: {quote}"
        where = ""
        if not current:
            conv = await self._conv(message.conv_id)
            where = f"[{title(conv) if conv else message.conv_id}] "
        return entry_line(message, who, what, where)

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
                self.state.convs.pop(data.conv_id, None)  # name or membership may have changed
            current = await self._is_current(data.conv_id)
            if current and self.state.opening is not None:
                self.state.opening.append(data)  # shown after the history being loaded
                return
            # An entry pushed while its conversation was opening may be in the history page
            # already (the event is handled after the page): not shown twice.
            if current and not self.state.show_in_open(data.conv_id, data.seq):
                return
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
        if self.target is None or not isinstance(conv_id, str) or conv_id != self.target.conv_id:
            return
        if not isinstance(read_seq, int):
            return
        if self.me is not None and user_id == self.me.user_id:
            return  # another device of this user
        name = await self._names().name(user_id)
        if self.state.seen_by_all_of(conv_id, read_seq):
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
