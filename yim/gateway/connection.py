"""One device's WebSocket connection, with corked writes (RFC 6455 §5.2 framing).

Outgoing frames are not sent one ``send`` call at a time: they are framed here and
appended to a per-connection buffer that is flushed with ONE ``transport.write`` per event
loop turn. Under load a connection gets several frames per turn (its ACKs and pushes),
and the kernel send per frame is most of the cost of a relay (docs/performance.md). The
buffer exists only from a turn's first frame to its flush, which hands it to the transport
as it is (no copy) and never touches it again: an idle connection holds none.

Back-pressure: nothing awaits a drain. If the bytes queued for a connection (our buffer +
the transport's) exceed ``max_send_buffer_bytes``, the reader is too slow: the connection
is cut off with close code 4008 and the device catches up by ``sync`` from its cursor. So
one connection costs at most that many bytes of send buffer, and a slow member never
delays anyone else.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from yim.protocol.close import CLOSE_SLOW
from yim.protocol.codec import Codec

if TYPE_CHECKING:
    from aiohttp import web

#: a closing handshake the peer does not complete in this long ends with an abort: a client
#: that stops reading would otherwise pin its socket and full send buffer forever
CLOSE_GRACE_S = 5.0

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary


def frame_header(first_byte: int, length: int) -> bytes:
    """Header of an unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return struct.pack("!BBH", first_byte, 126, length)
    return struct.pack("!BBQ", first_byte, 127, length)


class Connection:
    __slots__ = (
        "_buf",
        "_loop",
        "_max_buffer",
        "_opcode",
        "acked_seq",
        "closing",
        "codec",
        "connected_at",
        "device_id",
        "last_recv",
        "on_slow",
        "platform",
        "presence",
        "seen_ms",
        "seen_seq",
        "session_id",
        "transport",
        "user_id",
        "ws",
    )

    def __init__(
        self, ws: web.WebSocketResponse, transport: Any, codec: Codec, max_buffer: int, connected_at: float
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.codec = codec
        self._opcode = _OP_BINARY if codec.binary else _OP_TEXT
        self._loop = asyncio.get_running_loop()
        #: this turn's frames; None: nothing queued, no flush scheduled
        self._buf: bytearray | None = None
        self._max_buffer = max_buffer
        self.closing = False
        self.user_id = 0
        self.device_id = ""
        self.platform = ""
        self.presence = "online"  # or "away" (presence_set)
        self.session_id = ""
        self.acked_seq = 0
        #: when the node's last-seen flush last wrote this device, and its cursor then
        #: (yim/node.py; 0: never, so the first flush writes it)
        self.seen_ms = 0
        self.seen_seq = 0
        #: on the node's monotonic clock (yim/services/clock.py), which converts it to
        #: wall-clock time where it leaves this host
        self.connected_at = connected_at
        self.last_recv = 0.0  # time.monotonic() of the last frame, from auth on (the idle sweep's)
        self.on_slow: Any = None

    def send(self, payload: bytes) -> None:
        """Queue one complete frame; it leaves with everything else queued this turn."""
        if self.closing:
            return
        buf = self._buf
        if buf is None:
            buf = self._buf = bytearray(frame_header(self._opcode, len(payload)))
            self._loop.call_soon(self._flush)
        else:
            buf += frame_header(self._opcode, len(payload))
        buf += payload
        if len(buf) + self.transport.get_write_buffer_size() > self._max_buffer:
            self._cut_off()

    def _flush(self) -> None:
        buf, self._buf = self._buf, None
        if buf and not self.transport.is_closing():
            self.transport.write(buf)  # the transport may keep it: it is not ours any more

    def flush_now(self) -> None:
        if self._buf:
            self._flush()

    def _cut_off(self) -> None:
        self._buf = None
        if self.on_slow is not None:
            self.on_slow(self)
        self.close(CLOSE_SLOW, "slow consumer: catch up with sync")

    async def close_and_wait(self, code: int, reason: str) -> None:
        """Close from inside the connection's own handler."""
        if self.closing:
            return
        self.flush_now()
        self.closing = True
        abort = self._loop.call_later(CLOSE_GRACE_S, self._abort_if_open)
        try:
            await self.ws.close(code=code, message=reason.encode()[:120])
        finally:
            abort.cancel()

    def close(self, code: int, reason: str) -> None:
        """Close from outside the receive loop (kick, revoke, idle, shutdown)."""
        if self.closing:
            return
        self.flush_now()
        self.closing = True
        self._loop.create_task(self.ws.close(code=code, message=reason.encode()[:120]))
        self._loop.call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        transport = self.transport
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()  # also drops bytes the peer never read
