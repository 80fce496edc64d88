"""What the channel costs a send: N sends through a RemoteStore (a worker's store, the real one
in another process) against the same N sends to a SqliteStore in this process.

    python -m yimbench.remote_store [--sends N] [--senders S] [--window W]

Reports CPU µs per send on each side: the caller's process (a worker; for the direct store,
the one process: event loop and writer thread together) and the store process (measured by
the store process itself, before and after, so its start-up is not counted). Every send is a
direct message from one of S senders to its own peer, at most W in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from yim.ipc.channel import connect
from yim.storage.base import Store
from yim.storage.records import SendCmd, UserRec
from yim.storage.remote import RemoteStore, StoreServer
from yim.storage.sqlite.store import SqliteStore

T0 = 1_700_000_000_000


async def _serve(fd: int, path: str) -> None:
    store = SqliteStore(path)
    await store.open()
    server = StoreServer(store)

    def on_call(op: str, body: msgspec.Raw) -> Any:
        if op == "bench.cpu":
            return time.process_time()
        return server.handle(op, body)

    channel = await connect(socket.socket(fileno=fd), on_call, server.handle_cast, name="store")
    await channel.closed.wait()
    await store.close()


async def _drive(store: Store, sends: int, senders: int, window: int) -> float:
    """Create the users, then make the sends; the seconds the sends took."""
    for i in range(1, 2 * senders + 1):
        await store.create_user(UserRec(i, f"u{i}", f"u{i}", "h", T0))
    gate = asyncio.Semaphore(window)
    next_id = iter(range(10, 10 + 2 * sends, 2))

    async def one(k: int) -> None:
        sender = 1 + k % senders
        msg_id = next(next_id)
        async with gate:
            cmd = SendCmd(
                msg_id=msg_id, new_conv_id=msg_id + 1, sender_id=sender, sender_device="d", kind="text",
                body=b'{"text":"hello"}', client_msg_id=f"c{msg_id}", created_at=T0 + msg_id, to=sender + senders,
            )  # fmt: skip
            await store.send_message(cmd)

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(sends)))
    return time.perf_counter() - start


async def direct(sends: int, senders: int, window: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "yim.db"))
        await store.open()
        try:
            cpu = time.process_time()
            wall = await _drive(store, sends, senders, window)
            cpu = time.process_time() - cpu
            stats = store.stats
        finally:
            await store.close()
    return {
        "wall_s": wall,
        "caller_us_per_send": cpu / sends * 1e6,
        "sends_per_batch": stats["jobs"] / max(stats["batches"], 1),
    }


async def remote(sends: int, senders: int, window: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "yimbench.remote_store"),
            *("--serve", str(theirs.fileno()), str(Path(tmp) / "yim.db")),
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        try:
            channel = await connect(ours, name="worker")
            store = RemoteStore(channel)
            await asyncio.wait_for(store.max_msg_id(), 60)
            their_cpu: float = await channel.call("bench.cpu", None, float)
            cpu = time.process_time()
            wall = await _drive(store, sends, senders, window)
            cpu = time.process_time() - cpu
            their_cpu = await channel.call("bench.cpu", None, float) - their_cpu
            stats = await store.refresh_stats()
            channel.close()
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return {
        "wall_s": wall,
        "caller_us_per_send": cpu / sends * 1e6,
        "store_us_per_send": their_cpu / sends * 1e6,
        "sends_per_batch": stats["jobs"] / max(stats["batches"], 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m yimbench.remote_store", description=__doc__.split("\n\n")[0])
    p.add_argument("--sends", type=int, default=20_000)
    p.add_argument("--senders", type=int, default=50)
    p.add_argument("--window", type=int, default=256, help="sends in flight at once")
    p.add_argument("--serve", nargs=2, metavar=("FD", "PATH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    import uvloop  # the node's loop, on both sides

    if a.serve:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(int(a.serve[0]), a.serve[1]))
        return
    for name, run in (("direct", direct), ("remote", remote)):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(a.sends, a.senders, a.window))
        figures = "  ".join(f"{k}={v:.1f}" for k, v in result.items())
        print(f"{name:7s} sends={a.sends} senders={a.senders} window={a.window}  {figures}", flush=True)


if __name__ == "__main__":
    main()
