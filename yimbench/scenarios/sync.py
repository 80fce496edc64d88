"""``sync``: a device that was offline for N messages reconnects and catches up.

Fill (not measured): ``--senders`` users send ``--messages`` messages in total to one user
whose device is logged in but not connected. Catch-up (measured): the device connects,
authenticates (its ``ok`` carries the inbox head) and pages ``sync`` from seq 0 with
``--page`` events per page until ``has_more`` is false, asking for each next page as soon
as a page arrives and checking the page while the next is on its way. ``msgs_per_s`` is messages caught
up per second from the start of the connect to the last page; p50..max are the page
round trips. Every event is checked: inbox seqs gap-free, each message once.

Between the two the bench waits until the node is quiet (``settle_s``): what the node
defers after a burst — indexing the messages for search, WAL checkpoints — would otherwise
land in the catch-up, while a device returning after a real absence finds a node that has
long finished it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from array import array
from typing import Any

import aiohttp

from yimbench.client import (
    Account,
    client_session,
    connect,
    decode_page,
    decode_reply,
    make_accounts,
    run_tag,
    send_frame,
    send_windowed,
    sync_frame,
)
from yimbench.runner import Coordinator, RunData, WorkerCtx
from yimbench.scenarios.base import Scenario, latency_fields
from yimbench.scenarios.catchup import wait_quiet
from yimbench.target import Target

_TEXT = aiohttp.WSMsgType.TEXT


class SyncScenario(Scenario):
    name = "sync"
    help = "an offline device reconnects and pages `sync` through N messages"
    latency_of = "one sync page round trip"
    baseline_ok = False  # the relay stores nothing to sync
    cpu_phase = ("stored", "caught_up")

    def on_barrier(self, name: str, coordinator: Coordinator) -> None:
        if name == "stored" and coordinator.target.pid:
            coordinator.extra["settle_s"] = wait_quiet(coordinator.target.pid)
            coordinator.snapshot(name)  # the measured phase starts after the wait

    mem_phase = None
    columns = [
        ("received", "messages", "{}"),
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("catchup_s", "catch-up s", "{:.3f}"),
        ("pages", "pages", "{}"),
        ("p50_ms", "page p50 ms", "{:.1f}"),
        ("p99_ms", "page p99 ms", "{:.1f}"),
        ("lost", "lost", "{}"),
        ("dups", "dups", "{}"),
        ("fill_msgs_per_s", "fill msgs/s", "{:,.0f}"),
        ("server_rss_mb", "srv MB", "{:.0f}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("sync")
        g.add_argument("--messages", type=int, default=10_000, help="messages the device missed (default 10000)")
        g.add_argument("--page", type=int, default=1000, help="events per sync page (default 1000, the server's cap)")
        g.add_argument("--senders", type=int, default=10, help="users who send them (default 10)")
        g.add_argument("--window", type=int, default=64, help="sends in flight per sender while filling (default 64)")

    def validate(self) -> None:
        a = self.args
        if a.messages < 1 or a.senders < 1 or a.window < 1 or not 1 <= a.page <= 1000:
            raise ValueError("--messages, --senders, --window must be at least 1, --page 1..1000")

    def params(self) -> dict[str, Any]:
        a = self.args
        return {"messages": a.messages, "page": a.page, "senders": a.senders}

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        tag = run_tag()
        names = [f"b{tag}o0"] + [f"b{tag}f{i}" for i in range(a.senders)]
        accounts = [acc[0] for acc in await make_accounts(target.url, names)]
        per = [a.messages // a.senders + (1 if i < a.messages % a.senders else 0) for i in range(a.senders)]
        return [
            {
                "url": target.url,
                "device": accounts[0],
                "senders": list(zip(accounts[1:], per, strict=True)),
                "page": a.page,
                "window": a.window,
            }
        ]

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        url: str = payload["url"]
        device: Account = payload["device"]
        senders: list[tuple[Account, int]] = payload["senders"]
        async with client_session() as http:
            await ctx.barrier("ready")
            fill_started = time.monotonic()
            refused = await asyncio.wait_for(
                asyncio.gather(
                    *(_fill(http, url, k, s, n, device.user_id, payload["window"]) for k, (s, n) in enumerate(senders))
                ),
                timeout=max(0.1, ctx.remaining()),
            )
            fill_s = time.monotonic() - fill_started
            await ctx.barrier("stored")
            started = time.monotonic()
            result = await asyncio.wait_for(
                _catch_up(http, url, device, payload["page"], [n for _s, n in senders]),
                timeout=max(0.1, ctx.remaining()),
            )
            result["catchup_s"] = time.monotonic() - started
            await ctx.barrier("caught_up")
        result["fill_s"] = fill_s
        result["refused"] = sum(refused)
        result["sent"] = sum(n for _s, n in senders)
        return result

    def summarize(self, run: RunData) -> dict[str, Any]:
        r = run.results[0]
        received, sent, catchup = r["received"], r["sent"], r["catchup_s"]
        server_cpu = run.server_cpu_s(*self.cpu_phase)
        return {
            "msgs_per_s": round(received / catchup, 1) if catchup > 0 else None,
            "deliveries_per_s": round(received / catchup, 1) if catchup > 0 else None,
            **latency_fields(list(r["page_ms"])),
            "sent": sent,
            "received": received,
            "lost": sent - r["unique"],
            "dups": r["dups"],
            "gaps": r["gaps"],
            "errors": r["refused"],
            "pages": len(r["page_ms"]),
            "head": r["head"],
            "catchup_s": round(catchup, 4),
            "settle_s": run.extra.get("settle_s"),
            "fill_msgs_per_s": round(sent / r["fill_s"], 1) if r["fill_s"] > 0 else None,
            "server_cpu_us_per_msg": round(server_cpu / received * 1e6, 2) if server_cpu and received else None,
            "latency_of": self.latency_of,
            "_series": {"latency_ms": list(r["page_ms"])},
        }


async def _fill(http: aiohttp.ClientSession, url: str, k: int, sender: Account, n: int, to: str, window: int) -> int:
    """Send n messages, at most ``window`` unacknowledged; return how many were refused."""
    ws, _ = await connect(http, url, sender.token)
    try:
        return await send_windowed(
            ws, n, lambda i: send_frame(2 + i, to, f"{k} {i} {time.monotonic_ns()}", f"f{i}"), window, f"sender {k}"
        )
    finally:
        await ws.close()


async def _catch_up(
    http: aiohttp.ClientSession, url: str, device: Account, page: int, per_sender: list[int]
) -> dict[str, Any]:
    ws, ok = await connect(http, url, device.token)
    head = ok.data.inbox_seq if ok.data is not None else 0
    seen = [bytearray(n) for n in per_sender]
    page_ms = array("d")
    received = unique = dups = gaps = 0
    since, rid = 0, 2
    try:
        t = time.monotonic()
        await ws.send_str(sync_frame(rid, since, page))
        while True:
            while True:  # skip pushes (presence notices …) that arrive before the reply
                msg = await ws.receive()
                if msg.type is not _TEXT:
                    raise RuntimeError(f"connection ended while syncing ({msg.type.name})")
                frame = decode_reply(msg.data)
                if frame.rid == rid:
                    break
            page_ms.append((time.monotonic() - t) * 1000)
            if frame.t != "ok":
                raise RuntimeError(f"sync refused: {frame.code} {frame.message}")
            data = decode_page(frame.data)
            if data.has_more:
                # Ask for the next page before checking this one, as an app stores a page
                # while the next is on its way: the check is the client's work, not the
                # server's, and must not sit between two requests.
                rid += 1
                t = time.monotonic()
                await ws.send_str(sync_frame(rid, data.next_since, page))
            for ev in data.events:
                if ev.seq != since + 1:
                    gaps += 1
                since = ev.seq
                body = ev.data.body
                if ev.type != "message" or body is None:
                    continue
                received += 1
                k_s, i_s, _ = body.text.split(" ", 2)
                k, i = int(k_s), int(i_s)
                if seen[k][i]:
                    dups += 1
                else:
                    seen[k][i] = 1
                    unique += 1
            if since != data.next_since:
                gaps += 1  # the page's cursor must be its last event
            since = data.next_since
            if not data.has_more:
                break
    finally:
        await ws.close()
    return {"received": received, "unique": unique, "dups": dups, "gaps": gaps, "page_ms": page_ms, "head": head}
