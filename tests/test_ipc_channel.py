"""The channel between a node's processes (yim/ipc/channel.py), over a real socketpair:
calls and their typed replies, errors, casts in order, concurrency, corking, a peer that
goes away, and frames too big to take."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yim.ipc.channel import MAX_FRAME, Channel, connect
from yim.protocol.errors import YimError


class Point(msgspec.Struct, frozen=True):
    x: int
    label: str
    tags: list[str] = []


async def pair(on_call=None, on_cast=None) -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    kw = {}
    if on_call is not None:
        kw["on_call"] = on_call
    if on_cast is not None:
        kw["on_cast"] = on_cast
    server = await connect(b, name="server", **kw)
    client = await connect(a, name="client")
    return client, server


async def test_call_returns_typed_reply_and_errors_cross() -> None:
    def on_call(op: str, body: msgspec.Raw):
        if op == "double":
            p = msgspec.msgpack.decode(body, type=Point)
            return Point(p.x * 2, p.label + p.label, [*p.tags, "doubled"])
        if op == "refuse":
            raise YimError("forbidden", "not yours")
        if op == "crash":
            raise RuntimeError("a bug")
        raise AssertionError(op)

    client, server = await pair(on_call)
    got = await client.call("double", Point(3, "ab"), Point)
    assert got == Point(6, "abab", ["doubled"])
    with pytest.raises(YimError) as info:
        await client.call("refuse", None)
    assert (info.value.code, info.value.message) == ("forbidden", "not yours")
    with pytest.raises(YimError) as info:
        await client.call("crash", None)
    assert info.value.code == "internal"
    client.close()
    server.close()


async def test_async_handlers_and_futures_answer_out_of_order() -> None:
    loop = asyncio.get_running_loop()
    held: list[asyncio.Future[int]] = []

    def on_call(op: str, body: msgspec.Raw):
        n = msgspec.msgpack.decode(body, type=int)
        if op == "future":
            fut: asyncio.Future[int] = loop.create_future()
            held.append(fut)
            return fut

        async def slow() -> int:
            await asyncio.sleep(0.01 * (5 - n))
            return n * 10

        return slow()

    client, server = await pair(on_call)
    results = await asyncio.gather(*(client.call("coro", n, int) for n in range(5)))
    assert results == [0, 10, 20, 30, 40]
    waiting = asyncio.ensure_future(client.call("future", 7, int))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(held) == 1
    held[0].set_result(70)
    assert await waiting == 70
    client.close()
    server.close()


async def test_casts_arrive_in_order_and_bursts_are_corked() -> None:
    seen: list[int] = []
    done = asyncio.Event()

    def on_cast(op: str, body: msgspec.Raw) -> None:
        seen.append(msgspec.msgpack.decode(body, type=int))
        if len(seen) == 10_000:
            done.set()

    client, server = await pair(on_cast=on_cast)
    flushes: list[int] = []
    real_flush = client._flush

    def counting_flush() -> None:
        flushes.append(len(client._out))
        real_flush()

    client._flush = counting_flush  # type: ignore[method-assign]
    for i in range(10_000):
        client.cast("n", i)
    await asyncio.wait_for(done.wait(), 10)
    assert seen == list(range(10_000))
    assert flushes == [9_999]  # the first left at once, the rest of the turn in one write
    client.close()
    server.close()


async def test_a_lone_frame_leaves_at_once_and_a_busy_turn_corks() -> None:
    """At light traffic a frame is on the socket when the write returns (no loop turn in
    between); once a turn wrote more than one frame, the channel corks every frame until a
    turn writes just one again."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.setblocking(False)
    ch = await connect(a, name="client")

    def frames_waiting() -> int:
        got = b""
        while True:
            try:
                got += b.recv(1 << 16)
            except BlockingIOError:
                break
        n = pos = 0
        while pos < len(got):
            pos += 4 + int.from_bytes(got[pos : pos + 4], "big")
            n += 1
        return n

    try:
        ch.cast("n", 1)
        assert frames_waiting() == 1  # written before any loop turn
        ch.cast("n", 2)
        ch.cast("n", 3)
        assert frames_waiting() == 0  # corked behind the first of the turn
        await asyncio.sleep(0)
        assert frames_waiting() == 2  # both at the end of the turn
        ch.cast("n", 4)  # the last turn was busy: corked
        assert frames_waiting() == 0
        await asyncio.sleep(0)
        assert frames_waiting() == 1
        ch.cast("n", 5)  # that turn wrote one frame: light again
        assert frames_waiting() == 1
    finally:
        ch.close()
        b.close()


