"""A lean raw-protocol client for tests that need many connections (no SDK conveniences):
it records every pushed frame so tests can check exactly what each device received."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Device:
    def __init__(self, http: aiohttp.ClientSession, login: dict[str, Any]) -> None:
        self.http = http
        self.login = login
        self.user_id: str = login["user_id"]
        self.token: str = login["token"]
        self.events: list[dict[str, Any]] = []  # inbox events, in arrival order
        self.notices: list[dict[str, Any]] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> dict[str, Any]:
        self.closed.clear()
        self.ws = await self.http.ws_connect("/ws")
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return await self.request("auth", token=self.token)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = msg.json()
            kind = frame["t"]
            if kind in ("ok", "err"):
                fut = self._waiting.pop(frame["rid"], None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
            elif kind == "event":
                self.events.append(frame)
            else:
                self.notices.append(frame)
        self.closed.set()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self._waiting.clear()

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.ws is not None
        rid = next(self._rids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self.ws.send_json({"op": op, "rid": rid, **fields})
        except BaseException:
            self._waiting.pop(rid, None)  # the reader would fail it later, unawaited
            raise
        frame = await fut
        if frame["t"] == "err":
            raise ProtocolError(frame["code"], frame["message"])
        return frame.get("data")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader

    async def sync_all(self, since: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every inbox event after ``since`` and the read-fan-out group heads."""
        events: list[dict[str, Any]] = []
        while True:
            page = await self.request("sync", since=since, limit=500)
            events += page["events"]
            since = page["next_since"]
            if not page["has_more"]:
                return events, page["groups"]

    async def pull(self, conv_id: str, after: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = await self.request("history", conv_id=conv_id, after=after, limit=500)
            out += page["messages"]
            if not page["has_more"]:
                return out
            after = out[-1]["seq"]


async def make_users(
    http: aiohttp.ClientSession, names: list[str], *, device_id: str = "d1", platform: str = "desktop"
) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(32)

    async def one(name: str) -> dict[str, Any]:
        async with sem:
            r = await http.post("/api/v1/accounts", json={"username": name, "password": "password123"})
            assert r.status == 201, await r.text()
            r = await http.post(
                "/api/v1/sessions",
                json={"username": name, "password": "password123", "device_id": device_id, "platform": platform},
            )
            assert r.status == 201, await r.text()
            return await r.json()

    return list(await asyncio.gather(*(one(n) for n in names)))


async def login(http: aiohttp.ClientSession, name: str, device_id: str, platform: str = "desktop") -> dict[str, Any]:
    r = await http.post(
        "/api/v1/sessions",
        json={"username": name, "password": "password123", "device_id": device_id, "platform": platform},
    )
    assert r.status == 201, await r.text()
    return await r.json()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until a condition on what devices received holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def keepalive(*devices: Device, every: float = 0.2) -> AsyncIterator[None]:
    """Ping like a real client, so a short idle timeout closes only the silent devices."""

    async def loop() -> None:
        while True:
            for d in devices:
                if d.ws is not None and not d.ws.closed:
                    with contextlib.suppress(Exception):
                        await d.request("ping")
            await asyncio.sleep(every)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
