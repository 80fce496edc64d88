"""A revocation racing a connect never lets the revoked session in.

The connect path reads the session (cached once read) and the user's inbox head before it
registers the connection. Two interleavings used to let a revoked token connect: a logout
landing while the connect waited for its inbox head (the hub had nothing to close yet),
and a session row read just before its logout being cached after the logout had evicted
it. Each test holds one real store read open at the exact moment, lets the logout
complete, then releases the read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from yim.node import NodeServer

from .conftest import MakeServer
from .rawclient import make_users


async def _connect(url: str, token: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse, Any]:
    http = aiohttp.ClientSession(url)
    ws = await http.ws_connect("/ws")
    await ws.send_json({"op": "auth", "rid": 1, "token": token})
    return http, ws, await ws.receive_json(timeout=10)


def _held(read: Callable[..., Awaitable[Any]], *, after: bool) -> tuple[Callable[..., Awaitable[Any]], Any, Any]:
    """``read`` wrapped so that its first call waits for a gate — before reading, or after
    reading and before returning — and says when it got there."""
    gate, reached, first = asyncio.Event(), asyncio.Event(), [True]

    async def held(*args: Any) -> Any:
        if first[0] and not after:
            first[0] = False
            reached.set()
            await gate.wait()
        result = await read(*args)
        if first[0] and after:
            first[0] = False
            reached.set()
            await gate.wait()
        return result

    return held, gate, reached


async def _logout(http: aiohttp.ClientSession, token: str) -> None:
    r = await http.delete("/api/v1/sessions/current", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 204


async def test_a_logout_while_the_connect_reads_its_head_is_refused(server: NodeServer) -> None:
    store = server.node.store
    async with aiohttp.ClientSession(server.url) as http:
        [carol] = await make_users(http, ["carol"])
        assert server.node.accounts._sessions  # the login cached the session: the warm path
        held, gate, reached = _held(store.inbox_head, after=False)
        store.inbox_head = held  # type: ignore[method-assign]
        try:
            connecting = asyncio.ensure_future(_connect(server.url, carol["token"]))
            await asyncio.wait_for(reached.wait(), 10)
            await _logout(http, carol["token"])
            gate.set()
            ws_http, ws, reply = await connecting
        finally:
            del store.inbox_head
        assert reply["t"] == "err" and reply["code"] == "unauthorized", reply
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
        await ws_http.close()


async def test_a_session_row_read_before_its_logout_is_not_cached_after_it(make_server: MakeServer) -> None:
    server = await make_server()
    store = server.node.store
    async with aiohttp.ClientSession(server.url) as http:
        [alice] = await make_users(http, ["alice"])
        server.node.accounts._sessions.clear()  # as on a node that just started
        held, gate, reached = _held(store.get_session, after=True)
        store.get_session = held  # type: ignore[method-assign]
        try:
            connecting = asyncio.ensure_future(_connect(server.url, alice["token"]))
            await asyncio.wait_for(reached.wait(), 10)  # the row, still live, is read
            await _logout(http, alice["token"])
            gate.set()
            ws_http, _ws, reply = await connecting
            await ws_http.close()
        finally:
            del store.get_session
        assert reply["t"] == "err" and reply["code"] == "unauthorized", reply
        # and the stale live row was not cached: the next connect is refused too
        ws_http, _ws, again = await _connect(server.url, alice["token"])
        await ws_http.close()
        assert again["t"] == "err" and again["code"] == "unauthorized", again
