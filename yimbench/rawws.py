"""A minimal WebSocket client on an asyncio Protocol: the load generator's client.

RFC 6455 §4.1 (the client's opening handshake), §5.2 (base framing), §5.3 (client frames
are masked), §5.5 (control frames). Only what a load generator needs: one HTTP/1.1
upgrade, text frames out, unfragmented frames in, ping → pong, and the closing handshake.

Why not aiohttp's client: ``ClientSession.ws_connect`` costs the load generator about as
much CPU per connect as the whole server spends on it (request and response objects, a
connector, a reader task per socket), so ``idle`` measured two saturated processes rather
than the server. Here a connect is one ``create_connection``, one write of a prepared
request, and a few slices of the reply.

Two ways to read: ``next_text`` awaits frames one by one (the handshake and auth), and
``deliver_to`` hands every later text frame to a plain callback straight from
``data_received`` — no future and no task per frame, which is what the message scenarios
need to keep the load generator off the critical path.

Writes are corked as the server's are (yim/gateway/connection.py): frames queued in one
event-loop turn leave in one ``transport.write``, so a receiver's ack and the next send
that its events released cost one system call, not one each.

Memory: a connection holds its transport, this object, its unread buffer and the frames
written this turn. Text frames are kept (at most ``_MAX_QUEUED``) until ``stop_reading``
or ``deliver_to``; after ``stop_reading`` they are dropped, so a held connection's buffer
stays empty however much the server pushes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

#: RFC 6455 §1.3: the GUID the server appends to the key before hashing it
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: a reply head larger than this is not a WebSocket upgrade
_MAX_HEAD = 16 * 1024
#: unread text frames kept while a reader waits (the auth reply comes after at most a few)
_MAX_QUEUED = 64


class HandshakeError(ConnectionError):
    pass


def accept_of(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame with a random masking key (§5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = random.getrandbits(32).to_bytes(4, "big")
    # XOR the whole payload with the repeated key as one big integer: no per-byte loop
    repeated = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + key + body


class RawWebSocket(asyncio.Protocol):
    """One client connection. Use :func:`open_websocket` to make one."""

    def __init__(self, key: bytes) -> None:
        self.transport: asyncio.Transport | None = None
        self._accept = accept_of(key)
        self._buf = bytearray()
        self._upgraded = False
        self._loop = loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._texts: deque[bytes] = deque()
        self._text_waiter: asyncio.Future[None] | None = None
        self._reading = True
        self._on_text: Callable[[bytes], None] | None = None
        self._out = bytearray()
        self._flush_pending = False
        self._close_sent = False
        self.close_code: int | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            if not self._upgraded and not self._read_head():
                return
            self._read_frames()
        except (HandshakeError, ConnectionError) as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- reading --------------------------------------------------------------------------

    def _read_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                raise HandshakeError("upgrade reply head too large")
            return False
        head = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        if not head[0].startswith(b"HTTP/1.1 101"):
            raise HandshakeError(f"upgrade refused: {head[0].decode('latin-1')}")
        fields = dict(line.split(b":", 1) for line in head[1:] if b":" in line)
        accept = next((v.strip() for k, v in fields.items() if k.strip().lower() == b"sec-websocket-accept"), None)
        if accept != self._accept:
            raise HandshakeError("wrong Sec-WebSocket-Accept")
        self._upgraded = True
        if not self._handshake.done():
            self._handshake.set_result(None)
        return True

    def _read_frames(self) -> None:
        buf = self._buf
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            if second & 0x80:
                raise ConnectionError("the server masked a frame (RFC 6455 §5.1)")
            if not first & 0x80 or first & 0x70:
                raise ConnectionError("fragmented frame or reserved bits set: not used by this server")
            n, offset = second & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                (n,), offset = struct.unpack_from("!H", buf, 2), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                (n,), offset = struct.unpack_from("!Q", buf, 2), 10
            if len(buf) < offset + n:
                return
            payload = bytes(buf[offset : offset + n])
            del buf[: offset + n]
            opcode = first & 0x0F
            if opcode == _OP_TEXT or opcode == _OP_BINARY:
                if self._on_text is not None:
                    self._on_text(payload)
                elif self._reading and len(self._texts) < _MAX_QUEUED:
                    self._texts.append(payload)
                    if self._text_waiter is not None and not self._text_waiter.done():
                        self._text_waiter.set_result(None)
            elif opcode == _OP_PING:
                self._write(masked_frame(_OP_PONG, payload))
            elif opcode == _OP_CLOSE:
                self.close_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                if not self._close_sent:  # echo it (§5.5.1), then the server closes TCP
                    self._close_sent = True
                    self._write(masked_frame(_OP_CLOSE, payload[:2]))
            elif opcode != _OP_PONG:
                raise ConnectionError(f"unknown opcode {opcode}")

    def _fail(self, exc: BaseException) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        if self._text_waiter is not None and not self._text_waiter.done():
            self._text_waiter.set_exception(exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def stop_reading(self) -> None:
        """Drop every text frame from now on (a held connection reads nothing)."""
        self._reading = False
        self._on_text = None
        self._texts.clear()

    def deliver_to(self, on_text: Callable[[bytes], None]) -> None:
        """Hand every text frame to ``on_text`` from now on, those already queued first.
        It runs inside ``data_received``: it must not block, and may send."""
        self._reading = True
        while self._texts:
            on_text(self._texts.popleft())
        self._on_text = on_text

    async def next_text(self) -> bytes:
        """The next unread text (or binary) frame."""
        while not self._texts:
            if self.transport is None or self.transport.is_closing():
                raise ConnectionError("connection closed")
            self._text_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._text_waiter
            finally:
                self._text_waiter = None
        return self._texts.popleft()

    # --- writing --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out += data
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self._out))
        self._out.clear()

    def send_text(self, text: str) -> None:
        self._write(masked_frame(_OP_TEXT, text.encode()))

    async def close(self, timeout: float = 5.0) -> None:
        """The closing handshake (code 1000), then the socket; aborted after ``timeout``."""
        if self.transport is None or self.closed.done():
            return
        if not self._close_sent:
            self._close_sent = True
            self._write(masked_frame(_OP_CLOSE, struct.pack("!H", 1000)))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.transport.abort()

    @property
    def is_closed(self) -> bool:
        return self.closed.done() or self.transport is None or self.transport.is_closing()


async def open_websocket(url: str, *, local_addr: str | None = None) -> RawWebSocket:
    """Connect to ``url`` (``ws://host:port/path?query``) and complete the upgrade."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"not a ws:// URL: {url}")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(random.getrandbits(128).to_bytes(16, "big"))
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    transport, ws = await loop.create_connection(
        lambda: RawWebSocket(key), parts.hostname, port, local_addr=(local_addr, 0) if local_addr else None
    )
    # uvloop may call connection_made only after create_connection returns
    ws.transport = transport
    transport.write(request)
    try:
        await ws._handshake
    except BaseException:
        transport.abort()
        raise
    return ws
