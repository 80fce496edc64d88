"""Helpers for tests that drive a real node through the Python SDK (yim.client)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from yim.client import Client, GroupItem, HttpApi, InboxItem
from yim.protocol.frames import ConversationPage, LoginOut, MessageOut, ReadMarker, UserOut

PASSWORD = "password123"


async def login_device(url: str | list[str], username: str, device_id: str, platform: str = "desktop") -> LoginOut:
    async with HttpApi(url) as api:
        return await api.login(username, PASSWORD, device_id, platform)  # type: ignore[arg-type]


class Chat:
    """Users, devices and their event streams on one node; everything is closed on exit,
    also when a test fails."""

    def __init__(self, url: str | list[str]) -> None:
        self.url = url
        self.clients: list[Client] = []
        self.inboxes: list[Inbox] = []

    async def __aenter__(self) -> Chat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for inbox in self.inboxes:
            await inbox.stop()
        for client in self.clients:
            await client.close()

    async def user(self, username: str) -> UserOut:
        async with HttpApi(self.url) as api:
            return await api.register(username, PASSWORD)

    async def client(self, username: str, device_id: str, **options: Any) -> Client:
        session = await login_device(self.url, username, device_id)
        return await self.connect(session.token, **options)

    async def connect(self, token: str, **options: Any) -> Client:
        client = self.track(Client(self.url, token, **{**FAST_RECONNECT, **options}))
        await client.start()
        return client

    def track(self, client: Client) -> Client:
        self.clients.append(client)
        return client

    def inbox(self, client: Client) -> Inbox:
        inbox = Inbox(client)
        self.inboxes.append(inbox)
        return inbox


FAST_RECONNECT: dict[str, Any] = {"backoff_initial_s": 0.02, "backoff_max_s": 0.5}


async def reconnected(client: Client, connects: int, timeout: float = 10.0) -> None:
    """Wait until ``client`` has made more than ``connects`` connections and is online."""

    async def check() -> bool:
        return client.connects > connects and client.connected

    await poll(check, timeout)


class Inbox:
    """Everything one client's event stream delivered, read by a background task."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.items: list[InboxItem] = []
        #: entries of read-fan-out groups (GroupItem), in delivery order
        self.group_items: list[GroupItem] = []
        #: every timeline entry (inbox message or group entry), in delivery order
        self.entries: list[MessageOut] = []
        self.changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        async for item in self.client.events():
            if isinstance(item, InboxItem):
                self.items.append(item)
                if isinstance(item.data, MessageOut):
                    self.entries.append(item.data)
                self.changed.set()
            elif isinstance(item, GroupItem):
                self.group_items.append(item)
                self.entries.append(item.data)
                self.changed.set()

    def messages(self, conv_id: str | None = None) -> list[MessageOut]:
        return [
            i.data
            for i in self.items
            if isinstance(i.data, MessageOut) and (conv_id is None or i.data.conv_id == conv_id)
        ]

    def timeline(self, conv_id: str) -> list[MessageOut]:
        """The entries of one conversation this stream delivered, by either fan-out, in order."""
        return [m for m in self.entries if m.conv_id == conv_id]

    def reads(self) -> list[ReadMarker]:
        return [i.data for i in self.items if isinstance(i.data, ReadMarker)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait (bounded) until ``predicate()`` holds; re-checked whenever an item arrives."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def wait_messages(self, n: int, conv_id: str | None = None, timeout: float = 20.0) -> list[MessageOut]:
        await self.wait_for(lambda: len(self.messages(conv_id)) >= n, timeout)
        return self.messages(conv_id)

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Bounded polling for server-side state that has no event to await."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(interval)


async def history_of(client: Client, conv_id: str) -> list[MessageOut]:
    return [m async for m in client.iter_history(conv_id)]


async def raw_ws(http: aiohttp.ClientSession, token: str | None = None, **kw: Any) -> aiohttp.ClientWebSocketResponse:
    """A bare WebSocket on ``/ws``; authenticated first when a token is given."""
    ws = await http.ws_connect("/ws", **kw)
    if token is not None:
        await ws.send_json({"op": "auth", "rid": "auth", "token": token})
        reply = await ws.receive_json()
        assert reply["t"] == "ok", reply
    return ws


async def raw_close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:
    """Read until the server closes the socket; return the close code."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data  # ws.close_code may read 1006 if the server dropped the socket first
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return ws.close_code


def timeline_key(item: InboxItem) -> tuple[Any, ...]:
    data = item.data
    if isinstance(data, MessageOut):
        return (item.seq, "message", data.msg_id, data.conv_id, data.seq, data.sender_id, data.body)
    if isinstance(data, ReadMarker):
        return (item.seq, "read", data.conv_id, data.read_seq)
    return (item.seq, item.type, data)


def derived_unread(items: list[InboxItem], user_id: str) -> dict[str, int]:
    """Unread counts a device computes from its own event stream alone: the conversation's
    last seq minus the read marker (read events, and sending reads up to one's message)."""
    last: dict[str, int] = {}
    read: dict[str, int] = {}
    for item in items:
        data = item.data
        if isinstance(data, MessageOut):
            last[data.conv_id] = max(last.get(data.conv_id, 0), data.seq)
            if data.sender_id == user_id:
                read[data.conv_id] = max(read.get(data.conv_id, 0), data.seq)
        elif isinstance(data, ReadMarker):
            read[data.conv_id] = max(read.get(data.conv_id, 0), data.read_seq)
    return {conv: last[conv] - read.get(conv, 0) for conv in last}


def list_view(page: ConversationPage) -> tuple[Any, ...]:
    return (
        page.total_unread,
        sorted((c.conv_id, c.last_seq, c.read_seq, c.unread) for c in page.conversations),
    )
