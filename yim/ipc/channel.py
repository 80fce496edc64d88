"""A framed msgpack channel between two processes of one node (a worker and the store process).

Wire: a frame is a 4-byte big-endian length, then a msgpack array ``[kind, id, op, body]``:

======  =====================================================================
kind    meaning
======  =====================================================================
0       a call: ``id`` > 0, the peer answers with a reply of the same ``id``
1       a reply: ``body`` is the call's result
2       an error reply: ``body`` is ``[code, message, retry_after]``, a YimError
3       a cast: ``id`` is 0, nothing answers
======  =====================================================================

``body`` is any value msgspec encodes. The envelope is decoded once with ``body`` left as
:class:`msgspec.Raw`; whoever knows what the body is decodes it into its final type (a
reply with the type given to :meth:`Channel.call`), so no value is decoded twice.

Corking: frames written during one turn of the event loop leave together, in one
``writelines`` at the end of the turn (``call_soon``), so a burst of calls costs one system
call, not one per frame. At light traffic (the last turn wrote a single frame) the turn's
first frame is written at once and only the frames after it are corked: a lone call or
reply then waits for no loop turn, which at low load is a visible part of every hop
between processes, while a busy channel still writes once per turn.

Order: frames arrive in the order they were written. Calls run concurrently; their replies
may come back in any order.

Back-pressure and memory: what is written is held in the transport's buffer until the
kernel takes it. :meth:`Channel.call` and :meth:`Channel.drain` wait while the transport
says its buffer is full (above asyncio's high-water mark, 64 KiB by default); a cast never
waits (its callers are synchronous) and is bounded by those callers' own limits (pushes by
the per-connection send queues, invalidations by the writes behind them). A frame over
``MAX_FRAME`` bytes closes the channel: between two processes of one node only a bug sends
one.

Loss: when the peer goes away (or the channel is closed), every call awaiting a reply
fails with ``YimError("unavailable")``, later calls fail at once, and ``closed`` is set.
Before that, when it was the peer that went, :attr:`Channel.on_lost` runs: a worker ends
there (yim/supervisor.py), since its store process died with calls whose outcome it cannot
know, and ``unavailable`` would tell a client "not stored" of a send that may have been.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import msgspec

from yim.protocol.errors import YimError

log = logging.getLogger("yim.ipc")

CALL, REPLY, ERROR, CAST = 0, 1, 2, 3
#: the largest frame either side accepts (an export page or a sync page is far below it)
MAX_FRAME = 64 * 1024 * 1024

_LEN = struct.Struct(">I")
_ENVELOPE = msgspec.msgpack.Decoder(tuple[int, int, str, msgspec.Raw])
_ERROR_BODY = msgspec.msgpack.Decoder(tuple[str, str, float | None])

T = TypeVar("T")

#: answers a call: a value, or an awaitable of one (a coroutine runs in a task of its own; a
#: Future — the SQLite writer's — is awaited by callback, without a task)
CallHandler = Callable[[str, msgspec.Raw], Any]
#: takes a cast; runs on the event loop, must not block
CastHandler = Callable[[str, msgspec.Raw], None]


def _no_calls(op: str, body: msgspec.Raw) -> Any:
    raise YimError("unavailable", f"this end of the channel takes no call ({op})")


def _no_casts(op: str, body: msgspec.Raw) -> None:
    log.warning("cast %r dropped: this end of the channel takes none", op)


class Channel(asyncio.Protocol):
    """One end of the channel; see the module docstring. Build it with :func:`connect`."""

    def __init__(self, on_call: CallHandler = _no_calls, on_cast: CastHandler = _no_casts, name: str = "ipc") -> None:
        self.name = name
        self._on_call = on_call
        self._on_cast = on_cast
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_event_loop()
        self._out: list[bytearray] = []
        self._flush_scheduled = False
        self._light = True  # see _write
        self._inbuf = bytearray()
        self._next_id = 1
        self._pending: dict[int, tuple[asyncio.Future[Any], Any]] = {}
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()
        #: run once, synchronously, when the peer closes the channel (not when this end
        #: does), before the calls awaiting a reply fail: see "Loss" in the module docstring
        self.on_lost: Callable[[], None] | None = None
        self._closing = False  # this end closed it (close): on_lost is not for that
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- sending ---------------------------------------------------------------------------
    async def call(self, op: str, body: Any = None, reply_type: type[T] | Any = Any) -> T:
        """Ask the peer ``op`` and return its answer decoded as ``reply_type``; raise the
        YimError it answered with, or ``unavailable`` if the channel closes first."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self.closed.is_set():
            raise YimError("unavailable", f"{self.name}: the other process is gone")
        call_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[call_id] = (fut, reply_type)
        self._write(CALL, call_id, op, body)
        try:
            result: T = await fut
        finally:
            # a caller that gave up (a timeout around the call) leaves no entry behind: a peer
            # that never answers must not grow the table by one per attempt
            self._pending.pop(call_id, None)
        return result

    def request(self, op: str, body: Any = None, reply_type: type[T] | Any = Any) -> asyncio.Future[T]:
        """:meth:`call` as a Future the reply resolves, with no coroutine and no task: for a
        hot path that hands out futures (the store's ``send_message``). It does not wait for
        the buffer: its callers bound what they have in flight (a connection's send window).
        A closed channel gives a future failed with ``unavailable``."""
        fut: asyncio.Future[T] = self._loop.create_future()
        if self.closed.is_set():
            fut.set_exception(YimError("unavailable", f"{self.name}: the other process is gone"))
            return fut
        call_id = self._next_id
        self._next_id += 1
        self._pending[call_id] = (fut, reply_type)
        self._write(CALL, call_id, op, body)
        return fut

    def cast(self, op: str, body: Any = None) -> None:
        """Tell the peer ``op``; nothing answers. Dropped (with no error) once closed: a
        cast is a push or an invalidation, and the peer that would take it is gone."""
        if not self.closed.is_set():
            self._write(CAST, 0, op, body)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        if not self._writable.is_set():
            await self._writable.wait()

    def _write(self, kind: int, call_id: int, op: str, body: Any) -> None:
        buf = bytearray(4)
        self._encoder.encode_into((kind, call_id, op, body), buf, 4)
        _LEN.pack_into(buf, 0, len(buf) - 4)
        if self._flush_scheduled:
            self._out.append(buf)
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)
        transport = self._transport
        if self._light and transport is not None and not transport.is_closing():
            # Light traffic: the turn's first frame leaves at once (it waits for no loop turn),
            # the rest of the turn's frames are corked behind it.
            transport.write(buf)
        else:
            self._out.append(buf)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        # Light while each turn writes one frame: one went at once and none was corked
        # behind it, or (corking) the turn corked just one.
        self._light = len(out) <= (0 if self._light else 1)
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(out)

    # --- receiving -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        # Frames are decoded straight out of ``data`` (bytes do not change, so the bodies
        # left as msgspec.Raw may point into it); only a frame split across reads is copied,
        # once, to join its parts.
        if self._inbuf:
            self._inbuf += data
            data = bytes(self._inbuf)
            self._inbuf.clear()
        view = memoryview(data)
        pos = 0
        end = len(data)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(view, pos)
            if size > MAX_FRAME:
                log.error("%s: a frame of %d bytes (limit %d): closing the channel", self.name, size, MAX_FRAME)
                self.close()
                return
            if end - pos - 4 < size:
                break
            frame = view[pos + 4 : pos + 4 + size]
            pos += 4 + size
            try:
                kind, call_id, op, body = _ENVELOPE.decode(frame)
            except msgspec.DecodeError:
                log.error("%s: a frame that is no envelope: closing the channel", self.name)
                self.close()
                return
            self._dispatch(kind, call_id, op, body)
        if pos < end:
            self._inbuf += view[pos:]

    def _dispatch(self, kind: int, call_id: int, op: str, body: msgspec.Raw) -> None:
        if kind == REPLY or kind == ERROR:
            waiting = self._pending.pop(call_id, None)
            if waiting is None:
                return  # the caller was cancelled; the answer has nobody to go to
            fut, reply_type = waiting
            if fut.done():
                return
            try:
                if kind == REPLY:
                    fut.set_result(self._decode(body, reply_type))
                else:
                    code, message, retry_after = _ERROR_BODY.decode(body)
                    fut.set_exception(YimError(code, message, retry_after=retry_after))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                fut.set_exception(YimError("internal", f"{self.name}: unreadable reply to {op or call_id}: {exc}"))
        elif kind == CALL:
            self._answer(call_id, op, body)
        elif kind == CAST:
            try:
                self._on_cast(op, body)
            except Exception:
                log.exception("%s: cast %r failed", self.name, op)
        else:
            log.error("%s: a frame of unknown kind %d: closing the channel", self.name, kind)
            self.close()

    def _decode(self, body: msgspec.Raw, type_: Any) -> Any:
        decoder = self._decoders.get(type_)
        if decoder is None:
            decoder = self._decoders[type_] = msgspec.msgpack.Decoder(type_)
        return decoder.decode(body)

    def decode(self, body: msgspec.Raw, type_: type[T] | Any) -> T:
        """Decode a call's or a cast's body as ``type_`` (decoders are cached per type)."""
        result: T = self._decode(body, type_)
        return result

    def _answer(self, call_id: int, op: str, body: msgspec.Raw) -> None:
        try:
            result = self._on_call(op, body)
        except Exception as exc:  # every failure becomes an error reply
            self._reply_error(call_id, op, exc)
            return
        if isinstance(result, asyncio.Future):
            # Also when it is done already (the SQLite writer ran an idle send inline): the
            # callback is scheduled behind those of futures resolved earlier, so replies
            # leave in the order their futures were resolved.
            result.add_done_callback(lambda f: self._reply_done(call_id, op, f))
        elif asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda f: self._reply_done(call_id, op, f))
        else:
            self._write(REPLY, call_id, "", result)

    def _reply_done(self, call_id: int, op: str, fut: asyncio.Future[Any]) -> None:
        if isinstance(fut, asyncio.Task):
            self._tasks.discard(fut)
        if fut.cancelled():
            self._write(ERROR, call_id, "", ("unavailable", f"{op} was cancelled", None))
            return
        exc = fut.exception()
        if exc is not None:
            self._reply_error(call_id, op, exc)
        else:
            try:
                self._write(REPLY, call_id, "", fut.result())
            except (TypeError, msgspec.EncodeError) as enc:
                self._reply_error(call_id, op, enc)

    def _reply_error(self, call_id: int, op: str, exc: BaseException) -> None:
        if isinstance(exc, YimError):
            self._write(ERROR, call_id, "", (exc.code, exc.message, exc.retry_after))
            return
        # Not something a client can act on: logged here, with its traceback, once; the
        # caller gets the code a client would get for the same failure in one process.
        log.error("%s: %s failed", self.name, op, exc_info=exc)
        self._write(ERROR, call_id, "", ("internal", f"{op} failed in the other process", None))

    # --- the transport ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self._transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.on_lost is not None and not self._closing and not self.closed.is_set():
            self.on_lost()
        self._fail_pending()

    def _fail_pending(self) -> None:
        self.closed.set()
        self._writable.set()  # nobody may wait for a buffer that will never drain
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(YimError("unavailable", f"{self.name}: the other process is gone"))

    def close(self) -> None:
        """Close the channel (what was written this turn is sent first)."""
        self._closing = True
        if self._transport is not None:
            self._flush()
            self._transport.close()
        self._fail_pending()


async def connect(
    sock: socket.socket,
    on_call: CallHandler = _no_calls,
    on_cast: CastHandler = _no_casts,
    name: str = "ipc",
) -> Channel:
    """A channel over ``sock``, one end of a Unix ``socketpair`` (the store process keeps
    one end, a worker inherits the other)."""
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_unix_connection(lambda: Channel(on_call, on_cast, name), sock=sock)
    return channel
