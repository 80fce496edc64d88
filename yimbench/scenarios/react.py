"""``react``: reaction throughput in one group of ``--members`` online members.

The owner posts ``--targets`` messages; then ``--reactors`` members each make
``--reactions`` reaction requests, keeping at most ``--window`` awaiting their reply,
toggling one emoji on the messages in turn (add on m0, remove on m0, add on m1, …) so
that every request changes something. Every other member's connection receives every
change: under read fan-out (the default for a group above ``group_write_fanout_max``) as
one ``reaction`` notice, the same bytes pushed to all, with nothing written per member;
under write fan-out as an inbox ``reaction`` event per member. ``--fanout`` forces the
mode as in ``group``.

The per-user reaction limit is off (like the bench's other per-user limits): the run
measures the server, not the abuse limit. Latency is end to end (a reactor's request →
a member's receipt of that change), matched by (reactor, message, add/remove) in order.
"""

from __future__ import annotations

import argparse
import functools
import time
from array import array
from typing import Any

import aiohttp
import msgspec

from yimbench.client import Account, make_accounts, run_tag
from yimbench.rawws import RawWebSocket
from yimbench.runner import RunData, WorkerCtx
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
from yimbench.target import Target

_FIRST_RID = 2  # rid 1 is the auth frame
_EMOJI = "👍"


class _Change(msgspec.Struct):
    user_id: str = ""
    seq: int = 0
    op: str = ""


class _Frame(msgspec.Struct):
    t: str
    rid: int | str | None = None
    type: str = ""
    code: str = ""
    data: _Change | None = None


_decode = msgspec.json.Decoder(_Frame).decode


def react_frame(rid: int, conv_id: str, seq: int, remove: bool) -> str:
    flag = ',"remove":true' if remove else ""
    return f'{{"op":"react","rid":{rid},"conv_id":"{conv_id}","seq":{seq},"emoji":"{_EMOJI}"{flag}}}'


