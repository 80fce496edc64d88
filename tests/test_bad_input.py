"""Bad frames get their documented error and leave the connection usable; only a frame
above the hard limit closes it (1009)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec

from yim.node import NodeServer

from .sdk_helpers import Chat, login_device, raw_close_code, raw_ws


async def reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next reply frame (pushed events and notices are skipped)."""
    while True:
        frame = await ws.receive_json(timeout=5)
        if frame["t"] in ("ok", "err"):
            return frame


async def still_usable(ws: aiohttp.ClientWebSocketResponse, rid: Any = "alive") -> None:
    await ws.send_json({"op": "ping", "rid": rid})
    frame = await reply(ws)
    assert frame["t"] == "ok" and frame["rid"] == rid, frame


async def test_bad_frames_get_errors_and_the_connection_stays_usable(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        await chat.user("alice")
        login = await login_device(server.url, "alice", "phone")
        ws = await raw_ws(http)

        # before auth: anything but auth (or ping) is refused, the socket stays open
        await ws.send_json({"op": "sync", "rid": 1})
        frame = await reply(ws)
        assert (frame["t"], frame["rid"], frame["code"]) == ("err", 1, "auth_required")
        await still_usable(ws)
        await ws.send_json({"op": "auth", "rid": 2, "token": login.token})
        assert (await reply(ws))["t"] == "ok"

        cases: list[tuple[str | bytes, Any, str]] = [
            ("{not json", None, "bad_frame"),
            ("[1, 2, 3]", None, "bad_request"),
            ('"just a string"', None, "bad_request"),
            ('{"rid": 3}', 3, "bad_request"),  # no op
            ('{"op": "teleport", "rid": 4}', 4, "unknown_op"),
            ('{"op": 42, "rid": 5}', 5, "bad_request"),  # not a string: malformed, not unknown
            ('{"op": "sync", "rid": 6, "since": "zero"}', 6, "bad_request"),
            ('{"op": "sync", "rid": 7, "since": -1}', 7, "bad_request"),
            ('{"op": "sync", "rid": 8, "limit": 100000}', 8, "bad_request"),
            ('{"op": "history", "rid": 9}', 9, "bad_request"),  # conv_id missing
            ('{"op": "history", "rid": 10, "conv_id": "12ab"}', 10, "bad_request"),
            ('{"op": "ping", "rid": 11, "extra": true}', 11, "bad_request"),
            ('{"op": "ping", "rid": {"nested": 1}}', None, "bad_request"),
            ('{"op": "auth", "rid": 12, "token": "x"}', 12, "already_authenticated"),
        ]
        for raw, rid, code in cases:
            await ws.send_str(raw)
            frame = await reply(ws)
            assert (frame["t"], frame["rid"], frame["code"]) == ("err", rid, code), (raw, frame)
            assert frame["message"]
        await still_usable(ws)

        # binary frames are MessagePack, also on a JSON connection
        await ws.send_bytes(b"\xc1\xc1")
        assert (await reply(ws))["code"] == "bad_frame"
        await ws.send_bytes(msgspec.msgpack.encode({"op": "ping", "rid": 13}))
        frame = await reply(ws)  # replies keep the connection's format
        assert frame["t"] == "ok" and frame["rid"] == 13

        # above max_frame_bytes: frame_too_large (rid echoed), connection lives on
        limit = server.settings.max_frame_bytes
        big = msgspec.json.encode({"op": "ping", "rid": 14, "pad": "x" * limit}).decode()
        await ws.send_str(big)
        frame = await reply(ws)
        assert (frame["code"], frame["rid"]) == ("frame_too_large", 14)
        await still_usable(ws)

        # message bodies and targets are validated per request
        peer = await chat.user("bob")
        text = {"kind": "text", "body": {"text": "hi"}}
        bad_sends: list[tuple[dict[str, Any], str]] = [
            ({"to": peer.user_id, "kind": "text", "body": {"text": "   "}}, "invalid_body"),
            ({"to": peer.user_id, "kind": "text", "body": {"txt": "hi"}}, "invalid_body"),
            ({"to": peer.user_id, "kind": "text", "body": {"text": "bell\x07"}}, "invalid_body"),
            ({"to": peer.user_id, "kind": "text", "body": {"text": "x" * 9000}}, "body_too_large"),
            ({"to": peer.user_id, "kind": "hologram", "body": {"text": "hi"}}, "invalid_kind"),
            ({"to": login.user_id, **text}, "bad_request"),  # to oneself
            ({"to": "123", **text}, "not_found"),  # no such user
            ({"to": peer.user_id, "conv_id": "1", **text}, "bad_request"),  # both targets
            (text, "bad_request"),  # no target
        ]
        for n, (fields, code) in enumerate(bad_sends):
            await ws.send_json({"op": "send", "rid": 100 + n, "client_msg_id": f"bad{n}", **fields})
            frame = await reply(ws)
            assert (frame["rid"], frame.get("code")) == (100 + n, code), (fields, frame)
        await still_usable(ws)

        # above the hard limit the server closes with 1009
        hard = server.settings.hard_frame_bytes
        await ws.send_str('{"op": "ping", "rid": 15, "pad": "' + "x" * hard + '"}')
        assert await raw_close_code(ws) == 1009
        await ws.close()


async def test_another_users_conversation_is_not_member(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        bob = await chat.user("bob")
        await chat.user("alice")
        await chat.user("mallory")
        alice = await chat.client("alice", "phone")
        ack = await alice.send_text("private", to=bob.user_id)
        intruder = await login_device(server.url, "mallory", "laptop")
        ws = await raw_ws(http, intruder.token)
        conv = ack.conv_id
        requests: list[dict[str, Any]] = [
            {"op": "history", "conv_id": conv},
            {"op": "read", "conv_id": conv, "seq": 1},
            {"op": "send", "conv_id": conv, "kind": "text", "body": {"text": "hi"}, "client_msg_id": "x1"},
        ]
        for n, req in enumerate(requests):
            await ws.send_json({"rid": n, **req})
            frame = await reply(ws)
            assert (frame["rid"], frame.get("code")) == (n, "not_member"), (req, frame)
        # a conversation that does not exist reads the same
        await ws.send_json({"op": "history", "rid": "nx", "conv_id": "99999"})
        assert (await reply(ws))["code"] == "not_member"
        await still_usable(ws)
        # ... and over HTTP
        headers = {"Authorization": f"Bearer {intruder.token}"}
        async with http.get(f"/api/v1/conversations/{conv}/messages", headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "not_member"
        async with http.post(f"/api/v1/conversations/{conv}/read", json={"seq": 1}, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "not_member"
        await ws.close()
        # nothing leaked into the conversation
        history = await alice.history(conv)
        assert [m.body["text"] for m in history.messages] == ["private"]


async def test_bad_msgpack_frames_and_bad_tokens(server: NodeServer) -> None:
    async with asyncio.timeout(30), Chat(server.url) as chat, aiohttp.ClientSession(server.url) as http:
        await chat.user("alice")
        login = await login_device(server.url, "alice", "phone")
        ws = await http.ws_connect("/ws", params={"format": "msgpack"})

        async def mp_reply() -> dict[str, Any]:
            return msgspec.msgpack.decode((await ws.receive(timeout=5)).data)

        await ws.send_bytes(msgspec.msgpack.encode({"op": "auth", "rid": 1, "token": login.token}))
        assert (await mp_reply())["t"] == "ok"
        await ws.send_bytes(b"\xc1")  # a byte MessagePack never uses
        assert (await mp_reply())["code"] == "bad_frame"
        await ws.send_bytes(msgspec.msgpack.encode({"op": "sync", "rid": 2, "since": b"\x00"}))
        frame = await mp_reply()
        assert (frame["rid"], frame["code"]) == (2, "bad_request")
        await ws.send_bytes(msgspec.msgpack.encode({"op": "ping", "rid": 3}))
        assert (await mp_reply())["t"] == "ok"
        await ws.close()

        # an unknown wire format is refused at the handshake
        async with http.get("/ws", params={"format": "xml"}) as resp:
            assert resp.status == 400

        # a bad token: unauthorized, then the server closes with 4001
        for token in ("not-a-jwt", login.token[:-4] + "AAAA"):
            ws = await http.ws_connect("/ws")
            await ws.send_json({"op": "auth", "rid": "a", "token": token})
            frame = await reply(ws)
            assert (frame["rid"], frame["code"]) == ("a", "unauthorized")
            assert await raw_close_code(ws) == 4001
            await ws.close()


async def test_bad_http_bodies(server: NodeServer) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession(server.url) as http:
        cases: list[tuple[str, str, bytes, int, str]] = [
            ("POST", "/api/v1/accounts", b"{oops", 400, "bad_frame"),
            ("POST", "/api/v1/accounts", b'{"username": 7, "password": "password123"}', 400, "bad_request"),
            ("POST", "/api/v1/accounts", b'{"username": "eve", "password": "password123", "x": 1}', 400, "bad_request"),
            ("POST", "/api/v1/sessions", b'{"username": "eve"}', 400, "bad_request"),
            ("GET", "/api/v1/me", b"", 401, "unauthorized"),
            ("GET", "/api/v1/nowhere", b"", 404, "not_found"),
        ]
        for method, path, body, status, code in cases:
            async with http.request(method, path, data=body, headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == status, (path, body, await resp.text())
                assert (await resp.json())["code"] == code
        async with http.get("/api/v1/me", headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"
