"""``mixed``: the cluster's everyday load — one-to-one and group messages from the same users.

``--users`` users (default 20) are spread round-robin over the nodes (user i connects to
node i mod N, so with ``--nodes 3`` every group has members on every node) and join
``--groups`` groups of ``--group-min``..``--group-max`` members (default 4 groups of
10 to 20). Each message is, with probability ``--direct`` (default 0.6), a one-to-one
message to another random user, else a group message to one of its sender's groups; the
sender is drawn at random when paced and taken in turn when windowed. The plan (who
sends what to whom, and when) is drawn from ``--seed`` in the coordinator, so every run
of a configuration sends the same messages.

Two modes:

- ``--rate R`` (default 200): open loop. Message k leaves at ``k / R`` seconds whatever
  the replies, for ``--duration`` seconds; a sender with ``--window`` sends awaiting
  their ACK holds the next one back (a bounded queue, counted in ``behind_ms_max``, the
  longest a send left after its planned time). This is the latency figure.
- ``--rate 0``: as fast as the window allows: each user keeps ``--window`` sends awaiting
  their ACK, ``--messages`` messages per user in all. This is the throughput figure.

Reported: ``msgs_per_s`` (ACKs over the first send → last receipt), send → ACK p50/p99
(``ack_p50_ms``/``ack_p99_ms``), send → delivery p50/p99 (``p50_ms``/``p99_ms``, each
member's receipt counted), and ``lost`` (deliveries expected by the plan but not seen)
and ``dups`` (a receipt seen twice), both must be 0. Every user's one device is online,
so each one-to-one message is one delivery and each group message one per member but its
sender. Latencies are end to end: the text carries the sender's ``time.monotonic_ns``
(one clock for the machine, whatever process reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import time
from array import array
from typing import Any

import aiohttp

from yimbench.client import (
    ack_frame,
    decode_frame,
    group_send_frame,
    make_accounts,
    ping_frame,
    run_tag,
    send_frame,
)
from yimbench.rawws import RawWebSocket
from yimbench.runner import RunData, WorkerCtx
from yimbench.scenarios.base import (
    Scenario,
    close_sockets,
    latency_fields,
    load_span,
    open_sockets,
    settle_and_drain,
    split,
)
from yimbench.target import Target

_FIRST_RID = 2  # rid 1 is the auth frame
_KEEPALIVE_S = 20.0  # below the node's heartbeat_s (25 s)
_ACK_EVERY = 50


class MixedScenario(Scenario):
    name = "mixed"
    help = "users spread over the nodes: one-to-one and group messages, rate-limited or windowed"
    latency_of = "sender's send → ACK (ack_*) and → each recipient's receipt (p50..max)"
    baseline_ok = False  # the bare relay has no groups
    cpu_phase = ("connected", "done")
    columns = [
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("deliveries_per_s", "deliv/s", "{:,.0f}"),
        ("ack_p50_ms", "ack p50", "{:.1f}"),
        ("ack_p99_ms", "ack p99", "{:.1f}"),
        ("p50_ms", "dlv p50", "{:.1f}"),
        ("p99_ms", "dlv p99", "{:.1f}"),
        ("max_ms", "dlv max", "{:.0f}"),
        ("acked", "acked", "{}"),
        ("received", "recv", "{}"),
        ("lost", "lost", "{}"),
        ("dups", "dups", "{}"),
        ("errors", "errors", "{}"),
        ("behind_ms_max", "behind ms", "{:.0f}"),
        ("node_cpu_us_per_msg", "node µs/msg", "{:.0f}"),
        ("postgres_cpu_us_per_msg", "pg µs/msg", "{:.0f}"),
        ("redis_cpu_us_per_msg", "redis µs/msg", "{:.0f}"),
        ("node_cpu_pct", "nodes CPU%", "{:.0f}"),
        ("postgres_cpu_pct", "pg CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("mixed")
        g.add_argument("--users", type=int, default=20, help="users, spread round-robin over the nodes (default 20)")
        g.add_argument("--groups", type=int, default=4, help="groups among them (default 4)")
        g.add_argument("--group-min", type=int, default=10, help="smallest group (default 10)")
        g.add_argument("--group-max", type=int, default=20, help="largest group (default 20, at most --users)")
        g.add_argument("--direct", type=float, default=0.6, help="share of one-to-one messages (default 0.6)")
        g.add_argument(
            "--rate", type=float, default=200.0, help="messages/s over all users (default 200; 0: windowed, max)"
        )
        g.add_argument("--duration", type=float, default=30.0, help="with --rate: seconds of load (default 30)")
        g.add_argument("--messages", type=int, default=500, help="with --rate 0: messages per user (default 500)")
        g.add_argument("--window", type=int, default=10, help="sends awaiting their ACK per user (default 10)")
        g.add_argument("--seed", type=int, default=16, help="seed of the plan (default 16)")
        g.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late deliveries (default 10)")

    def validate(self) -> None:
        a = self.args
        if a.users < 2 or a.groups < 0 or a.window < 1 or a.messages < 1:
            raise ValueError("need --users >= 2, --groups >= 0, --window and --messages >= 1")
        if a.groups and not 2 <= a.group_min <= a.group_max <= a.users:
            raise ValueError("need 2 <= --group-min <= --group-max <= --users")
        if not 0.0 <= a.direct <= 1.0 or (a.groups == 0 and a.direct < 1.0):
            raise ValueError("--direct is a share in 0..1 (and 1 when there are no groups)")
        if a.rate < 0 or (a.rate and a.duration <= 0):
            raise ValueError("--rate must not be negative, --duration positive")

    def params(self) -> dict[str, Any]:
        a = self.args
        return {
            "users": a.users,
            "groups": a.groups,
            "group_sizes": f"{a.group_min}-{a.group_max}",
            "direct": a.direct,
            "rate": a.rate or None,
            "duration": a.duration if a.rate else None,
            "messages": None if a.rate else a.messages,
            "window": a.window,
            "seed": a.seed,
        }

    def connections(self) -> int:
        return self.args.users

    def plan(self) -> tuple[list[list[int]], list[tuple[float, int, int, int]]]:
        """(the members of each group; the messages in send order as (planned offset in s,
        sender, -1 - peer for one-to-one or group index, planned deliveries))."""
        a = self.args
        rng = random.Random(a.seed)
        groups = [sorted(rng.sample(range(a.users), rng.randint(a.group_min, a.group_max))) for _ in range(a.groups)]
        of_user: list[list[int]] = [[g for g, members in enumerate(groups) if u in members] for u in range(a.users)]
        total = round(a.rate * a.duration) if a.rate else a.messages * a.users
        msgs: list[tuple[float, int, int, int]] = []
        for k in range(total):
            at = k / a.rate if a.rate else 0.0
            sender = k % a.users if not a.rate else rng.randrange(a.users)
            if rng.random() < a.direct or not of_user[sender]:
                peer = rng.randrange(a.users - 1)
                peer += peer >= sender
                msgs.append((at, sender, -1 - peer, 1))
            else:
                g = rng.choice(of_user[sender])
                msgs.append((at, sender, g, len(groups[g]) - 1))
        return groups, msgs

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        tag = run_tag()
        accounts = [acc[0] for acc in await make_accounts(target.url, [f"x{tag}u{i}" for i in range(a.users)])]
        groups, msgs = self.plan()
        conv_ids = []
        async with aiohttp.ClientSession(target.urls[0]) as http:
            for g, members in enumerate(groups):
                owner = accounts[members[0]]
                r = await http.post(
                    "/api/v1/groups",
                    json={"name": f"mixed {tag} {g}", "members": [accounts[m].user_id for m in members[1:]]},
                    headers={"Authorization": f"Bearer {owner.token}"},
                )
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"creating group {g} failed: {body}")
                conv_ids.append(body["group"]["conv_id"])
        urls = target.urls
        users = [(u, accounts[u], urls[u % len(urls)]) for u in range(a.users)]
        # each sender's messages, in plan order: (global id, planned offset, frame target)
        by_sender: dict[int, list[tuple[int, float, int]]] = {u: [] for u in range(a.users)}
        for k, (at, sender, dest, _n) in enumerate(msgs):
            by_sender[sender].append((k, at, dest))
        return [
            {
                "users": chunk,
                "user_ids": [acc.user_id for acc in accounts],
                "conv_ids": conv_ids,
                "sends": {u: by_sender[u] for u, _acc, _url in chunk},
                "total": len(msgs),
                "expected_here": sum(
                    1
                    for _at, sender, dest, _n in msgs
                    for u, _acc, _url in chunk
                    if (dest < 0 and -1 - dest == u) or (dest >= 0 and u != sender and u in groups[dest])
                ),
                "window": a.window,
                "paced": bool(a.rate),
                "drain": a.drain,
            }
            for chunk in split(users, a.procs)
        ]

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        return await _MixedWorker(ctx, payload).run()

    def summarize(self, run: RunData) -> dict[str, Any]:
        rs = run.results
        _groups, msgs = self.plan()
        expected = sum(n for _at, _s, _d, n in msgs)
        sent = sum(r["sent"] for r in rs)
        acked = sum(r["acked"] for r in rs)
        received = sum(r["received"] for r in rs)
        elapsed = load_span(rs)
        lat: list[float] = []
        ack_lat: list[float] = []
        for r in rs:
            lat.extend(r["lat"])
            ack_lat.extend(r["ack_lat"])
        ack = latency_fields(ack_lat)
        return {
            "msgs_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
            "deliveries_per_s": round(received / elapsed, 1) if elapsed > 0 else None,
            **latency_fields(lat),
            "ack_p50_ms": ack["p50_ms"],
            "ack_p99_ms": ack["p99_ms"],
            "ack_max_ms": ack["max_ms"],
            "planned": len(msgs),
            "sent": sent,
            "acked": acked,
            "received": received,
            "expected_deliveries": expected,
            "lost": expected - received if sent == len(msgs) else None,
            "dups": sum(r["dups"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "error_codes": _merge(r["error_codes"] for r in rs),
            "group_messages": sum(1 for _at, _s, dest, _n in msgs if dest >= 0),
            "behind_ms_max": round(max((r["behind_ms_max"] for r in rs), default=0.0), 1),
            "elapsed_s": round(elapsed, 3),
            "latency_of": self.latency_of,
        }


def _merge(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for code, n in c.items():
            out[code] = out.get(code, 0) + n
    return out


class _User:
    """One user's connection: its sends (and their window), and what it has received."""

    __slots__ = ("acked", "idx", "inflight", "max_seq", "next_i", "send_ts", "sends", "since_ack", "waiter", "ws")

    def __init__(self, idx: int, ws: RawWebSocket, sends: list[tuple[int, float, int]]) -> None:
        self.idx = idx
        self.ws = ws
        self.sends = sends
        self.send_ts = array("q", bytes(8 * len(sends)))
        self.next_i = self.inflight = self.acked = 0
        self.max_seq = self.since_ack = 0
        self.waiter: asyncio.Future[None] | None = None


