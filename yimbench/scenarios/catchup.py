"""Catch-up of a returning device that belongs to K groups: the cost side of read fan-out.

Online delivery is cheaper under read fan-out at every group size (``fanout-sweep``'s
first panel). What it moves elsewhere is paid by a device that comes back: under write
fan-out every group entry is in its inbox, so it catches up with one scan of ``sync``
pages; under read fan-out it pages the inbox, then pulls each group listed in the pages'
``groups`` with ``history(after=its group cursor)`` — one request per group at least,
however few entries the group got.

Used by ``fanout-sweep`` (yimbench/scenarios/fanout_sweep.py). One measurement:

1. set-up (``create_groups``, over HTTP): K groups, each with the returning user, a few
   senders and other members;
2. ``catch_up`` once, not measured: the device is up to date (its inbox cursor and one
   cursor per read-fan-out group), then disconnects;
3. ``fill``: M messages sent round-robin over the K groups while the device is offline;
4. ``catch_up`` from those cursors, measured: connect + auth, ``sync`` pages until
   ``has_more`` is false, then ``history(after=…)`` pages for every group whose head is
   ahead of its cursor — what the SDK's ``Client`` does (yim/client/sdk.py,
   docs/protocol.md §12.1 and §12.3), one request at a time like a real client, whose
   reads on one connection the server serves in order anyway. Sync and history pages
   both ask for ``page`` entries (the SDK's default is 100; the server caps history
   pages at ``history_page_max``, 200). Each entry is checked: inbox seqs gap-free,
   every group's seqs gap-free, every message exactly once.

Catch-up reads nothing but writes nothing either (no ``ack``, no ``read``), so step 4 can
be repeated from the same cursors; ``fanout-sweep`` reports the median of a few.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import msgspec
import psutil

from yimbench.client import Account, Body, client_session, connect, decode_reply, group_send_frame, send_windowed

_TEXT = aiohttp.WSMsgType.TEXT
#: sends a connection may have awaiting their commit (docs/protocol.md §6.3)
FILL_WINDOW = 64


# --- reading sync and history pages: only the fields the catch-up looks at -----------------------


class _Entry(msgspec.Struct):
    """A timeline entry: a sync event's ``data`` or one of a history page's ``messages``."""

    seq: int = 0
    kind: str = ""
    body: Body | None = None


class _Event(msgspec.Struct):
    seq: int
    type: str
    data: _Entry


class _GroupHead(msgspec.Struct):
    conv_id: str
    last_seq: int
    from_seq: int


class _SyncPage(msgspec.Struct):
    events: list[_Event]
    next_since: int
    has_more: bool
    groups: list[_GroupHead] = []


class _HistoryPage(msgspec.Struct):
    messages: list[_Entry]
    has_more: bool


_decode_sync = msgspec.json.Decoder(_SyncPage).decode
_decode_history = msgspec.json.Decoder(_HistoryPage).decode


def _sync_frame(rid: int, since: int, limit: int) -> str:
    return f'{{"op":"sync","rid":{rid},"since":{since},"limit":{limit}}}'


def _history_frame(rid: int, conv_id: str, after: int, limit: int) -> str:
    return f'{{"op":"history","rid":{rid},"conv_id":"{conv_id}","after":{after},"limit":{limit}}}'


# --- set-up ---------------------------------------------------------------------------------------


async def create_groups(
    url: str, owner: Account, members: list[str], count: int, tag: str, *, concurrency: int = 8
) -> tuple[list[str], str]:
    """``count`` groups of ``owner`` + ``members`` (user ids), made over HTTP: their conv_ids
    and the fan-out mode they got (the node's threshold decides it)."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {owner.token}"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, timeout=timeout) as http:

        async def one(k: int) -> tuple[str, str]:
            async with sem:
                r = await http.post(
                    "/api/v1/groups", json={"name": f"cu {tag} {k}", "members": members}, headers=headers
                )
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"creating catch-up group {k} failed: HTTP {r.status} {body}")
                return str(body["group"]["conv_id"]), str(body["group"]["fanout"])

        made = await asyncio.gather(*(one(k) for k in range(count)))
    modes = {mode for _c, mode in made}
    if len(modes) != 1:
        raise RuntimeError(f"the catch-up groups got different fan-out modes: {sorted(modes)}")
    return [conv for conv, _m in made], modes.pop()


# --- the offline period ---------------------------------------------------------------------------


async def fill(url: str, senders: list[Account], groups: list[str], messages: int) -> int:
    """Send ``messages`` texts round-robin over ``groups``, message i by sender i % len(senders)
    to group i % len(groups), the text starting with i. Returns how many were refused."""
    per: list[list[int]] = [list(range(s, messages, len(senders))) for s in range(len(senders))]
    async with client_session() as http:
        refused = await asyncio.gather(
            *(_send_all(http, url, acc, groups, ids) for acc, ids in zip(senders, per, strict=True))
        )
    return sum(refused)


async def _send_all(http: aiohttp.ClientSession, url: str, sender: Account, groups: list[str], ids: list[int]) -> int:
    ws, _ = await connect(http, url, sender.token)

    def frame(k: int) -> str:
        i = ids[k]
        return group_send_frame(2 + k, groups[i % len(groups)], f"{i} {time.time_ns()}", f"cu{i}")

    try:
        return await send_windowed(ws, len(ids), frame, FILL_WINDOW, sender.username)
    finally:
        await ws.close()


