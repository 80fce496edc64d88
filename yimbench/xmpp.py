"""A minimal XMPP c2s client for the load generator, and ``pairs`` over it (``yim bench
pairs --server ejabberd``).

RFC 6120 (streams, SASL, resource binding) and RFC 6121 (presence, messages), only as
far as a load generator needs: a stream header, SASL PLAIN, the stream restart, a bound
resource, a session if the server still requires one (ejabberd 23.01 marks it optional),
initial presence, then ``<message type="chat">`` stanzas out and in. XEP-0077 in-band
registration makes the accounts. No TLS (the bench runs on loopback), no XML library:
the log-in steps match a few regular expressions over what has arrived, and the hot path
is :class:`StanzaScanner`, an incremental scan of the stream for ``<message`` stanzas
that reads their ``id`` and ``type`` attributes and nothing else — no DOM per stanza.

As in yimbench/rawws.py, every stanza is handed to a plain callback straight from
``data_received`` (no task or future per message), and writes are corked: what one
event-loop turn queues leaves in one ``transport.write``.

``pairs`` here does what the yim client does (yimbench/scenarios/pairs.py): each sender
keeps at most ``--window`` messages in flight, in flight meaning sent and not yet read
by its receiver, so the window closes the loop through the server exactly as there;
``--rate`` paces the same way; the body is the same text (``"<pair> <i> <clock>"`` plus
``--pad``). What XMPP does not have: a per-message answer from the server. yim acks
every send to its sender (``acked``, ``ack_p50_ms``); plain c2s acks nothing, so here a
message counts as taken (``acked``) once it is delivered, and the ack latency is absent.
Receivers send no read acks either (yim's receivers ack every ``--ack-every`` events);
a bounced message (``type="error"``, e.g. the receiver is gone) frees its slot as a
refused send does in yim.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from yimbench.scenarios.base import WindowedSends

if TYPE_CHECKING:
    from yimbench.runner import WorkerCtx

_MESSAGE = b"<message"
_MESSAGE_END = b"</message>"
_KEEPALIVE_S = 20.0  # as the yim client's pings: a whitespace keepalive (RFC 6120 §4.6.1)
#: a log-in reply larger than this is not a reply to us
_MAX_LOGIN_BUF = 256 * 1024
#: the most a scanner holds of one unfinished stanza (ejabberd's own max_stanza_size is 256 KiB)
MAX_STANZA = 1024 * 1024

PASSWORD = "bench-password-1"


def stream_header(domain: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client'"
        " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    ).encode()


def attribute(head: bytes, name: bytes) -> bytes:
    """The value of attribute ``name`` in a start tag (``b""`` if absent); either quote."""
    for quote in (b"'", b'"'):
        key = b" " + name + b"=" + quote
        i = head.find(key)
        if i >= 0:
            start = i + len(key)
            end = head.find(quote, start)
            if end >= 0:
                return head[start:end]
    return b""


class StanzaScanner:
    """Finds the complete ``<message …>`` stanzas in a byte stream fed in arbitrary pieces.

    ``feed`` returns ``(id, type)`` of each stanza completed by the new bytes, in order;
    a stanza cut across reads is held until its end arrives. Everything else in the
    stream (presence, iq, whitespace keepalives) is skipped: only a tail that could be the
    beginning of ``<message`` is kept. Our own bodies never contain ``<`` (XML escapes it
    as ``&lt;``), so a ``<message`` or ``</message>`` seen is always markup.
    """

    __slots__ = ("_buf", "_max")

    def __init__(self, max_stanza: int = MAX_STANZA) -> None:
        self._buf = bytearray()
        self._max = max_stanza

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        while True:
            start = buf.find(_MESSAGE, pos)
            if start < 0:
                # nothing begins before the last len("<message")-1 bytes: drop it
                keep = max(pos, len(buf) - len(_MESSAGE) + 1)
                break
            head_end = buf.find(b">", start)
            if head_end < 0:
                keep = start
                break
            after = buf[start + len(_MESSAGE)]
            if after not in b" \t\r\n/>":  # another element whose name begins so
                pos = start + len(_MESSAGE)
                continue
            if buf[head_end - 1] == 0x2F:  # "<message …/>": empty
                end = head_end + 1
            else:
                close = buf.find(_MESSAGE_END, head_end)
                if close < 0:
                    keep = start
                    break
                end = close + len(_MESSAGE_END)
            head = bytes(buf[start:head_end])
            out.append((attribute(head, b"id"), attribute(head, b"type")))
            pos = end
        del buf[:keep]
        if len(buf) > self._max:
            raise XmppError(f"a stanza longer than {self._max} bytes")
        return out

    def pending(self) -> int:
        """Bytes held (an incomplete stanza, or a tail that may begin one)."""
        return len(self._buf)


class XmppError(ConnectionError):
    pass


class XmppConn(asyncio.Protocol):
    """One c2s connection: awaited reads while logging in, then a callback per message."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._login = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._on_message: Callable[[bytes, bytes], None] | None = None
        self._scanner = StanzaScanner()
        self._out = bytearray()
        self._flush_pending = False
        self.error: Exception | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        on_message = self._on_message
        if on_message is not None:
            try:
                found = self._scanner.feed(data)
            except XmppError as exc:
                self._abort(exc)
                return
            for stanza_id, stanza_type in found:
                on_message(stanza_id, stanza_type)
            return
        self._login += data
        if len(self._login) > _MAX_LOGIN_BUF:
            self._abort(XmppError("log-in reply too large"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or XmppError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _abort(self, exc: Exception) -> None:
        """The peer broke a bound: drop the connection (its messages then count as lost)."""
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- log-in ---------------------------------------------------------------------------

    async def read_until(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        """Wait until what has arrived matches ``pattern``; consume it up to the match's end."""
        while True:
            # on a copy: a match on the bytearray would see the deletion below
            m = pattern.search(bytes(self._login))
            if m is not None:
                del self._login[: m.end()]
                return m
            if self.error is not None:
                raise XmppError(f"connection failed while logging in: {self.error}")
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None

    def deliver_to(self, on_message: Callable[[bytes, bytes], None]) -> None:
        """From now on hand ``(id, type)`` of every ``<message>`` to ``on_message``."""
        self._on_message = on_message
        pending, self._login = bytes(self._login), bytearray()
        for stanza_id, stanza_type in self._scanner.feed(pending):
            on_message(stanza_id, stanza_type)

    # --- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._out += data
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        transport = self.transport
        if self._out and transport is not None and not transport.is_closing():
            transport.write(bytes(self._out))
        self._out.clear()

    @property
    def is_closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def close(self, timeout: float = 5.0) -> None:
        """End the stream and the connection (the server closes its side in turn)."""
        transport = self.transport
        if transport is None or self.closed.done():
            return
        if not transport.is_closing():
            self.write(b"</stream:stream>")
            self._flush()
            transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=timeout)
        except TimeoutError:
            transport.abort()


_FEATURES = re.compile(rb"<stream:features\b.*?</stream:features>", re.S)
_SASL_DONE = re.compile(rb"<success\b[^>]*?(?:/>|>.*?</success>)|<failure\b.*?</failure>", re.S)
_SESSION = re.compile(rb"<session xmlns=['\"]urn:ietf:params:xml:ns:xmpp-session['\"].*?(?:/>|</session>)", re.S)
_IQ_REPLY = re.compile(rb"<iq\b[^>]*?\bid=['\"](\w+)['\"][^>]*?(?:/>|>.*?</iq>)", re.S)


async def _open(host: str, port: int, domain: str) -> tuple[XmppConn, bytes]:
    loop = asyncio.get_running_loop()
    _transport, conn = await loop.create_connection(XmppConn, host, port)
    conn.write(stream_header(domain))
    features = (await conn.read_until(_FEATURES)).group(0)
    return conn, features


async def _iq(conn: XmppConn, iq_id: str, payload: str) -> bytes:
    conn.write(f"<iq type='set' id='{iq_id}'>{payload}</iq>".encode())
    m = await conn.read_until(_IQ_REPLY)
    reply = m.group(0)
    if m.group(1) != iq_id.encode() or attribute(reply.split(b">", 1)[0], b"type") != b"result":
        raise XmppError(f"iq {iq_id!r} refused: {reply[:300]!r}")
    return reply


async def register(host: str, port: int, domain: str, username: str, password: str) -> None:
    """Make the account ``username@domain`` by in-band registration (XEP-0077)."""
    conn, _features = await _open(host, port, domain)
    try:
        await _iq(
            conn,
            "reg",
            f"<query xmlns='jabber:iq:register'><username>{username}</username><password>{password}</password></query>",
        )
    finally:
        await conn.close()


async def login(host: str, port: int, domain: str, username: str, password: str, resource: str) -> XmppConn:
    """A logged-in, available c2s connection of ``username@domain/resource``."""
    conn, features = await _open(host, port, domain)
    try:
        if b"<mechanism>PLAIN</mechanism>" not in features:
            raise XmppError(f"the server offers no SASL PLAIN: {features[:300]!r}")
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        conn.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
        outcome = (await conn.read_until(_SASL_DONE)).group(0)
        if not outcome.startswith(b"<success"):
            raise XmppError(f"SASL PLAIN refused for {username}: {outcome[:300]!r}")
        conn.write(stream_header(domain))  # the stream restart after SASL (RFC 6120 §6.4.6)
        features = (await conn.read_until(_FEATURES)).group(0)
        await _iq(
            conn, "bind", f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind>"
        )
        session = _SESSION.search(features)
        if session is not None and b"<optional/>" not in session.group(0):
            await _iq(conn, "sess", "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>")
        # available: a message to the bare JID reaches this resource (RFC 6121 §8.5.2)
        conn.write(b"<presence/>")
    except BaseException:
        await conn.close(timeout=1.0)
        raise
    return conn


# --- pairs over XMPP ------------------------------------------------------------------------


class _Pair:
    __slots__ = ("idx", "inflight", "next_i", "receiver", "seen", "send_ts", "sender", "to", "waiter")

    def __init__(self, idx: int, to: str, n: int) -> None:
        self.idx = idx
        self.to = to
        self.sender: XmppConn | None = None
        self.receiver: XmppConn | None = None
        self.next_i = 0
        self.inflight = 0
        self.seen = bytearray(n)
        self.send_ts = array("q", bytes(8 * n))
        self.waiter: asyncio.Future[None] | None = None


class PairsWorker(WindowedSends):
    """One load-generator process of ``pairs`` against an XMPP server (both ends of each
    of its pairs), returning the same fields as the yim client's worker."""

    def __init__(self, ctx: WorkerCtx, payload: dict[str, Any]) -> None:
        self.ctx = ctx
        self.host: str = payload["host"]
        self.port: int = payload["port"]
        self.domain: str = payload["domain"]
        self.n: int = payload["messages"]
        self.window: int = payload["window"]
        self.interval: float = payload["interval"]
        self.pad: str = payload["pad"]
        self.drain: float = payload["drain"]
        self.accounts: list[tuple[int, str, str]] = payload["pairs"]
        self.pairs = {idx: _Pair(idx, f"{r}@{self.domain}", self.n) for idx, _s, r in self.accounts}
        self.total = self.n * len(self.pairs)
        self.lat = array("d")
        self.recv_times = array("d")
        self.received = self.dups = self.errors = self.sent = 0
        self.first_send = 0.0
        self.last_event = 0.0
        self.all_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        await ctx.barrier("ready")
        sem = asyncio.Semaphore(100)

        async def open_pair(idx: int, s: str, r: str) -> None:
            async with sem:
                p = self.pairs[idx]
                p.receiver = await login(self.host, self.port, self.domain, r, PASSWORD, "bench")
                p.sender = await login(self.host, self.port, self.domain, s, PASSWORD, "bench")

        try:
            await asyncio.wait_for(
                asyncio.gather(*(open_pair(*acc) for acc in self.accounts)), timeout=max(0.1, ctx.remaining())
            )
            await ctx.barrier("connected")
            for p in self.pairs.values():
                assert p.sender is not None and p.receiver is not None
                p.sender.deliver_to(self._on_bounce)
                p.receiver.deliver_to(self._on_delivery)
            tasks = [asyncio.create_task(self._keepalive())]
            tasks += self._start_sending()
            await self._wait_delivered()
            await ctx.barrier("done")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            closing = [c.close() for p in self.pairs.values() for c in (p.sender, p.receiver) if c is not None]
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=10)
        return {
            "sent": self.sent,
            # no per-message answer in XMPP: a message counts as taken once delivered
            "acked": self.received,
            "received": self.received,
            "dups": self.dups,
            "errors": self.errors,
            "error_codes": {"bounced": self.errors} if self.errors else {},
            "first_send": self.first_send,
            "last_event": self.last_event,
            "lat": self.lat,
            "ack_lat": array("d"),
            "recv_times": self.recv_times,
        }

    async def _wait_delivered(self) -> None:
        """Until every message is delivered or bounced; a lost one stalls its sender's window,
        so give up after ``drain`` seconds without progress (the run's time bounds it all)."""
        progress = -1
        while not self.all_received.done() and self.ctx.remaining() > 0:
            now = self.received + self.errors
            if now == progress:
                return
            progress = now
            try:
                await asyncio.wait_for(
                    asyncio.shield(self.all_received), timeout=max(0.0, min(self.drain, self.ctx.remaining()))
                )
            except TimeoutError:
                pass

    def _send(self, p: _Pair) -> None:
        i = p.next_i
        p.next_i = i + 1
        p.inflight += 1
        t = time.monotonic_ns()
        p.send_ts[i] = t
        self.sent += 1
        if not self.first_send:
            self.first_send = t / 1e9
        assert p.sender is not None
        body = f"{p.idx} {i} {t}{self.pad}"  # the yim client's text, byte for byte
        p.sender.write(f"<message to='{p.to}' type='chat' id='{p.idx}-{i}'><body>{body}</body></message>".encode())

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(_KEEPALIVE_S)
            for p in self.pairs.values():
                for conn in (p.sender, p.receiver):
                    if conn is not None and not conn.is_closed:
                        conn.write(b" ")

    def _check(self) -> None:
        if self.received + self.errors >= self.total and not self.all_received.done():
            self.all_received.set_result(None)

    def _lookup(self, stanza_id: bytes) -> tuple[_Pair, int] | None:
        idx_s, _, i_s = stanza_id.partition(b"-")
        if not (idx_s.isdigit() and i_s.isdigit()):
            return None
        p = self.pairs.get(int(idx_s))
        i = int(i_s)
        if p is None or not 0 <= i < p.next_i:
            return None
        return p, i

    def _on_delivery(self, stanza_id: bytes, stanza_type: bytes) -> None:
        """A message read by a receiver: delivered, and a slot of its sender is free."""
        now = time.monotonic_ns()
        if stanza_type == b"error":
            return
        found = self._lookup(stanza_id)
        if found is None:
            return
        src, i = found
        if src.seen[i]:
            self.dups += 1
            return
        src.seen[i] = 1
        self.received += 1
        self.lat.append((now - src.send_ts[i]) / 1e6)
        self.recv_times.append(now / 1e9)
        self.last_event = max(self.last_event, now / 1e9)
        self._release(src)
        if not self.interval and src.next_i < self.n:
            self._send(src)
        self._check()

    def _on_bounce(self, stanza_id: bytes, stanza_type: bytes) -> None:
        """A message back at a sender: an error bounce of one of its sends frees its slot."""
        if stanza_type != b"error":
            return
        found = self._lookup(stanza_id)
        if found is None:
            return
        src, i = found
        if src.seen[i]:
            return
        src.seen[i] = 1
        self.errors += 1
        self._release(src)
        if not self.interval and src.next_i < self.n:
            self._send(src)
        self._check()


async def run_pairs(ctx: WorkerCtx, payload: dict[str, Any]) -> dict[str, Any]:
    return await PairsWorker(ctx, payload).run()


async def register_all(host: str, port: int, domain: str, usernames: list[str], *, concurrency: int = 64) -> None:
    """Make every account, ``concurrency`` registrations at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with sem:
            await register(host, port, domain, name, PASSWORD)

    await asyncio.gather(*(one(n) for n in usernames))
