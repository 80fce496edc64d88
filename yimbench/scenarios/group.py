"""``group``: one group of ``--members`` online members, ``--senders`` of them sending.

Each sender keeps at most ``--window`` messages awaiting their ACK. Every other member's
connection receives every message: under write fan-out as an inbox ``event`` frame
(a copy in every member's inbox), under read fan-out as a ``group_message`` notice (one
stored copy, the same bytes pushed to every member). ``--fanout write|read`` starts the
node with a threshold that forces the mode; ``auto`` keeps the node's default (500). The
message text carries the sender's clock, so latency is end to end (sender's send → a
member's receipt); ``deliveries_per_s`` counts receipts by members.

``store_writes_per_s`` is the rows the node inserted while the load ran (its
``yim_messages_in_total`` + ``yim_deliveries_total`` counters, read from ``/metrics`` at
the ``connected`` and ``done`` barriers): one ``messages`` row per message, plus one
``inbox`` row per member under write fan-out. Each inbox row also advances that member's
inbox head (an ``UPDATE users``), which is not counted.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import aiohttp

from yimbench.client import Account, ack_frame, decode_frame, group_send_frame, make_accounts, run_tag
from yimbench.rawws import RawWebSocket
from yimbench.runner import Coordinator, RunData, WorkerCtx
from yimbench.scenarios.base import (
    Scenario,
    Tally,
    add_fanout_arguments,
    close_sockets,
    create_group,
    fanout_env,
    gathered,
    latency_fields,
    load_span,
    open_sockets,
    split,
)
from yimbench.target import Target, is_yim, store_counters

_FIRST_RID = 2  # rid 1 is the auth frame


class GroupScenario(Scenario):
    name = "group"
    help = "group chat: M online members, S senders, write or read fan-out"
    latency_of = "sender's send → each member's receipt"
    baseline_ok = False  # the bare relay has no groups
    cpu_phase = ("connected", "done")
    columns = [
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("deliveries_per_s", "deliv/s", "{:,.0f}"),
        ("store_writes_per_s", "store w/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.2f}"),
        ("p99_ms", "p99 ms", "{:.2f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("sent", "sent", "{}"),
        ("received", "recv", "{}"),
        ("lost", "lost", "{}"),
        ("dups", "dups", "{}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("group")
        g.add_argument("--members", type=int, default=100, help="online members, senders included (default 100)")
        g.add_argument("--senders", type=int, default=2, help="members that send (default 2)")
        g.add_argument("--messages", type=int, default=500, help="messages per sender (default 500)")
        g.add_argument("--window", type=int, default=10, help="messages awaiting their ACK per sender (default 10)")
        add_fanout_arguments(g)
        g.add_argument("--ack-every", type=int, default=100, help="members ack after this many events (default 100)")

    def validate(self) -> None:
        a = self.args
        if a.members < 2 or not 1 <= a.senders <= a.members or a.messages < 1 or a.window < 1:
            raise ValueError("need --members >= 2, 1 <= --senders <= --members, --messages and --window >= 1")

    def params(self) -> dict[str, Any]:
        a = self.args
        return {
            "members": a.members,
            "senders": a.senders,
            "messages": a.messages,
            "window": a.window,
            "fanout": a.fanout,
        }

    def node_env(self) -> dict[str, str]:
        return fanout_env(self.args.fanout)

    def connections(self) -> int:
        return self.args.members

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        tag = run_tag()
        accounts = [acc[0] for acc in await make_accounts(target.url, [f"g{tag}m{i}" for i in range(a.members)])]
        owner = accounts[0]
        async with aiohttp.ClientSession(target.url) as http:
            body = await create_group(http, owner, accounts[1:], f"bench {tag}")
        conv_id = body["group"]["conv_id"]
        indexed = list(enumerate(accounts))
        return [
            {
                "url": target.url,
                "conv_id": conv_id,
                "members": chunk,
                "senders": a.senders,
                "messages": a.messages,
                "window": a.window,
                "ack_every": a.ack_every,
                "drain": a.drain,
                "expected": a.senders * a.messages * (a.members - 1),
                "fanout": body["group"]["fanout"],
            }
            for chunk in split(indexed, a.procs)
        ]

    def on_barrier(self, name: str, coordinator: Coordinator) -> None:
        # Read while every worker waits, so the scrape is outside the measured phase.
        if name in ("connected", "done") and is_yim(coordinator.target.system):
            coordinator.extra[f"counters_{name}"] = store_counters(coordinator.target.url)

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        return await _GroupWorker(ctx, payload).run()

    def summarize(self, run: RunData) -> dict[str, Any]:
        rs = run.results
        sent = sum(r["sent"] for r in rs)
        acked = sum(r["acked"] for r in rs)
        received = sum(r["received"] for r in rs)
        expected = self.args.senders * self.args.messages * (self.args.members - 1)
        elapsed = load_span(rs)
        lat = gathered(rs, "lat")
        rows = store_rows(run)
        return {
            "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
            "deliveries_per_s": round(received / elapsed, 1) if elapsed > 0 else None,
            "store_writes_per_s": round(sum(rows) / elapsed, 1) if rows and elapsed > 0 else None,
            "store_message_rows": rows[0] if rows else None,
            "store_inbox_rows": rows[1] if rows else None,
            **latency_fields(lat),
            "sent": sent,
            "acked": acked,
            "received": received,
            "lost": expected - received if sent == self.args.senders * self.args.messages else None,
            "dups": sum(r["dups"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "elapsed_s": round(elapsed, 3),
            "fanout_mode": rs[0]["fanout"] if rs else None,
            "latency_of": self.latency_of,
        }


def store_rows(run: RunData) -> tuple[int, int] | None:
    """(message rows, inbox rows) the node wrote between the ``connected`` and ``done``
    barriers, from its counters; None when they were not read (the relay)."""
    a, b = run.extra.get("counters_connected"), run.extra.get("counters_done")
    if a is None or b is None:
        return None
    return (
        round(b["yim_messages_in_total"] - a["yim_messages_in_total"]),
        round(b["yim_deliveries_total"] - a["yim_deliveries_total"]),
    )


class _Member:
    """One member's connection and what its reader has seen; a sender's window too."""

    __slots__ = ("idx", "max_seq", "next_i", "seen", "since_ack", "ws")

    def __init__(self, idx: int, ws: RawWebSocket, seen_size: int) -> None:
        self.idx = idx
        self.ws = ws
        self.seen = bytearray(seen_size)  # one byte per (sender, message)
        self.since_ack = self.max_seq = 0
        self.next_i = 0  # a sender's next message; its window reopens with each ACK


class _GroupWorker(Tally):
    """The members of one load-generator process, on callbacks (as in ``pairs``): each
    frame is handled inside ``data_received``, and an ACK sends the sender's next message
    right there."""

    def __init__(self, ctx: WorkerCtx, payload: dict[str, Any]) -> None:
        self.ctx = ctx
        self.p = payload
        self.n: int = payload["messages"]
        self.senders: int = payload["senders"]
        self.window: int = payload["window"]
        self.ack_every: int = payload["ack_every"]
        self.conv_id: str = payload["conv_id"]
        self.members: list[tuple[int, Account]] = payload["members"]
        super().__init__(sum(1 for idx, _ in self.members if idx < self.senders) * self.n)

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        await ctx.barrier("ready")
        socks = await open_sockets(ctx, [(idx, self.p["url"], acc.token) for idx, acc in self.members])
        try:
            members = [_Member(idx, socks[idx], self.senders * self.n) for idx, _ in self.members]
            await ctx.barrier("connected")
            for m in members:
                m.ws.deliver_to(functools.partial(self._on_frame, m))
            for m in members:
                if m.idx < self.senders:
                    for _ in range(min(self.window, self.n)):
                        self._send(m)
            expected_here = self.senders * self.n * len(self.members) - self.my_sends
            await self.settle_and_drain(ctx, self.p["drain"], expected_here)
            await ctx.barrier("done")
        finally:
            await close_sockets(socks)
        return {**self.counts(), "fanout": self.p["fanout"]}

    def _send(self, m: _Member) -> None:
        i = m.next_i
        m.next_i = i + 1
        t = time.monotonic_ns()
        self.sending(t / 1e9)
        m.ws.send_text(group_send_frame(_FIRST_RID + i, self.conv_id, f"{m.idx} {i} {t}", f"c{i}"))

    def _on_frame(self, m: _Member, data: bytes) -> None:
        now = time.monotonic_ns()
        frame = decode_frame(data)
        n = self.n
        if frame.t in ("ok", "err"):
            if isinstance(frame.rid, int) and _FIRST_RID <= frame.rid < _FIRST_RID + n:
                if m.next_i < n:
                    self._send(m)
                self.answered(frame.t == "ok")
            return
        if frame.data is None or frame.data.body is None or frame.type not in ("message", "group_message"):
            return
        parts = frame.data.body.text.split(" ", 3)
        if len(parts) < 3:
            return  # system entries
        src, i, ts = int(parts[0]), int(parts[1]), int(parts[2])
        if not (0 <= src < self.senders and 0 <= i < n):
            return
        k = src * n + i
        seen = m.seen
        if seen[k]:
            self.dups += 1
            return
        seen[k] = 1
        self.received += 1
        self.lat.append((now - ts) / 1e6)
        self.last_event = max(self.last_event, now / 1e9)
        if frame.t == "event":
            m.max_seq = frame.seq
            m.since_ack += 1
            if m.since_ack >= self.ack_every:
                m.since_ack = 0
                m.ws.send_text(ack_frame(_FIRST_RID + n + 1, m.max_seq))