class ReactScenario(Scenario):
    name = "react"
    help = "reactions: M online members, R of them reacting, read or write fan-out"
    latency_of = "reactor's request → each member's receipt of the change"
    baseline_ok = False  # the bare relay has no reactions
    cpu_phase = ("connected", "done")
    columns = [
        ("reactions_per_s", "react/s", "{:,.0f}"),
        ("deliveries_per_s", "deliv/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.2f}"),
        ("p99_ms", "p99 ms", "{:.2f}"),
        ("max_ms", "max ms", "{:.1f}"),
        ("acked", "acked", "{}"),
        ("received", "recv", "{}"),
        ("lost", "lost", "{}"),
        ("errors", "errors", "{}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("react")
        g.add_argument("--members", type=int, default=1000, help="online members, reactors included (default 1000)")
        g.add_argument("--reactors", type=int, default=10, help="members that react (default 10)")
        g.add_argument("--reactions", type=int, default=200, help="reaction requests per reactor (default 200)")
        g.add_argument("--targets", type=int, default=20, help="messages reacted to (default 20)")
        g.add_argument("--window", type=int, default=4, help="requests awaiting their reply per reactor (default 4)")
        add_fanout_arguments(g)

    def validate(self) -> None:
        a = self.args
        if a.members < 2 or not 1 <= a.reactors <= a.members or min(a.reactions, a.targets, a.window) < 1:
            raise ValueError("need --members >= 2, 1 <= --reactors <= --members; --reactions, --targets, --window >= 1")

    def params(self) -> dict[str, Any]:
        a = self.args
        return {
            "members": a.members,
            "reactors": a.reactors,
            "reactions": a.reactions,
            "targets": a.targets,
            "window": a.window,
            "fanout": a.fanout,
        }

    def node_env(self) -> dict[str, str]:
        return {"YIM_RATE_REACT_PER_USER_S": "0", **fanout_env(self.args.fanout)}

    def connections(self) -> int:
        return self.args.members

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        tag = run_tag()
        accounts = [acc[0] for acc in await make_accounts(target.url, [f"r{tag}m{i}" for i in range(a.members)])]
        owner = accounts[0]
        auth = {"Authorization": f"Bearer {owner.token}"}
        async with aiohttp.ClientSession(target.url) as http:
            body = await create_group(http, owner, accounts[1:], f"bench {tag}")
            conv_id = body["group"]["conv_id"]
            seqs = []
            for i in range(a.targets):
                r = await http.post(
                    "/api/v1/messages",
                    json={"conv_id": conv_id, "kind": "text", "body": {"text": f"t{i}"}, "client_msg_id": f"t{i}"},
                    headers=auth,
                )
                sent = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"posting a message failed: {sent}")
                seqs.append(sent["seq"])
        return [
            {
                "url": target.url,
                "conv_id": conv_id,
                "members": chunk,
                "reactors": a.reactors,
                "reactions": a.reactions,
                "seqs": seqs,
                "window": a.window,
                "drain": a.drain,
                "user_ids": [acc.user_id for acc in accounts[: a.reactors]],
                "fanout": body["group"]["fanout"],
            }
            for chunk in split(list(enumerate(accounts)), a.procs)
        ]

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        return await _ReactWorker(ctx, payload).run()

    def summarize(self, run: RunData) -> dict[str, Any]:
        a = self.args
        rs = run.results
        acked = sum(r["acked"] for r in rs)
        received = sum(r["received"] for r in rs)
        elapsed = load_span(rs)
        lat = gathered(rs, "lat")
        return {
            "reactions_per_s": round(acked / elapsed, 1) if elapsed > 0 else None,
            "deliveries_per_s": round(received / elapsed, 1) if elapsed > 0 else None,
            **latency_fields(lat),
            "sent": sum(r["sent"] for r in rs),
            "acked": acked,
            "received": received,
            "lost": acked * (a.members - 1) - received,
            "errors": sum(r["errors"] for r in rs),
            "elapsed_s": round(elapsed, 3),
            "fanout_mode": rs[0]["fanout"] if rs else None,
            "latency_of": self.latency_of,
        }


class _Reactor:
    __slots__ = ("idx", "next_i", "ws")

    def __init__(self, idx: int, ws: RawWebSocket) -> None:
        self.idx = idx
        self.ws = ws
        self.next_i = 0


class _ReactWorker(Tally):
    """The members of one load-generator process, on callbacks (as in ``group``)."""

    def __init__(self, ctx: WorkerCtx, payload: dict[str, Any]) -> None:
        self.ctx = ctx
        self.p = payload
        self.n: int = payload["reactions"]
        self.window: int = payload["window"]
        self.conv_id: str = payload["conv_id"]
        self.seqs: list[int] = payload["seqs"]
        self.members: list[tuple[int, Account]] = payload["members"]
        reactor_ids: list[str] = payload["user_ids"]
        self.index = {uid: i for i, uid in enumerate(reactor_ids)}  # reactor's user id -> member index
        # send times by (reactor, message seq, add?), in order: a connection's reactions are
        # applied in the order it sent them, so the k-th change a member gets under one key
        # is the k-th request sent under it. Only reactors of this process are timed.
        self.sent_at: dict[tuple[int, int, bool], array[float]] = {}
        self.cursor: dict[tuple[int, tuple[int, int, bool]], int] = {}
        super().__init__(sum(1 for idx, _ in self.members if idx < payload["reactors"]) * self.n)

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        await ctx.barrier("ready")
        socks = await open_sockets(ctx, [(idx, self.p["url"], acc.token) for idx, acc in self.members])
        try:
            await ctx.barrier("connected")
            reactors: list[_Reactor] = []
            for idx, _acc in self.members:
                r = _Reactor(idx, socks[idx])
                socks[idx].deliver_to(functools.partial(self._on_frame, idx, r))
                if idx < self.p["reactors"]:
                    reactors.append(r)
            for r in reactors:
                for _ in range(min(self.window, self.n)):
                    self._send(r)
            expected_here = self.p["reactors"] * self.n * len(self.members) - self.my_sends
            await self.settle_and_drain(ctx, self.p["drain"], expected_here)
            await ctx.barrier("done")
        finally:
            await close_sockets(socks)
        return {**self.counts(), "fanout": self.p["fanout"]}

    def _target(self, i: int) -> tuple[int, bool]:
        """Request i of a reactor: add on m0, remove on m0, add on m1, …"""
        return self.seqs[(i // 2) % len(self.seqs)], i % 2 == 0

    def _send(self, r: _Reactor) -> None:
        i = r.next_i
        r.next_i = i + 1
        seq, add = self._target(i)
        now = time.monotonic_ns() / 1e9
        self.sending(now)
        self.sent_at.setdefault((r.idx, seq, add), array("d")).append(now)
        r.ws.send_text(react_frame(_FIRST_RID + i, self.conv_id, seq, not add))

    def _on_frame(self, idx: int, r: _Reactor, data: bytes) -> None:
        now = time.monotonic_ns() / 1e9
        frame = _decode(data)
        if frame.t in ("ok", "err"):
            if isinstance(frame.rid, int) and _FIRST_RID <= frame.rid < _FIRST_RID + self.n:
                if r.next_i < self.n:
                    self._send(r)
                self.answered(frame.t == "ok")
            return
        if frame.type != "reaction" or frame.data is None:
            return
        reactor = self.index.get(frame.data.user_id)
        if reactor is None:
            return
        self.received += 1
        self.last_event = max(self.last_event, now)
        key = (reactor, frame.data.seq, frame.data.op == "add")
        times = self.sent_at.get(key)
        at = self.cursor.get((idx, key), 0)
        if times is not None and at < len(times):
            self.lat.append((now - times[at]) * 1000)
            self.cursor[(idx, key)] = at + 1
