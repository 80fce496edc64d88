"""``idle``: what an open connection costs, and how fast devices connect with a token.

Every connection is a distinct logged-in device (accounts are made first, over HTTP,
and are not part of the figures). Then all connections open at once, ``--concurrency``
at a time: TCP connect + WebSocket upgrade + ``auth`` + its ``ok`` — that rate is
``connects_per_s``, and p50..max are the per-connection times. The connections are held
for ``--hold`` seconds; the server's RSS growth from before the first connect to the end
of the hold, divided by the connections, is ``kb_per_conn``. The server's CPU over the
hold (every process of the node) is ``server_idle_cpu_pct``: the work a burst of connects
leaves behind (presence debounce, its pushes) falls in it;
``server_idle_cpu_pct_by_process`` splits it by process (``--json``).

One source address has ~28k ephemeral ports (net.ipv4.ip_local_port_range), so
connection *i* leaves from 127.0.0.(1 + i // --per-addr): past that many, further
loopback addresses take over.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from array import array
from typing import Any

from yimbench.client import Account, make_accounts, ping_frame, raw_connect, run_tag
from yimbench.rawws import RawWebSocket
from yimbench.runner import Coordinator, RunData, WorkerCtx
from yimbench.scenarios.base import Scenario, latency_fields, split
from yimbench.target import Target, raise_fd_limit

#: a node's default heartbeat (AuthOk.heartbeat_s); held connections ping this often
_HEARTBEAT_S = 25.0


def source_address(i: int, per_addr: int) -> str:
    """Loopback source address of connection ``i`` (127.0.0.1, then .2, … then 127.0.1.0 …)."""
    n = 1 + i // per_addr
    if n >= 2**24 - 1:
        raise ValueError("out of loopback source addresses")
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class IdleScenario(Scenario):
    name = "idle"
    help = "memory per open connection and token connects per second"
    latency_of = "connect: TCP + WebSocket upgrade + auth round trip"
    cpu_phase = ("ready", "connected")
    mem_phase = ("ready", "held")
    columns = [
        ("conns", "conns", "{}"),
        ("connects_per_s", "connects/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("failed", "failed", "{}"),
        ("kb_per_conn", "KB/conn", "{:.1f}"),
        ("server_rss_mb", "srv MB", "{:.0f}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("server_idle_cpu_pct", "idle CPU%", "{:.1f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("idle")
        g.add_argument("--conns", type=int, default=1000, help="connections to open and hold (default 1000)")
        g.add_argument("--hold", type=float, default=2.0, help="seconds to hold them before measuring (default 2)")
        g.add_argument(
            "--concurrency",
            type=int,
            default=200,
            help="connects in progress at a time, over all processes (default 200)",
        )
        g.add_argument(
            "--per-addr", type=int, default=25_000, help="connections per loopback source address (default 25000)"
        )

    def validate(self) -> None:
        a = self.args
        if a.conns < 1 or a.concurrency < 1 or a.per_addr < 1 or a.hold < 0:
            raise ValueError("--conns, --concurrency and --per-addr must be at least 1, --hold not negative")
        limit = raise_fd_limit()
        if a.conns + 200 > limit and not a.url:
            raise ValueError(
                f"--conns {a.conns}: the server process may open at most {limit} files (ulimit -Hn); "
                "raise the hard limit or use fewer connections"
            )

    def params(self) -> dict[str, Any]:
        a = self.args
        addrs = 1 + (a.conns - 1) // a.per_addr
        return {"conns": a.conns, "hold_s": a.hold, "concurrency": a.concurrency, "source_addrs": addrs}

    def connections(self) -> int:
        return self.args.conns

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        tag = run_tag()
        accounts = [acc[0] for acc in await make_accounts(target.url, [f"b{tag}i{i}" for i in range(a.conns)])]
        conns = [(acc, source_address(i, a.per_addr)) for i, acc in enumerate(accounts)]
        chunks = split(conns, a.procs)
        per_proc = max(1, a.concurrency // len(chunks))
        return [{"url": target.url, "conns": chunk, "concurrency": per_proc} for chunk in chunks]

    def on_barrier(self, name: str, coordinator: Coordinator) -> None:
        if name == "connected":
            time.sleep(min(self.args.hold, coordinator.remaining()))
            coordinator.snapshot("held")

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        url: str = payload["url"]
        conns: list[tuple[Account, str]] = payload["conns"]
        sem = asyncio.Semaphore(payload["concurrency"])
        sockets: list[RawWebSocket] = []
        times = array("d")
        failures: dict[str, int] = {}
        try:
            await ctx.barrier("ready")

            async def one(acc: Account, addr: str) -> None:
                async with sem:
                    t = time.monotonic()
                    try:
                        ws, _ok = await raw_connect(
                            url,
                            acc.token,
                            local_addr=addr if addr != "127.0.0.1" else None,
                            auth_timeout=max(0.1, ctx.remaining()),
                        )
                    except (OSError, RuntimeError, TimeoutError) as exc:
                        key = type(exc).__name__
                        failures[key] = failures.get(key, 0) + 1
                        return
                    times.append((time.monotonic() - t) * 1000)
                    sockets.append(ws)

            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(one(*c) for c in conns)), timeout=max(0.1, ctx.remaining()))
            finished = time.monotonic()
            pinger = asyncio.create_task(_keep_alive(sockets, _HEARTBEAT_S))
            await ctx.barrier("connected")
            pinger.cancel()
            closing = asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            await asyncio.wait_for(closing, timeout=max(5.0, min(30.0, ctx.remaining())))
        finally:
            for ws in sockets:
                if ws.transport is not None:
                    ws.transport.abort()
        return {
            "ok": len(times),
            "failures": failures,
            "times": times,
            "started": started,
            "finished": finished,
            "addrs": len({addr for _acc, addr in conns}),
        }

    def summarize(self, run: RunData) -> dict[str, Any]:
        rs = run.results
        ok = sum(r["ok"] for r in rs)
        failures: dict[str, int] = {}
        for r in rs:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        elapsed = max(r["finished"] for r in rs) - min(r["started"] for r in rs)
        times: list[float] = []
        for r in rs:
            times.extend(r["times"])
        idle_cpu = run.cpu_pct("connected", "held")[0]
        # the same idle CPU split by process (node: the store process under --workers N), to
        # tell which side a tail of work after the connects runs on
        idle_split = run.server_procs_cpu_pct("connected", "held")
        return {
            "conns": ok,
            "connects_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
            **latency_fields(times),
            "failed": sum(failures.values()),
            "failures": failures,
            "server_idle_cpu_pct": idle_cpu,
            "server_idle_cpu_pct_by_process": idle_split,
            "source_addrs": max(r["addrs"] for r in rs),
            "sent": 0,
            "received": 0,
            "lost": 0,
            "dups": 0,
            "latency_of": self.latency_of,
            "_series": {"latency_ms": times},
        }


async def _keep_alive(sockets: list[RawWebSocket], heartbeat: float) -> None:
    """Ping every connection once per heartbeat, spread over it, so a long hold stays online."""
    rid = 2
    while True:
        await asyncio.sleep(heartbeat * 0.8)
        for k, ws in enumerate(sockets):
            if not ws.is_closed:
                ws.send_text(ping_frame(rid))
            if k % 500 == 499:
                await asyncio.sleep(0)
        rid += 1