async def test_replies_leave_in_the_order_their_futures_were_resolved() -> None:
    """A call answered by a future resolved already (the SQLite writer ran an idle send
    inline) is replied to behind a call whose future was resolved just before it but whose
    reply is not written yet: one connection's replies, and the entries routed with them,
    keep commit order (a worker's device saw a pushed seq jump back when this reply went at
    once)."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    first: asyncio.Future[int] = loop.create_future()

    def on_call(op: str, body: msgspec.Raw) -> asyncio.Future[int]:
        if op == "first":
            return first  # committed later, by the writer
        first.set_result(1)  # committed now; its reply is written by its callback
        done: asyncio.Future[int] = loop.create_future()
        done.set_result(2)  # and this one right after it, inline
        return done

    ch = await connect(a, on_call=on_call, name="server")
    reader, writer = await asyncio.open_unix_connection(sock=b)
    try:
        frames = b"".join(
            len(f).to_bytes(4, "big") + f
            for f in (msgspec.msgpack.encode((0, 1, "first", None)), msgspec.msgpack.encode((0, 2, "second", None)))
        )
        writer.write(frames)  # both read in one go
        replies = []
        async with asyncio.timeout(5):
            for _ in range(2):
                size = int.from_bytes(await reader.readexactly(4), "big")
                replies.append(msgspec.msgpack.decode(await reader.readexactly(size)))
        assert replies == [[1, 1, "", 1], [1, 2, "", 2]]
    finally:
        ch.close()
        writer.close()


async def test_peer_gone_fails_pending_and_later_calls() -> None:
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    client, server = await pair(lambda op, body: never)
    waiting = asyncio.ensure_future(client.call("hang", None, int))
    await asyncio.sleep(0.02)
    server.close()
    with pytest.raises(YimError) as info:
        await asyncio.wait_for(waiting, 5)
    assert info.value.code == "unavailable"
    await asyncio.wait_for(client.closed.wait(), 5)
    with pytest.raises(YimError):
        await client.call("again", None)
    client.cast("ignored", 1)  # no error: a cast to a gone peer is dropped


async def test_on_lost_runs_before_pending_calls_fail_and_only_when_the_peer_went() -> None:
    """A worker ends in on_lost (yim/supervisor.py): it must run while the calls whose
    outcome is unknown are still pending, so no caller hears "unavailable" first."""
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    client, server = await pair(lambda op, body: never)
    seen: list[tuple[str, bool]] = []
    waiting = asyncio.ensure_future(client.call("hang", None, int))
    client.on_lost = lambda: seen.append(("lost", waiting.done() or not client._pending))
    server.on_lost = lambda: seen.append(("server lost", True))
    await asyncio.sleep(0.02)
    server.close()  # this end closing: not the server's on_lost
    await asyncio.wait_for(client.closed.wait(), 5)
    assert seen == [("lost", False)]  # the call was still pending when on_lost ran
    with pytest.raises(YimError):
        await waiting
    client.close()
    assert seen == [("lost", False)]  # once


async def test_a_call_given_up_leaves_nothing_pending() -> None:
    """A caller that times out forgets its call: a peer that never answers does not grow the
    table of pending calls by one per attempt, and a late answer goes nowhere."""
    late: list[asyncio.Future[int]] = []

    def hang(op: str, body: object) -> asyncio.Future[int] | int:
        if op == "ok":
            return 7
        late.append(asyncio.get_running_loop().create_future())
        return late[-1]

    client, server = await pair(hang)
    for _ in range(20):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.call("hang", None, int), 0.01)
    assert client._pending == {}
    late[0].set_result(1)  # answered at last: nobody waits for it, and the channel goes on
    assert await client.call("ok", None, int) == 7
    assert client._pending == {}
    client.close()
    server.close()


async def test_peer_process_killed_fails_pending() -> None:
    """The other end in a real process that is SIGKILLed while a call waits."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = textwrap.dedent(
        f"""
        import asyncio, socket, sys
        sys.path.insert(0, {os.getcwd()!r})
        from yim.ipc.channel import connect
        async def main():
            sock = socket.socket(fileno={b.fileno()})
            hang = asyncio.get_running_loop().create_future()
            await connect(sock, on_call=lambda op, body: 1 if op == "ping" else hang)
            await asyncio.sleep(3600)
        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", child, pass_fds=[b.fileno()])
    b.close()
    try:
        client = await connect(a, name="client")
        assert await asyncio.wait_for(client.call("ping", None, int), 10) == 1
        waiting = asyncio.ensure_future(client.call("hang", None))
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        with pytest.raises(YimError) as info:
            await asyncio.wait_for(waiting, 10)
        assert info.value.code == "unavailable"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_oversized_frame_closes_the_channel() -> None:
    client, server = await pair(lambda op, body: None)
    transport = client._transport
    assert transport is not None
    transport.write((MAX_FRAME + 1).to_bytes(4, "big") + b"\x00" * 16)
    await asyncio.wait_for(server.closed.wait(), 5)
    await asyncio.wait_for(client.closed.wait(), 5)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(_values, min_size=1, max_size=20))
def test_any_msgpack_value_round_trips(values: list[object]) -> None:
    async def run() -> list[object]:
        client, server = await pair(lambda op, body: msgspec.msgpack.decode(body))
        try:
            return list(await asyncio.gather(*(client.call("echo", v) for v in values)))
        finally:
            client.close()
            server.close()

    assert asyncio.run(run()) == values