# --- catching up ----------------------------------------------------------------------------------


@dataclass
class Cursors:
    """What a device persists between sessions: its inbox cursor and one cursor per
    read-fan-out group (docs/protocol.md §12.1, §12.3)."""

    inbox: int = 0
    groups: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Cursors:
        return Cursors(self.inbox, dict(self.groups))


@dataclass
class CatchUp:
    """One catch-up: what it cost and whether every message came exactly once."""

    seconds: float = 0.0
    sync_pages: int = 0
    history_pages: int = 0
    received: int = 0  # fill messages seen, duplicates included
    unique: int = 0
    dups: int = 0
    gaps: int = 0  # an inbox or group seq that did not follow the previous one
    entries: int = 0  # every inbox event and group entry read, system entries included

    @property
    def requests(self) -> int:
        return self.sync_pages + self.history_pages

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "sync_pages": self.sync_pages,
            "history_pages": self.history_pages,
            "received": self.received,
            "unique": self.unique,
            "dups": self.dups,
            "gaps": self.gaps,
            "entries": self.entries,
        }


class _Device:
    """One connection of the returning device, asking one thing at a time."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, seen: bytearray, stats: CatchUp) -> None:
        self.ws = ws
        self.seen = seen
        self.stats = stats
        self.rid = 1  # rid 1 was the auth frame

    async def ask(self, frame_for: Callable[[int], str]) -> msgspec.Raw:
        self.rid += 1
        await self.ws.send_str(frame_for(self.rid))
        while True:  # pushes and notices may come before the reply
            msg = await self.ws.receive()
            if msg.type is not _TEXT:
                raise RuntimeError(f"connection ended while catching up ({msg.type.name})")
            reply = decode_reply(msg.data)
            if reply.rid == self.rid:
                break
        if reply.t != "ok":
            raise RuntimeError(f"catch-up request refused: {reply.code} {reply.message}")
        return reply.data

    def take(self, entry: _Entry) -> None:
        self.stats.entries += 1
        if entry.kind != "text" or entry.body is None:
            return  # system entries (created …)
        i = int(entry.body.text.split(" ", 1)[0])
        self.stats.received += 1
        if not 0 <= i < len(self.seen):
            raise RuntimeError(f"catch-up read a message the fill never sent: {entry.body.text!r}")
        if self.seen[i]:
            self.stats.dups += 1
        else:
            self.seen[i] = 1
            self.stats.unique += 1


async def catch_up(url: str, device: Account, cursors: Cursors, page: int, messages: int) -> CatchUp:
    """Reconnect and catch up from ``cursors`` (advanced in place), as docs/protocol.md §12
    says; ``messages`` is how many fill messages may be seen (their texts start with 0 …
    messages - 1)."""
    stats = CatchUp()
    seen = bytearray(messages)
    async with client_session() as http:
        started = time.monotonic()
        ws, _ok = await connect(http, url, device.token)
        try:
            dev = _Device(ws, seen, stats)
            heads: list[_GroupHead] = []
            while True:
                since = cursors.inbox
                data = _decode_sync(await dev.ask(partial(_sync_frame, since=since, limit=page)))
                stats.sync_pages += 1
                for ev in data.events:
                    if ev.seq != cursors.inbox + 1:
                        stats.gaps += 1
                    cursors.inbox = ev.seq
                    if ev.type == "message":
                        dev.take(ev.data)
                cursors.inbox = data.next_since
                heads = data.groups
                if not data.has_more:
                    break
            # Every page lists the same groups; the SDK pulls them once the inbox is done.
            for head in heads:
                conv = head.conv_id
                cursors.groups[conv] = max(cursors.groups.get(conv, 0), head.from_seq)
                while head.last_seq > cursors.groups[conv]:
                    after = cursors.groups[conv]
                    hist = _decode_history(
                        await dev.ask(partial(_history_frame, conv_id=conv, after=after, limit=page))
                    )
                    stats.history_pages += 1
                    for entry in hist.messages:
                        if entry.seq != cursors.groups[conv] + 1:
                            stats.gaps += 1
                        cursors.groups[conv] = entry.seq
                        dev.take(entry)
                    if not hist.has_more or not hist.messages:
                        break
            stats.seconds = time.monotonic() - started
        finally:
            await ws.close()
    return stats


def wait_quiet(pid: int, *, below_pct: float = 10.0, quiet_s: float = 1.5, max_s: float = 15.0) -> float:
    """Wait until process ``pid`` has used less than ``below_pct`` % of a core for ``quiet_s``
    seconds in a row (at most ``max_s``); return the seconds waited.

    Work the node defers lands here otherwise: the search index of the messages just sent,
    and after an online phase the disconnects of every member, whose presence changes wait
    ``presence_debounce_s`` (1 s) first — hence a quiet stretch longer than that."""
    proc = psutil.Process(pid)
    started = time.monotonic()
    proc.cpu_percent(None)
    quiet_since = started
    while True:
        time.sleep(0.25)
        now = time.monotonic()
        if proc.cpu_percent(None) >= below_pct:
            quiet_since = now
        if now - quiet_since >= quiet_s or now - started >= max_s:
            return round(now - started, 2)
