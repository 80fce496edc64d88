"""A bare relay speaking yim's frames: the baseline that ``yim bench --baseline`` measures.

Same transport stack as a yim node — aiohttp + uvloop, msgspec, corked per-connection
writes flushed once per loop turn — and nothing else: no storage, no validation beyond
decoding, no idempotency, no sequence allocation beyond a counter per user. Whatever yim
achieves is read as a fraction of what this relay achieves on the same machine.

It speaks just enough of the protocol for the bench's scenarios:

- ``POST /api/v1/accounts`` and ``POST /api/v1/sessions`` hand out user ids and tokens
  (a token is ``"<user_id>:<device_id>"``; any token of that shape is accepted);
- ``/ws``: ``auth`` → ``ok``; ``send`` → ``ok`` to the sender and an ``event`` of type
  ``message`` to every connected device of the receiver; ``ack`` / ``ping`` → ``ok``;
  ``sync`` → an empty page (the relay stores nothing).

Run it as ``python -m yimbench.relay --port 9000``; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import struct
import time
from typing import Any

import msgspec
import uvloop
from aiohttp import WSMsgType, web

_OP_TEXT = 0x81


class _Req(msgspec.Struct, tag_field="op"):
    rid: int | str | None = None


class _Auth(_Req, tag="auth"):
    token: str = ""


class _Send(_Req, tag="send"):
    to: str | None = None
    conv_id: str | None = None
    kind: str = "text"
    body: msgspec.Raw = msgspec.Raw(b"null")
    client_msg_id: str = ""


class _Ack(_Req, tag="ack"):
    seq: int = 0


class _Ping(_Req, tag="ping"):
    pass


class _Sync(_Req, tag="sync"):
    since: int = 0
    limit: int = 200


_AnyReq = _Auth | _Send | _Ack | _Ping | _Sync


class _Ok(msgspec.Struct, tag_field="t", tag="ok", omit_defaults=True):
    rid: int | str | None
    data: Any = None


class _Err(msgspec.Struct, tag_field="t", tag="err"):
    rid: int | str | None
    code: str
    message: str


class _SendAck(msgspec.Struct):
    msg_id: str
    conv_id: str
    seq: int
    inbox_seq: int
    created_at: int
    duplicate: bool = False


class _MessageOut(msgspec.Struct):
    msg_id: str
    conv_id: str
    seq: int
    sender_id: str
    sender_device: str
    kind: str
    body: msgspec.Raw
    client_msg_id: str
    created_at: int


class _Event(msgspec.Struct, tag_field="t", tag="event"):
    seq: int
    type: str
    data: _MessageOut


class _Register(msgspec.Struct):
    username: str
    password: str = ""
    display_name: str = ""


class _Login(msgspec.Struct):
    username: str
    password: str = ""
    device_id: str = "bench"
    platform: str = "desktop"
    device_name: str = ""


_decoder = msgspec.json.Decoder(_AnyReq)
_encoder = msgspec.json.Encoder()


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((_OP_TEXT, length))
    if length < 65536:
        return struct.pack("!BBH", _OP_TEXT, 126, length)
    return struct.pack("!BBQ", _OP_TEXT, 127, length)


class _Conn:
    """Corked writer: frames go to a buffer flushed with one transport.write per loop turn."""

    __slots__ = ("_buf", "_loop", "_pending", "device_id", "transport", "user_id")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self._pending = False
        self.user_id = 0
        self.device_id = ""

    def send(self, payload: bytes) -> None:
        self._buf += _header(len(payload))
        self._buf += payload
        if not self._pending:
            self._pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = False
        if self._buf and not self.transport.is_closing():
            self.transport.write(bytes(self._buf))
        self._buf.clear()


class Relay:
    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.online: dict[int, dict[str, _Conn]] = {}
        self.inbox_seq: dict[int, int] = {}
        self._ids = itertools.count(1_000_000)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/api/v1/accounts", self.register)
        app.router.add_post("/api/v1/sessions", self.login)
        return app

    @staticmethod
    def _json(obj: Any, status: int = 200) -> web.Response:
        return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return self._json({"status": "ok", "system": "relay", "connections": sum(map(len, self.online.values()))})

    async def register(self, request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read(), type=_Register)
        if body.username in self.users:
            return self._json({"code": "username_taken", "message": "taken"}, status=409)
        uid = self.users[body.username] = next(self._ids)
        out = {"user_id": str(uid), "username": body.username, "display_name": body.username, "created_at": 0}
        return self._json(out, status=201)

    async def login(self, request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read(), type=_Login)
        uid = self.users.get(body.username)
        if uid is None:
            return self._json({"code": "unauthorized", "message": "wrong username or password"}, status=401)
        token = f"{uid}:{body.device_id}"
        out = {"token": token, "user_id": str(uid), "device_id": body.device_id, "platform": body.platform}
        return self._json({**out, "expires_at": 2**53 - 1}, status=201)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        conn = _Conn(transport)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT and msg.type != WSMsgType.BINARY:
                    break
                try:
                    req = _decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    conn.send(_encoder.encode(_Err(rid=None, code="bad_frame", message=str(exc))))
                    continue
                self.handle(conn, req)
        finally:
            conn._flush()
            devices = self.online.get(conn.user_id)
            if devices is not None and devices.get(conn.device_id) is conn:
                del devices[conn.device_id]
                if not devices:
                    del self.online[conn.user_id]
        return ws

    def handle(self, conn: _Conn, req: _AnyReq) -> None:
        if isinstance(req, _Send):
            if not conn.user_id or req.to is None:
                conn.send(_encoder.encode(_Err(rid=req.rid, code="bad_request", message="auth, then send `to`")))
                return
            to = int(req.to)
            now = int(time.time() * 1000)
            seqs = self.inbox_seq
            sender_seq = seqs[conn.user_id] = seqs.get(conn.user_id, 0) + 1
            seq = seqs[to] = seqs.get(to, 0) + 1
            msg_id = next(self._ids)
            conn.send(
                _encoder.encode(
                    _Ok(
                        rid=req.rid,
                        data=_SendAck(
                            msg_id=str(msg_id), conv_id=req.to, seq=seq, inbox_seq=sender_seq, created_at=now
                        ),
                    )
                )
            )
            devices = self.online.get(to)
            if devices:
                frame = _encoder.encode(
                    _Event(
                        seq=seq,
                        type="message",
                        data=_MessageOut(
                            msg_id=str(msg_id),
                            conv_id=req.to,
                            seq=seq,
                            sender_id=str(conn.user_id),
                            sender_device=conn.device_id,
                            kind=req.kind,
                            body=req.body,
                            client_msg_id=req.client_msg_id,
                            created_at=now,
                        ),
                    )
                )
                for device in devices.values():
                    device.send(frame)
        elif isinstance(req, _Ack | _Ping):
            conn.send(_encoder.encode(_Ok(rid=req.rid)))
        elif isinstance(req, _Auth):
            uid_text, _, device_id = req.token.partition(":")
            if not uid_text.isdigit():
                conn.send(_encoder.encode(_Err(rid=req.rid, code="unauthorized", message="invalid token")))
                return
            conn.user_id, conn.device_id = int(uid_text), device_id or "bench"
            self.online.setdefault(conn.user_id, {})[conn.device_id] = conn
            head = self.inbox_seq.get(conn.user_id, 0)
            data = {"user_id": uid_text, "device_id": conn.device_id, "platform": "desktop", "inbox_seq": head}
            conn.send(_encoder.encode(_Ok(rid=req.rid, data={**data, "heartbeat_s": 25.0, "idle_timeout_s": 75.0})))
        else:  # sync: nothing is stored
            head = self.inbox_seq.get(conn.user_id, 0)
            page = {"events": [], "next_since": req.since, "head": head, "has_more": False}
            conn.send(_encoder.encode(_Ok(rid=req.rid, data=page)))


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(Relay().app(), handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    await web.SockSite(runner, sock, backlog=4096).start()  # SockSite re-listens: without it, 128
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yimbench.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
