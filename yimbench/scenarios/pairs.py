"""``pairs``: one-to-one messaging between N sender→receiver pairs.

Each sender keeps at most ``--window`` messages in flight, where in flight means sent and
not yet received by its receiver (so the window closes the loop through the server and
back). With ``--rate`` the senders are paced to that many messages per second in total,
still never above the window. The message text carries the sender's clock
(``time.monotonic_ns``, one clock for the whole machine), so latency is end to end: the
sender's send → the receiver's receipt of the pushed event. Receivers ack their inbox
seq every ``--ack-every`` events, as real clients do.

Both ends of a pair live in the same load-generator process; pairs are spread over
``--procs`` processes round-robin. The hot path is callbacks on the lean client of
yimbench/rawws.py: each frame is handled inside ``data_received``, and a released window
slot sends the next message right there — no task or future per message — so the load
generator's CPU per message stays well below the server's.

With ``--server ejabberd`` the same pairs, window, pacing and text run over XMPP against a
private ejabberd (yimbench/ejabberd.py) with the client of yimbench/xmpp.py; its docstring
says what XMPP cannot do alike (no per-message ack from the server, no read acks).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from array import array
from typing import Any

import aiohttp

from yimbench.client import (
    Account,
    ack_frame,
    decode_frame,
    make_accounts,
    ping_frame,
    raw_connect,
    run_tag,
    send_frame,
)
from yimbench.rawws import RawWebSocket
from yimbench.runner import RunData, WorkerCtx
from yimbench.scenarios.base import Scenario, WindowedSends, latency_fields, split
from yimbench.target import Target

_FIRST_RID = 2  # rid 1 is the auth frame
_KEEPALIVE_S = 20.0  # below the node's heartbeat_s (25 s)


async def add_pushers(url: str, accounts: list[Account]) -> None:
    """A Web Push pusher for each device, to a loopback port nobody listens on: the devices stay
    connected in the run, so the worker must never send to it (a send would be a refused
    connection, counted as a retry in yim_pushes_total)."""
    async with aiohttp.ClientSession(url) as http:
        for i, acc in enumerate(accounts):
            body = {"kind": "webpush", "endpoint": f"http://127.0.0.1:9/push/{i}", "p256dh": "AAAA", "auth": "AAAA"}
            r = await http.put("/api/v1/me/pusher", json=body, headers={"Authorization": f"Bearer {acc.token}"})
            if r.status != 200:
                raise RuntimeError(f"registering a pusher: HTTP {r.status} {await r.text()}")
            r.release()


class PairsScenario(Scenario):
    name = "pairs"
    help = "one-to-one messaging: N sender→receiver pairs, a window of messages in flight each"
    latency_of = "sender's send → receiver's receipt"
    cpu_phase = ("connected", "done")
    columns = [
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("deliveries_per_s", "deliv/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.2f}"),
        ("p95_ms", "p95 ms", "{:.2f}"),
        ("p99_ms", "p99 ms", "{:.2f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("sent", "sent", "{}"),
        ("received", "recv", "{}"),
        ("lost", "lost", "{}"),
        ("dups", "dups", "{}"),
        ("node_cpu_us_per_msg", "node µs/msg", "{:.1f}"),
        ("postgres_cpu_us_per_msg", "pg µs/msg", "{:.1f}"),
        ("redis_cpu_us_per_msg", "redis µs/msg", "{:.1f}"),
        ("stack_cpu_us_per_msg", "all µs/msg", "{:.1f}"),
        ("server_rss_mb", "srv MB", "{:.0f}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("server_loop_cpu_pct", "loop CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("pairs")
        g.add_argument("--pairs", type=int, default=50, help="sender→receiver pairs (default 50)")
        g.add_argument("--messages", type=int, default=1000, help="messages per sender (default 1000)")
        g.add_argument("--window", type=int, default=10, help="messages in flight per sender (default 10)")
        g.add_argument(
            "--rate",
            type=float,
            default=0.0,
            help="total messages/s over all senders (default 0: as fast as the window allows)",
        )
        g.add_argument("--pad", type=int, default=0, help="extra characters per message text (default 0)")
        g.add_argument("--ack-every", type=int, default=100, help="receivers ack after this many events (default 100)")
        g.add_argument(
            "--drain",
            type=float,
            default=5.0,
            help="seconds to wait for late deliveries after the last ack (default 5)",
        )
        g.add_argument(
            "--push",
            action="store_true",
            help="a node started here pushes (Web Push), and every receiver has a pusher: the push worker"
            " then looks at each receiver's new entries (connected: none is sent)",
        )

    def validate(self) -> None:
        a = self.args
        if a.pairs < 1 or a.messages < 1 or a.window < 1 or a.ack_every < 1:
            raise ValueError("--pairs, --messages, --window and --ack-every must be at least 1")
        if a.rate < 0 or a.pad < 0:
            raise ValueError("--rate and --pad must not be negative")
        if a.push and "ejabberd" in str(a.server).split(","):
            raise ValueError("--push needs a yim node: drop ejabberd from --server")

    def params(self) -> dict[str, Any]:
        a = self.args
        return {
            "pairs": a.pairs,
            "messages": a.messages,
            "window": a.window,
            "rate": a.rate or None,
            "pad": a.pad,
            "push": a.push,
        }

    def node_env(self) -> dict[str, str]:
        if not self.args.push:
            return {}
        return {
            "YIM_PUSH_ENABLED": "true",
            "YIM_PUSH_VAPID_SUBJECT": "mailto:bench@localhost",
            "YIM_PUSH_WEBPUSH_ALLOW_HTTP": "true",
        }

    def connections(self) -> int:
        return 2 * self.args.pairs

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        if target.system == "ejabberd":
            return await self._prepare_xmpp(target)
        a = self.args
        tag = run_tag()
        names = [f"b{tag}s{i}" for i in range(a.pairs)] + [f"b{tag}r{i}" for i in range(a.pairs)]
        accounts = [acc[0] for acc in await make_accounts(target.url, names)]
        senders, receivers = accounts[: a.pairs], accounts[a.pairs :]
        if a.push:
            await add_pushers(target.url, receivers)
        pairs = list(zip(range(a.pairs), senders, receivers, strict=True))
        interval = a.pairs / a.rate if a.rate else 0.0
        return [
            {
                "url": target.url,
                "pairs": chunk,
                "messages": a.messages,
                "window": a.window,
                "interval": interval,
                "pad": " " + "x" * a.pad if a.pad else "",
                "ack_every": a.ack_every,
                "drain": a.drain,
            }
            for chunk in split(pairs, a.procs)
        ]

    async def _prepare_xmpp(self, target: Target) -> list[Any]:
        """The accounts by in-band registration, and the payloads of yimbench/xmpp.py's worker."""
        from yimbench.ejabberd import DOMAIN
        from yimbench.xmpp import register_all

        a = self.args
        host, _, port = target.url.removeprefix("xmpp://").rpartition(":")
        tag = run_tag()
        senders = [f"b{tag}s{i}" for i in range(a.pairs)]
        receivers = [f"b{tag}r{i}" for i in range(a.pairs)]
        await register_all(host, int(port), DOMAIN, senders + receivers)
        pairs = list(zip(range(a.pairs), senders, receivers, strict=True))
        interval = a.pairs / a.rate if a.rate else 0.0
        return [
            {
                "xmpp": True,
                "host": host,
                "port": int(port),
                "domain": DOMAIN,
                "pairs": chunk,
                "messages": a.messages,
                "window": a.window,
                "interval": interval,
                "pad": " " + "x" * a.pad if a.pad else "",
                "drain": a.drain,
            }
            for chunk in split(pairs, a.procs)
        ]

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        if payload.get("xmpp"):
            from yimbench.xmpp import run_pairs

            return await run_pairs(ctx, payload)
        return await _PairsWorker(ctx, payload).run()

    def summarize(self, run: RunData) -> dict[str, Any]:
        rs = run.results
        total = sum(r["sent"] for r in rs)
        acked = sum(r["acked"] for r in rs)
        received = sum(r["received"] for r in rs)
        firsts = [r["first_send"] for r in rs if r["first_send"]]
        lasts = [r["last_event"] for r in rs if r["last_event"]]
        elapsed = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
        lat: list[float] = []
        ack_lat: list[float] = []
        recv_times: list[float] = []
        for r in rs:
            lat.extend(r["lat"])
            ack_lat.extend(r["ack_lat"])
            recv_times.extend(r["recv_times"])
        server_cpu = run.server_cpu_s(*self.cpu_phase)
        client_cpu = run.client_cpu_s(*self.cpu_phase)
        ack = latency_fields(ack_lat)
        return {
            "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
            "deliveries_per_s": round(received / elapsed, 1) if elapsed > 0 else None,
            **latency_fields(lat),
            "ack_p50_ms": ack["p50_ms"],
            "ack_p99_ms": ack["p99_ms"],
            "sent": total,
            "acked": acked,
            "received": received,
            "lost": total - received,
            "dups": sum(r["dups"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "elapsed_s": round(elapsed, 3),
            "server_cpu_us_per_msg": round(server_cpu / acked * 1e6, 2) if server_cpu and acked else None,
            "client_cpu_us_per_msg": round(client_cpu / acked * 1e6, 2) if client_cpu and acked else None,
            "latency_of": self.latency_of,
            "_series": {"latency_ms": lat, "recv_times": recv_times, "t0": min(firsts) if firsts else 0.0},
        }


class _Pair:
    __slots__ = (
        "acked",
        "idx",
        "inflight",
        "max_seq",
        "next_i",
        "receiver",
        "seen",
        "send_ts",
        "sender",
        "since_ack",
        "to",
        "waiter",
    )

    def __init__(self, idx: int, to: str, n: int) -> None:
        self.idx = idx
        self.to = to
        self.sender: RawWebSocket | None = None
        self.receiver: RawWebSocket | None = None
        self.next_i = 0
        self.inflight = 0
        self.acked = 0
        self.max_seq = 0
        self.since_ack = 0
        self.seen = bytearray(n)
        self.send_ts = array("q", bytes(8 * n))
        self.waiter: asyncio.Future[None] | None = None


class _PairsWorker(WindowedSends):
    def __init__(self, ctx: WorkerCtx, payload: dict[str, Any]) -> None:
        self.ctx = ctx
        self.url: str = payload["url"]
        self.n: int = payload["messages"]
        self.window: int = payload["window"]
        self.interval: float = payload["interval"]
        self.pad: str = payload["pad"]
        self.ack_every: int = payload["ack_every"]
        self.drain: float = payload["drain"]
        self.accounts: list[tuple[int, Account, Account]] = payload["pairs"]
        self.pairs = {idx: _Pair(idx, r.user_id, self.n) for idx, _s, r in self.accounts}
        self.total = self.n * len(self.pairs)
        self.lat = array("d")
        self.ack_lat = array("d")
        self.recv_times = array("d")
        self.acked = self.received = self.dups = self.errors = self.sent = 0
        self.first_send = 0.0
        self.last_event = 0.0
        self.error_codes: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        self.all_settled: asyncio.Future[None] = loop.create_future()  # every send acked or refused
        self.all_received: asyncio.Future[None] = loop.create_future()

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        await ctx.barrier("ready")
        sem = asyncio.Semaphore(100)

        async def open_pair(idx: int, s: Account, r: Account) -> None:
            async with sem:
                p = self.pairs[idx]
                p.receiver, _ = await raw_connect(self.url, r.token, keep_reading=True)
                p.sender, _ = await raw_connect(self.url, s.token, keep_reading=True)

        try:
            await asyncio.wait_for(
                asyncio.gather(*(open_pair(*acc) for acc in self.accounts)), timeout=max(0.1, ctx.remaining())
            )
            await ctx.barrier("connected")
            for p in self.pairs.values():
                assert p.sender is not None and p.receiver is not None
                p.sender.deliver_to(functools.partial(self._on_sender_frame, p))
                p.receiver.deliver_to(functools.partial(self._on_receiver_frame, p))
            tasks = [asyncio.create_task(self._keepalive())]
            tasks += self._start_sending()
            try:
                await asyncio.wait_for(asyncio.shield(self.all_settled), timeout=max(0.0, ctx.remaining()))
                await asyncio.wait_for(
                    asyncio.shield(self.all_received), timeout=max(0.0, min(self.drain, ctx.remaining()))
                )
            except TimeoutError:
                pass
            for p in self.pairs.values():
                if p.since_ack and p.receiver is not None and not p.receiver.is_closed:
                    p.receiver.send_text(ack_frame(_FIRST_RID + self.n + 1, p.max_seq))
            await ctx.barrier("done")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            closing = [ws.close() for p in self.pairs.values() for ws in (p.sender, p.receiver) if ws is not None]
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=10)
        return {
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "dups": self.dups,
            "errors": self.errors,
            "error_codes": self.error_codes,
            "first_send": self.first_send,
            "last_event": self.last_event,
            "lat": self.lat,
            "ack_lat": self.ack_lat,
            "recv_times": self.recv_times,
        }

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
        p.sender.send_text(send_frame(_FIRST_RID + i, p.to, f"{p.idx} {i} {t}{self.pad}", f"c{i}"))

    async def _keepalive(self) -> None:
        """Ping every connection now and then, as real clients do: a paced run can outlast
        the node's idle timeout (75 s) on a receiver that has nothing to send, and the
        node would rightly close it. Rid 1 (the auth frame's) is ignored by the readers."""
        while True:
            await asyncio.sleep(_KEEPALIVE_S)
            for p in self.pairs.values():
                for ws in (p.sender, p.receiver):
                    if ws is not None and not ws.is_closed:
                        ws.send_text(ping_frame(1))

    def _check(self) -> None:
        if self.acked + self.errors >= self.total and not self.all_settled.done():
            self.all_settled.set_result(None)
        if self.received + self.errors >= self.total and not self.all_received.done():
            self.all_received.set_result(None)

    def _on_sender_frame(self, p: _Pair, data: bytes) -> None:
        """A reply to one of ``p``'s sends: its ACK, or the error that frees its slot."""
        now = time.monotonic_ns()
        frame = decode_frame(data)
        i = frame.rid - _FIRST_RID if isinstance(frame.rid, int) else -1
        if not 0 <= i < self.n:
            return
        if frame.t == "ok":
            self.acked += 1
            self.ack_lat.append((now - p.send_ts[i]) / 1e6)
            self.last_event = max(self.last_event, now / 1e9)
        else:
            self.errors += 1
            self.error_codes[frame.code] = self.error_codes.get(frame.code, 0) + 1
            self._release(p)
            if not self.interval and p.next_i < self.n:
                self._send(p)
        self._check()

    def _on_receiver_frame(self, p: _Pair, data: bytes) -> None:
        """A frame pushed to ``p``'s receiver: a message event frees a slot of its sender."""
        now = time.monotonic_ns()
        frame = decode_frame(data)
        if frame.t != "event" or frame.data is None or frame.data.body is None:
            return
        n = self.n
        idx_s, i_s, ts_s = frame.data.body.text.split(" ", 3)[:3]
        src = self.pairs.get(int(idx_s))
        i = int(i_s)
        if src is None or not 0 <= i < n:
            return
        if src.seen[i]:
            self.dups += 1
            return
        src.seen[i] = 1
        self.received += 1
        self.lat.append((now - int(ts_s)) / 1e6)
        self.recv_times.append(now / 1e9)
        self.last_event = max(self.last_event, now / 1e9)
        p.max_seq = frame.seq
        p.since_ack += 1
        if p.since_ack >= self.ack_every:
            p.since_ack = 0
            assert p.receiver is not None
            p.receiver.send_text(ack_frame(_FIRST_RID + n + 1, p.max_seq))
        self._release(src)
        if not self.interval and src.next_i < n:
            self._send(src)
        self._check()
