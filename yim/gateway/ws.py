"""The WebSocket endpoint ``/ws``: one connection per device (docs/protocol.md).

Per connection: the first frame must be ``auth`` within ``auth_timeout_s``; afterwards
every request gets exactly one reply with its ``rid``. Sends are pipelined — the frame
loop submits a message to the store and reads on without waiting for the commit; the
reply is sent from the store future's callback, so no task is created per message. At
most ``MAX_SENDS_IN_FLIGHT`` sends of one connection wait for their commit at a time
(then the loop stops reading that connection), which bounds what one client can queue.
Reads (sync, history, lists) are awaited in order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from yim.gateway.connection import Connection
from yim.gateway.keys import NODE_KEY, ServedNode
from yim.gateway.ops import OPS
from yim.protocol.close import CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_TOO_BIG
from yim.protocol.codec import CODECS, JSON, MSGPACK, Codec
from yim.protocol.errors import YimError
from yim.protocol.frames import Ack, Auth, AuthOk, Forward, Ping, Send
from yim.services.context import REQUEST_SOURCE
from yim.services.messages import forward_copies, send_ack, send_message
from yim.storage.records import SendResult, SessionRec

log = logging.getLogger("yim.gateway.ws")

MAX_SENDS_IN_FLIGHT = 64


def _reply_error(node: ServedNode, conn: Connection, rid: Any, exc: YimError) -> None:
    node.metrics.errors.labels(exc.code).inc()
    conn.send(conn.codec.err(rid, exc))


def _on_sent(node: ServedNode, conn: Connection, rid: Any, fut: asyncio.Future[SendResult]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is None:
        conn.send(conn.codec.ok(rid, send_ack(fut.result())))
    elif isinstance(exc, YimError):
        _reply_error(node, conn, rid, exc)
    else:
        log.error("send failed", exc_info=exc)
        _reply_error(node, conn, rid, YimError("internal", "internal error"))


class _Session:
    """The frame loop of one authenticated connection."""

    __slots__ = ("conn", "ip", "node", "pending", "remote", "session")

    def __init__(
        self, node: ServedNode, conn: Connection, session: SessionRec, ip: str | None = None, remote: str | None = None
    ) -> None:
        self.node = node
        self.conn = conn
        self.session = session
        # made on the first send: an empty deque is 760 bytes, 4 % of an idle connection
        self.pending: deque[asyncio.Future[SendResult]] | None = None
        self.ip = ip  # the key of per-IP limits (None: exempt)
        self.remote = remote  # the peer address, for the audit log

    async def handle(self, req: Any) -> None:
        node, conn, session = self.node, self.conn, self.session
        node.metrics.frames_in.labels(type(req).__struct_config__.tag).inc()
        match req:
            case Send():
                node.limits.check_send(session.user_id, self.ip)
                fut = send_message(node, session, req, conn, functools.partial(_on_sent, node, conn, req.rid))
                pending = self.pending
                if pending is None:
                    pending = self.pending = deque()
                pending.append(fut)
                while pending and pending[0].done():
                    pending.popleft()
                if len(pending) >= MAX_SENDS_IN_FLIGHT:
                    await asyncio.wait([pending[0]])
            case Ack():
                if req.seq > conn.acked_seq:
                    conn.acked_seq = req.seq
                conn.send(conn.codec.ok(req.rid))
            case Ping():
                conn.send(conn.codec.ok(req.rid, {"time": int(time.time() * 1000)}))
            case Auth():
                raise YimError("already_authenticated", "this connection is already authenticated")
            case Forward():
                # Each copy is a message: the send limits count them all.
                node.limits.check_request(session.user_id)
                node.limits.check_send(session.user_id, self.ip, forward_copies(req))
                conn.send(conn.codec.ok(req.rid, await OPS[Forward](node, session, req, conn)))
            case _:
                node.limits.check_request(session.user_id)
                if not REQUEST_SOURCE.get():
                    # The audit log's "from where", set in this connection's task when an op
                    # that may be audited first comes, not at connect: a context variable
                    # set is ~180 bytes of every idle connection.
                    REQUEST_SOURCE.set(f"ws {self.remote}")
                action = OPS[type(req)]
                conn.send(conn.codec.ok(req.rid, await action(node, session, req, conn)))


#: what an upgraded connection's HTTP message queue is replaced with: shared, and without
#: ``append``, so a request ever queued on it would fail loudly instead of being lost
_NO_MESSAGES: tuple[()] = ()
_release_failed_logged = False


def release_http_reader(protocol: Any) -> bool:
    """Drop aiohttp's HTTP request parser and request queue from an upgraded connection.

    aiohttp's per-connection ``RequestHandler`` keeps both for the connection's life,
    although once the WebSocket's reader is set (``ws.prepare``) every byte goes to that
    reader and neither is read again: its ``data_received``, ``pause_reading`` and
    ``resume_reading`` consult them only while not ``_upgraded``, ``start()`` only for the
    next request, which a connection that upgraded never serves (aiohttp turns keep-alive
    off for it), and ``finish_response`` only for an upgrade that was declined. The parser
    with the buffers it keeps of the last request it parsed is ~1.5 KB, and the queue, an
    empty deque, ~760 bytes (its first block of 64 slots is allocated with it): measured,
    2.3 KB of every idle connection, 16 % (docs/performance.md, "Idle memory at two
    workers, under 15 KB").

    These are private attributes of aiohttp 3.14.5 (pinned in requirements.lock); no
    public API releases them. The parser becomes None, as aiohttp's own
    ``connection_lost`` leaves it. Whatever does not look exactly as expected is left
    alone: the connection then only costs more (logged once). tests/test_ws_memory.py pins
    the release, so an aiohttp upgrade that changes these attributes fails the suite.
    Returns whether they were released.
    """
    global _release_failed_logged
    try:
        if protocol._parser is None or protocol._payload_parser is None:
            return False  # the peer has gone already: connection_lost dropped them
        if protocol._upgraded is True and type(protocol._messages) is deque and not protocol._messages:
            protocol._parser = None
            protocol._messages = _NO_MESSAGES
            return True
    except AttributeError:
        pass
    if not _release_failed_logged:
        _release_failed_logged = True
        log.warning("aiohttp's request handler is not as expected: upgraded connections keep its HTTP parser")
    return False


def _decode(node: ServedNode, conn: Connection, msg: Any) -> Any:
    """Frame -> request, or None after replying with an error. Raises on a fatal frame."""
    data = msg.data
    codec_in: Codec = JSON if msg.type == WSMsgType.TEXT else MSGPACK
    limit = node.settings.max_frame_bytes
    size = len(data)
    if isinstance(data, str) and size * 4 > limit:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        _reply_error(node, conn, codec_in.rid_of(data), YimError("frame_too_large", f"frame exceeds {limit} bytes"))
        return None
    try:
        return codec_in.decode_request(data)
    except YimError as exc:
        _reply_error(node, conn, codec_in.rid_of(data), exc)
        return None


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node: ServedNode = request.app[NODE_KEY]
    settings = node.settings
    codec = CODECS.get(request.query.get("format", "json"))
    if codec is None:
        raise web.HTTPBadRequest(text="format must be json or msgpack")
    if node.stopping:
        raise web.HTTPServiceUnavailable(text="shutting down")
    ws = web.WebSocketResponse(max_msg_size=settings.hard_frame_bytes, compress=False, autoping=True)
    await ws.prepare(request)
    release_http_reader(request.protocol)
    conn = Connection(ws, request.transport, codec, settings.max_send_buffer_bytes, node.clock.monotonic())
    conn.on_slow = node.hub.on_slow
    loop_session: _Session | None = None
    try:
        # request.remote: the peer address aiohttp already holds, not a getpeername() call
        loop_session = await _authenticate(node, conn, ws, request.remote)
        if loop_session is None:
            return ws
        # ws.receive(), not `async for`: __anext__ would be one more coroutine frame (~250
        # bytes) held by every idle connection for its lifetime
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                conn.last_recv = time.monotonic()
                req = _decode(node, conn, msg)
                if req is None:
                    continue
                try:
                    await loop_session.handle(req)
                except YimError as exc:
                    _reply_error(node, conn, req.rid, exc)
                except Exception:
                    log.exception("request %s failed", type(req).__name__)
                    _reply_error(node, conn, req.rid, YimError("internal", "internal error"))
            else:  # closing, closed or an error: ping and pong never come here (autoping)
                break
        if ws.close_code == CLOSE_TOO_BIG:
            log.info("connection closed: frame above the hard limit")
    finally:
        conn.flush_now()
        if loop_session is not None:
            node.hub.unregister(conn)
            node.bus.disconnected(conn)
            node.presence.changed(conn.user_id)
    return ws


async def _authenticate(
    node: ServedNode, conn: Connection, ws: web.WebSocketResponse, remote: str | None
) -> _Session | None:
    settings = node.settings
    # One timer that closes the socket, not ws.receive(timeout=...): that enters an
    # asyncio.timeout per frame, ~8 µs of a connect's event-loop time.
    expiry = asyncio.get_running_loop().call_later(
        settings.auth_timeout_s, conn.close, CLOSE_AUTH_TIMEOUT, "no auth frame in time"
    )
    try:
        while True:
            msg = await ws.receive()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None  # closed, by the peer or by the expiry
            req = _decode(node, conn, msg)
            if req is None:
                continue
            if isinstance(req, Ping):
                conn.send(conn.codec.ok(req.rid, {"time": int(time.time() * 1000)}))
                continue
            if isinstance(req, Auth):
                break
            _reply_error(node, conn, req.rid, YimError("auth_required", "send `auth` first"))
    finally:
        expiry.cancel()  # the deadline is for the auth frame, not for checking it
    accounts = node.accounts
    epoch = accounts.revocations
    try:
        # The head is read before registering: the reply then precedes every push, and an
        # event committed in between reaches the device through its sync.
        session, head = await accounts.authenticate_with_head(req.token)
        conn.user_id = session.user_id
        conn.device_id = session.device_id
        conn.platform = session.platform
        conn.session_id = session.id
        conn.last_recv = time.monotonic()
        # Cluster and workers: other nodes route to this device from now on. Raising, it
        # leaves no route behind; once it returned, this connect ends registered, or with
        # ``disconnected`` (which may hand the route back to an older connection of the
        # device still registered here: its failure must not cost that one its pushes).
        await node.bus.connected(conn)
        try:
            # A revocation that landed while this connect awaited the store or the bus did
            # not see it in the hub, and may be of this session: check again until none
            # did. The cache has dropped what was revoked, so this reads the row if it must.
            while accounts.revocations != epoch:
                epoch = accounts.revocations
                await accounts.authenticate(req.token)
        except BaseException:
            node.bus.disconnected(conn)
            raise
    except YimError as exc:
        _reply_error(node, conn, req.rid, exc)
        await conn.close_and_wait(CLOSE_AUTH_FAILED, exc.message)
        return None
    node.hub.register(conn)
    node.bus.registered(conn)
    # A sync page read ahead for this device's previous connection may end below events
    # that were pushed to no one since: it must not tell this connection it is caught up.
    node.read_ahead.forget(session.user_id, session.device_id)
    node.presence.changed(session.user_id)
    conn.send(
        conn.codec.ok(
            req.rid,
            AuthOk(
                user_id=str(session.user_id),
                device_id=session.device_id,
                platform=session.platform,
                inbox_seq=head,
                heartbeat_s=settings.heartbeat_s,
                idle_timeout_s=settings.idle_timeout_s,
                max_frame_bytes=settings.max_frame_bytes,
                server_time=int(time.time() * 1000),
                recall_limit_s=settings.recall_limit_s,
                typing_interval_s=settings.typing_interval_s,
                edit_window_s=settings.edit_window_s,
            ),
        )
    )
    return _Session(node, conn, session, node.limits.ip_key(remote), remote)
