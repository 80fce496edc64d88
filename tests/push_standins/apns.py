"""An APNs stand-in: HTTP/2 only (ALPN h2) over TLS on 127.0.0.1, written on the h2 library.

It checks what APNs checks for token-based auth: the ES256 provider token (signature with the
team's key, `kid`, `iss`, an `iat` under an hour old), `apns-topic`, `apns-push-type`,
`apns-priority`, `apns-collapse-id`, and the JSON payload (an `aps` object, at most 4096 bytes).
Refusals carry APNs' own `reason` strings.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.push_standins.common import BUSY_RETRY_AFTER, DOWN_RETRY_AFTER, DRIP_EVERY, Modes

PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity"}

Answer = tuple[int, dict[str, str], bytes]
#: the body of a "drip" answer: sent one byte per DRIP_EVERY seconds until the client resets the stream
DRIP = b"{" + b" " * 600 + b"}"


def _reason(status: int, reason: str, headers: dict[str, str] | None = None) -> Answer:
    return status, headers or {}, json.dumps({"reason": reason}).encode()


class ApnsStandin:
    def __init__(
        self, *, team_id: str, key_id: str, public_key: ec.EllipticCurvePublicKey, topic: str, cert: Path, key: Path
    ) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self.public_key = public_key
        self.topic = topic
        self.m = Modes()
        self.tokens: set[str] = set()  # device tokens this environment knows
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["h2"])
        self.server: asyncio.Server | None = None
        self.protocols: set[_H2Server] = set()
        self.base_url = ""

    def register(self, token: str) -> str:
        self.tokens.add(token)
        return token

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _H2Server(self), "127.0.0.1", 0, ssl=self.ctx)
        port = self.server.sockets[0].getsockname()[1]
        self.base_url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.m.release.set()
        if self.server is not None:
            self.server.close()
            for p in list(self.protocols):
                p.abort()
            await self.server.wait_closed()

    def _check_token(self, authorization: str) -> Answer | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _reason(403, self.m.refuse("MissingProviderToken"))
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return _reason(403, self.m.refuse("InvalidProviderToken"))
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            return _reason(403, self.m.refuse("InvalidProviderToken"))
        if claims["iss"] != self.team_id:
            return _reason(403, self.m.refuse("InvalidProviderToken"))
        if not time.time() - 3600 < claims["iat"] <= time.time() + 60:
            return _reason(403, self.m.refuse("ExpiredProviderToken"))
        return None

    async def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        if headers.get(":method") != "POST":
            return _reason(405, self.m.refuse("MethodNotAllowed"))
        path = headers.get(":path", "")
        if not path.startswith("/3/device/"):
            return _reason(404, self.m.refuse("BadPath"))
        refused = self._check_token(headers.get("authorization", ""))
        if refused:
            return refused
        token = path.removeprefix("/3/device/")
        topic = headers.get("apns-topic")
        if not topic:
            return _reason(400, self.m.refuse("MissingTopic"))
        if topic != self.topic:
            return _reason(400, self.m.refuse("TopicDisallowed"))
        push_type = headers.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            return _reason(400, self.m.refuse("InvalidPushType"))
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return _reason(400, self.m.refuse("BadPriority"))
        if not headers.get("apns-expiration", "0").isdigit():
            return _reason(400, self.m.refuse("BadExpirationDate"))
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _reason(400, self.m.refuse("BadCollapseId"))
        if len(body) > 4096:
            return _reason(413, self.m.refuse("PayloadTooLarge"))
        try:
            payload = json.loads(body)
        except ValueError:
            return _reason(400, self.m.refuse("PayloadEmpty"))
        aps = payload.get("aps") if isinstance(payload, dict) else None
        if not isinstance(aps, dict):
            return _reason(400, self.m.refuse("PayloadEmpty"))
        if push_type == "alert" and "alert" not in aps:
            return _reason(400, self.m.refuse("InvalidPushType"))
        if token not in self.tokens:
            return _reason(400, self.m.refuse("BadDeviceToken"))
        mode = self.m.mode(token)
        if mode == "gone":
            return 410, {}, json.dumps({"reason": "Unregistered", "timestamp": int(time.time() * 1000)}).encode()
        if mode == "busy":
            return _reason(429, "TooManyRequests", {"retry-after": BUSY_RETRY_AFTER})
        if mode == "down":
            return _reason(503, "ServiceUnavailable", {"retry-after": DOWN_RETRY_AFTER})
        if mode == "error":
            return _reason(500, "InternalServerError")
        if mode == "drip":
            return 200, {"apns-id": str(uuid.uuid4()).upper()}, DRIP
        if mode == "slow":
            await self.m.stall()
        self.m.accepted.append({"token": token, "headers": headers, "payload": payload})
        return 200, {"apns-id": str(uuid.uuid4()).upper()}, b""


class _H2Server(asyncio.Protocol):
    """One client connection: h2 frames in, one task per finished request stream."""

    def __init__(self, standin: ApnsStandin) -> None:
        self.standin = standin
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self.standin.m.refuse("client did not negotiate h2")
            transport.close()
            return
        self.standin.protocols.add(self)
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.standin.protocols.discard(self)
        for t in self.tasks:
            t.cancel()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.standin.m.refuse("h2 protocol error")
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = (dict(ev.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id][1].extend(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                headers, body = self.streams.pop(ev.stream_id)
                task = asyncio.get_running_loop().create_task(self.respond(ev.stream_id, headers, bytes(body)))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.conn.data_to_send())

    async def respond(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        status, extra, content = await self.standin.handle(headers, body)
        if self.transport is None or self.transport.is_closing():
            return
        out = [(":status", str(status)), *extra.items()]
        if content:
            out.append(("content-type", "application/json"))
        try:
            self.conn.send_headers(stream_id, out, end_stream=not content)
            if content is DRIP:
                for i in range(len(content)):
                    self.conn.send_data(stream_id, content[i : i + 1], end_stream=i == len(content) - 1)
                    self.transport.write(self.conn.data_to_send())
                    await asyncio.sleep(DRIP_EVERY)
                    if self.transport.is_closing():
                        return
            elif content:
                self.conn.send_data(stream_id, content, end_stream=True)
        except h2.exceptions.ProtocolError:
            return  # the client reset this stream (its timeout) or left
        self.transport.write(self.conn.data_to_send())
