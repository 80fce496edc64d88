"""What an idle WebSocket connection keeps of aiohttp's HTTP side (yim/gateway/ws.py,
``release_http_reader``): after the upgrade, aiohttp's HTTP request parser and request
queue are dropped, and the connection works on as before.

The release touches private attributes of aiohttp's ``RequestHandler`` (aiohttp 3.14.5,
pinned in requirements.lock): the first test fails if an aiohttp upgrade changes them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import types
from collections import deque
from typing import Any

import aiohttp
import msgspec
from aiohttp.web_protocol import RequestHandler

from yim.gateway.ws import release_http_reader
from yim.node import NodeServer
from yimbench.rawws import masked_frame

from .rawclient import make_users


async def _auth(ws: aiohttp.ClientWebSocketResponse, token: str) -> None:
    await ws.send_json({"op": "auth", "rid": 1, "token": token})
    assert (await ws.receive_json(timeout=10))["t"] == "ok"


async def _reply(ws: aiohttp.ClientWebSocketResponse, rid: int) -> dict[str, Any]:
    while (frame := await ws.receive_json(timeout=10)).get("rid") != rid:
        pass
    return frame


async def test_an_upgraded_connection_keeps_no_http_parser_or_queue_and_works_on(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await make_users(http, ["relhttpa", "relhttpb"])
        async with http.ws_connect("/ws") as a, http.ws_connect("/ws") as b:
            await _auth(a, alice["token"])
            await _auth(b, bob["token"])
            conn = server.node.hub.devices_of(int(alice["user_id"]))["d1"]
            protocol = conn.transport.get_protocol()
            assert type(protocol) is RequestHandler
            assert protocol._parser is None
            assert protocol._messages == ()
            assert protocol._upgraded is True and protocol._payload_parser is not None
            # frames in both directions and a ping
            text = "released " * 100
            body = {"text": text}
            await a.send_json(
                {"op": "send", "rid": 2, "to": bob["user_id"], "kind": "text", "body": body, "client_msg_id": "c1"}
            )
            assert (await _reply(a, 2))["t"] == "ok"
            while (push := await b.receive_json(timeout=10)).get("type") != "message":
                pass
            assert push["t"] == "event" and push["data"]["body"]["text"] == text
            await a.send_json({"op": "ping", "rid": 3})
            assert (await _reply(a, 3))["t"] == "ok"
        # both closed by the client: the close handshake completes and the server lets go
        assert a.close_code == 1000 and b.close_code == 1000
        for _ in range(250):
            if not server.node.hub.devices_of(int(alice["user_id"])):
                break
            await asyncio.sleep(0.02)
        assert not server.node.hub.devices_of(int(alice["user_id"]))


async def test_a_frame_sent_with_the_upgrade_request_is_read_after_the_release(server: NodeServer) -> None:
    """The bytes after the upgrade request in the same read wait in aiohttp's message tail
    and are handed to the WebSocket reader by ``ws.prepare``, before the release."""
    async with aiohttp.ClientSession(server.url) as http:
        (alice,) = await make_users(http, ["relhttptail"])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        upgrade = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        auth = msgspec.json.encode({"op": "auth", "rid": 1, "token": alice["token"]})
        ping = msgspec.json.encode({"op": "ping", "rid": 2})
        writer.write(upgrade + masked_frame(0x1, auth) + masked_frame(0x1, ping))
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            rids = []
            while len(rids) < 2:
                first, length = await reader.readexactly(2)
                assert first == 0x81 and length <= 126  # unmasked text frames under 64 KB
                if length == 126:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                frame = msgspec.json.decode(await reader.readexactly(length))
                assert frame["t"] == "ok"
                rids.append(frame["rid"])
        assert rids == [1, 2]
        conn = server.node.hub.devices_of(int(alice["user_id"]))["d1"]
        assert conn.transport.get_protocol()._parser is None
    finally:
        writer.close()


def test_a_handler_of_another_shape_is_left_alone() -> None:
    # an aiohttp without these attributes: nothing is touched, nothing raises
    assert release_http_reader(types.SimpleNamespace()) is False
    # a connection lost before the release: aiohttp's connection_lost dropped the parser
    lost = types.SimpleNamespace(_parser=None, _payload_parser=None, _upgraded=True, _messages=())
    assert release_http_reader(lost) is False
    # not upgraded, or a request waiting in the queue: kept
    waiting = types.SimpleNamespace(_parser=object(), _payload_parser=object(), _upgraded=True, _messages=deque([1]))
    assert release_http_reader(waiting) is False and waiting._messages == deque([1])
    plain = types.SimpleNamespace(_parser=object(), _payload_parser=object(), _upgraded=False, _messages=deque())
    assert release_http_reader(plain) is False and plain._parser is not None
