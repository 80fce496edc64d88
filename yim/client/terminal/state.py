"""The state of the terminal client: the device ids kept on disk (``state.json``), and
what the chat shows — the open conversation, the entries shown lately, the reads owed.
No I/O here except the state file; the chat loop (chat.py) asks and updates."""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final, NamedTuple

from yim.client.terminal.render import one_line
from yim.protocol.frames import ConversationOut, MessageOut

PLATFORM: Final = "desktop"
#: texts of the entries shown lately, to quote when one is recalled or read (bounded)
SHOWN_MAX = 1000


# --- local state on disk ---------------------------------------------------------------------------


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
        device_id: str = account[key]
        return device_id

    def _save(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
        os.replace(tmp, self.path)


# --- what the chat shows ---------------------------------------------------------------------------


class Target(NamedTuple):
    """The open conversation: ``conv_id`` is None for a first message to ``peer_id``, or to
    the customer service of ``shop_id``."""

    conv_id: str | None
    title: str
    peer_id: str | None = None
    shop_id: str | None = None


class ChatState:
    """What the chat shows and has shown, for one user (``me_id``)."""

    def __init__(self) -> None:
        self.me_id = ""
        self.target: Target | None = None
        #: the conversations of the last /list, in its order (what /open N counts)
        self.listed: list[ConversationOut] = []
        #: conversations looked up, by id (titles of arrivals elsewhere)
        self.convs: dict[str, ConversationOut] = {}
        #: entries that arrive while a conversation opens (None: none opens)
        self.opening: list[MessageOut] | None = None
        self._shown: OrderedDict[tuple[str, int], str] = OrderedDict()  # (conv_id, seq) -> text, SHOWN_MAX
        self._own_last: dict[str, int] = {}  # conv_id -> seq of the last entry of this user seen
        self._shown_upto: dict[str, int] = {}  # conv_id -> seq of the last entry shown as the open one
        self._read_wanted: dict[str, int] = {}  # conv_id -> seq the open conversation should be read to
        self._read_done: dict[str, int] = {}  # conv_id -> seq it was marked read to

    def listed_now(self, convs: list[ConversationOut]) -> None:
        self.listed = convs
        for conv in convs:
            self.convs[conv.conv_id] = conv

    def find(self, convs: list[ConversationOut], name: str, *, direct: bool) -> ConversationOut | None:
        """A conversation by the peer's username (direct) or the group's name / id: exactly
        as written first, then ignoring case."""
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

    def remember(self, message: MessageOut, what: str) -> None:
        """Keep what an entry said (to quote it if it is recalled) and the user's own last entry."""
        if message.sender_id == self.me_id and message.kind not in ("system", "recall", "edit"):
            self._own_last[message.conv_id] = max(self._own_last.get(message.conv_id, 0), message.seq)
        if message.kind == "edit" and isinstance(message.body, dict):  # a recall then quotes the new text
            new = message.body.get("body")
            key = (message.conv_id, int(message.body.get("seq", 0)))
            if key in self._shown and isinstance(new, dict) and isinstance(new.get("text"), str):
                self._shown[key] = one_line(new["text"])
            return
        if message.kind in ("system", "recall") or message.recalled:
            return
        self._shown[(message.conv_id, message.seq)] = one_line(what)
        self._shown.move_to_end((message.conv_id, message.seq))
        while len(self._shown) > SHOWN_MAX:
            self._shown.popitem(last=False)

    def shown_text(self, conv_id: str, seq: int) -> str | None:
        """The text of an entry shown lately (None if it was not shown)."""
        return self._shown.get((conv_id, seq))

    def seen_by_all_of(self, conv_id: str, read_seq: int) -> bool:
        """Whether a reader at ``read_seq`` has read the user's last message here."""
        return read_seq >= self._own_last.get(conv_id, 0)

    def show_in_open(self, conv_id: str, seq: int) -> bool:
        """Whether an arrival in the open conversation is new on the screen: an entry pushed
        while its conversation was opening may be in the history page already."""
        if seq <= self._shown_upto.get(conv_id, 0):
            return False
        self._shown_upto[conv_id] = seq
        return True

    def shown_up_to(self, conv_id: str, seq: int) -> None:
        self._shown_upto[conv_id] = max(self._shown_upto.get(conv_id, 0), seq)

    def want_read(self, conv_id: str, seq: int) -> bool:
        """Owe a ``read`` up to ``seq``; False if one that far is done or owed already."""
        if seq <= max(self._read_done.get(conv_id, 0), self._read_wanted.get(conv_id, 0)):
            return False
        self._read_wanted[conv_id] = seq
        return True

    def next_read(self) -> tuple[str, int] | None:
        """The oldest read owed (the latest seq of its conversation), taken off the list."""
        if not self._read_wanted:
            return None
        conv_id, seq = next(iter(self._read_wanted.items()))
        del self._read_wanted[conv_id]
        return conv_id, seq

    def read_done(self, conv_id: str, seq: int) -> None:
        self._read_done[conv_id] = max(self._read_done.get(conv_id, 0), seq)