class _MixedWorker:
    """The users of one load-generator process, on callbacks of the lean client (as in
    ``pairs``): replies and pushes are handled inside ``data_received``."""

    def __init__(self, ctx: WorkerCtx, payload: dict[str, Any]) -> None:
        self.ctx = ctx
        self.p = payload
        self.window: int = payload["window"]
        self.user_ids: list[str] = payload["user_ids"]
        self.conv_ids: list[str] = payload["conv_ids"]
        self.seen = bytearray(payload["total"] * len(payload["users"]))
        self.slot = {u: k for k, (u, _acc, _url) in enumerate(payload["users"])}
        self.lat = array("d")
        self.ack_lat = array("d")
        self.sent = self.acked = self.received = self.dups = self.errors = 0
        self.error_codes: dict[str, int] = {}
        self.first_send = self.last_event = 0.0
        self.behind_ms_max = 0.0
        self.my_sends = sum(len(s) for s in payload["sends"].values())
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        await ctx.barrier("ready")
        socks = await open_sockets(ctx, [(u, url, acc.token) for u, acc, url in self.p["users"]])
        tasks: list[asyncio.Task[None]] = []
        try:
            users = [_User(u, socks[u], self.p["sends"][u]) for u, _acc, _url in self.p["users"]]
            await ctx.barrier("connected")
            for user in users:
                user.ws.deliver_to(functools.partial(self._on_frame, user))
            tasks.append(asyncio.create_task(self._keepalive(users)))
            if self.p["paced"]:
                start = time.monotonic()
                tasks += [asyncio.create_task(self._paced(user, start)) for user in users if user.sends]
            else:
                for user in users:
                    for _ in range(min(self.window, len(user.sends))):
                        self._send(user)
            if not self.my_sends:
                self.settled.set_result(None)
            await settle_and_drain(ctx, self.settled, self.p["drain"], lambda: self.received, self.p["expected_here"])
            await ctx.barrier("done")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_sockets(socks)
        return {
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "dups": self.dups,
            "errors": self.errors,
            "error_codes": self.error_codes,
            "first_send": self.first_send,
            "last_event": self.last_event,
            "behind_ms_max": self.behind_ms_max,
            "lat": self.lat,
            "ack_lat": self.ack_lat,
        }

    def _send(self, user: _User) -> None:
        i = user.next_i
        user.next_i = i + 1
        user.inflight += 1
        k, _at, dest = user.sends[i]
        t = time.monotonic_ns()
        user.send_ts[i] = t
        if not self.first_send:
            self.first_send = t / 1e9
        self.sent += 1
        text = f"{user.idx} {k} {t}"
        if dest < 0:
            frame = send_frame(_FIRST_RID + i, self.user_ids[-1 - dest], text, f"c{k}")
        else:
            frame = group_send_frame(_FIRST_RID + i, self.conv_ids[dest], text, f"c{k}")
        user.ws.send_text(frame)

    async def _paced(self, user: _User, start: float) -> None:
        loop = asyncio.get_running_loop()
        for _k, at, _dest in user.sends:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while user.inflight >= self.window:
                user.waiter = loop.create_future()
                await user.waiter
                user.waiter = None
            behind = (time.monotonic() - start - at) * 1000.0
            if behind > self.behind_ms_max:
                self.behind_ms_max = behind
            self._send(user)

    async def _keepalive(self, users: list[_User]) -> None:
        """Ping now and then, as real clients do (a long paced run must not look idle)."""
        while True:
            await asyncio.sleep(_KEEPALIVE_S)
            for user in users:
                if not user.ws.is_closed:
                    user.ws.send_text(ping_frame(1))

    def _on_frame(self, user: _User, data: bytes) -> None:
        now = time.monotonic_ns()
        frame = decode_frame(data)
        if frame.t in ("ok", "err"):
            i = frame.rid - _FIRST_RID if isinstance(frame.rid, int) else -1
            if not 0 <= i < len(user.sends):
                return
            if frame.t == "ok":
                self.acked += 1
                self.ack_lat.append((now - user.send_ts[i]) / 1e6)
                self.last_event = max(self.last_event, now / 1e9)
            else:
                self.errors += 1
                self.error_codes[frame.code] = self.error_codes.get(frame.code, 0) + 1
            user.inflight -= 1
            waiter = user.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if not self.p["paced"] and user.next_i < len(user.sends):
                self._send(user)
            if self.acked + self.errors >= self.my_sends and not self.settled.done():
                self.settled.set_result(None)
            return
        if frame.data is None or frame.data.body is None or frame.type not in ("message", "group_message"):
            return
        parts = frame.data.body.text.split(" ", 3)
        if len(parts) < 3 or not parts[0].isdigit():
            return  # system entries (a group's creation)
        k, ts = int(parts[1]), int(parts[2])
        slot = self.slot[user.idx] * self.p["total"] + k
        if self.seen[slot]:
            self.dups += 1
            return
        self.seen[slot] = 1
        self.received += 1
        self.lat.append((now - ts) / 1e6)
        self.last_event = max(self.last_event, now / 1e9)
        if frame.t == "event":
            user.max_seq = frame.seq
            user.since_ack += 1
            if user.since_ack >= _ACK_EVERY:
                user.since_ack = 0
                user.ws.send_text(ack_frame(_FIRST_RID + len(user.sends) + 1, user.max_seq))
