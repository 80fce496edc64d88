"""Rendering: how the terminal client puts entries, names and the conversation list into
lines of text (wide characters counted as two columns)."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from typing import Any

import aiohttp

from yim.client.sdk import ApiError, ConnectionLost, HttpApi
from yim.protocol.frames import ConversationOut, MessageOut, UserOut

#: columns of a /list row before its preview: "NNN. " + title (24) + " " + unread (10) + " "
LIST_PREFIX_COLUMNS = 41


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


def size_text(n: int) -> str:
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


async def _relation(body: dict[str, Any], names: Directory) -> str:
    """What a message's server fields say before its content: ``[fwd NAME]`` for a
    forwarded copy, ``[re #SEQ NAME: excerpt]`` for a reply (protocol.md §6.13, §6.14)."""
    out = ""
    fwd = body.get("forwarded")
    if isinstance(fwd, dict):
        out += f"[fwd {await names.name(str(fwd['sender_id']))}] " if fwd.get("sender_id") else "[fwd] "
    quote = body.get("quote")
    if isinstance(quote, dict):
        if quote.get("recalled"):
            said = "(recalled)"
        elif quote.get("withheld"):
            said = "(not shown)"
        else:
            said = one_line(str(quote.get("excerpt") or f"[{quote.get('kind', '')}]"))
        who = f" {await names.name(str(quote['sender_id']))}:" if quote.get("sender_id") else ""
        out += f"[re #{quote.get('seq')}{who} {said}] "
    return out


async def describe(message: MessageOut, names: Directory) -> tuple[str, str]:
    """(who, what) for one timeline entry; ``who`` is empty for system and recall entries."""
    body = message.body if isinstance(message.body, dict) else {}
    kind = message.kind
    if message.recalled:
        return await names.name(message.sender_id), "(recalled)"
    if kind in ("text", "emoji", "custom", "image", "video", "file"):
        who, what = await _content(kind, body, message, names)
        return who, await _relation(body, names) + what
    return await _entry(kind, body, message, names)


async def _content(kind: str, body: dict[str, Any], message: MessageOut, names: Directory) -> tuple[str, str]:
    if kind == "custom":  # an app's message: its text fallback (protocol.md §11.3a)
        return await names.name(message.sender_id), str(body.get("text") or f"[{body.get('type', kind)}]")
    if kind == "text":
        edited = " (edited)" if body.get("edited_at") else ""  # the server's mark (protocol.md §6.9a)
        return await names.name(message.sender_id), str(body.get("text", "")) + edited
    if kind == "emoji":
        return await names.name(message.sender_id), str(body.get("emoji", ""))
    if kind in ("image", "video", "file"):
        name = body.get("name") or kind
        extra = []
        if body.get("width") and body.get("height"):
            extra.append(f"{body['width']}x{body['height']}")
        if isinstance(body.get("size"), int):
            extra.append(size_text(body["size"]))
        detail = f" ({', '.join(extra)})" if extra else ""
        return await names.name(message.sender_id), f"[{kind}: {name}{detail}]"
    return await names.name(message.sender_id), f"[{kind}]"


async def _entry(kind: str, body: dict[str, Any], message: MessageOut, names: Directory) -> tuple[str, str]:
    if kind == "recall":
        return "", f"* {await names.name(message.sender_id)} recalled a message"
    if kind == "edit":  # the message's new text rides in the entry (protocol.md §11.2a)
        new = body.get("body")
        text = new.get("text", "") if isinstance(new, dict) else ""
        return "", f"* {await names.name(message.sender_id)} edited #{body.get('seq', '?')}: {text}"
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
    """Whether a history view lists an entry: recall and edit entries are not listed, since
    the message they changed already reads "(recalled)" or its new text "(edited)" at its own
    place (listing both says it twice)."""
    return message.kind not in ("recall", "edit")


async def history_line(message: MessageOut, names: Directory, *, full_time: bool = False) -> str:
    who, what = await describe(message, names)
    stamp = clock(message.created_at, full=full_time)
    return f"#{message.seq} {stamp} {who}: {what}" if who else f"#{message.seq} {stamp} {what}"


def title(conv: ConversationOut) -> str:
    """How a conversation is named: the peer's username, a shop's name, or the group's name
    after a '#'."""
    if conv.type == "direct" and conv.peer is not None:
        return conv.peer.username
    if conv.type == "service" and conv.name:
        return conv.name
    return f"#{conv.name}" if conv.name else f"#{conv.conv_id}"


async def list_row(number: int, conv: ConversationOut, names: Directory, columns: int) -> str:
    """One row of /list; the preview is cut to the rest of the line, so that every
    conversation takes one row however long its last message."""
    preview_width = max(10, columns - LIST_PREFIX_COLUMNS - 1)
    unread = f"{conv.unread} unread" if conv.unread else ""
    last = ""
    if conv.last_message is not None:
        who, what = await describe(conv.last_message, names)
        last = f"{clock(conv.last_message.created_at)} {who + ': ' if who else ''}{one_line(what)}"
        last = fit(last, preview_width).rstrip()
    state = "" if conv.active else " (left)"
    return f"{number:>3}. {fit(title(conv) + state, 24)} {fit(unread, 10)} {last}"


def entry_line(message: MessageOut, who: str, what: str, where: str = "") -> str:
    """An arrival or a line of the open conversation; ``where`` names another conversation."""
    return f"{clock(message.created_at)} {where}{who + ': ' if who else ''}{what}"
