"""``fanout-sweep``: write vs read fan-out over group sizes, to see where each one wins.

For every size in ``--sizes`` and every mode in ``--modes`` this is one ``group`` run
(the same accounts, group, load generator and figures: yimbench/scenarios/group.py)
against a fresh node started with the threshold that forces the mode. ``--senders``
members send; every member is online and receives every message.

So that no point runs long, the messages per sender shrink as the group grows: enough for
about ``--deliveries`` receipts in all, that is deliveries / (senders * (members - 1)),
but at most ``--max-messages``. ``--messages N`` fixes the count for every point
instead. Each point is bounded by ``--timeout`` like any run. Give large groups
``--procs 2``: one load-generator process reading thousands of connections is otherwise
what saturates first. On a 2-core machine the 10,000-member points take ~30 s each,
mostly making and connecting the accounts.

Each row is a ``group`` row (msgs/s, deliveries/s, latency, lost/dups, server CPU and
peak RSS …) with ``store_writes_per_s`` (rows the node inserted per second, from its
``/metrics`` counters), the server's RSS once all members were connected and its growth
during the load.

Online delivery is only one side: read fan-out moves work to a device that comes back
(yimbench/scenarios/catchup.py). So after the online phase, on the same node, one more
user — a member of ``--catchup-groups`` K groups of min(size, ``--catchup-max-members``)
members — goes offline up to date, ``--catchup-messages`` M messages are sent round-robin
over those groups, and it catches up the way the SDK does: ``sync`` pages, then
``history(after=…)`` for each read-fan-out group whose head is ahead. The group size is
bounded because under write fan-out the fill writes M x members inbox rows (1,000
messages to 300-member groups: 300,000 rows, ~2 s on 2 cores); the returning device
reads only its own inbox or the groups' timelines, so what it pays does not grow with
the other members (the rows up to the bound show whether that holds). The catch-up is timed
after the node has been idle for a moment (its deferred work done) and repeated from the
same cursors ``--catchup-repeat`` times; ``catchup_ms`` is the median. Fields:
``catchup_ms``, ``catchup_msgs_per_s``, ``catchup_requests`` (= ``catchup_sync_pages`` +
``catchup_history_pages``), ``catchup_server_cpu_us_per_msg``, ``catchup_lost`` /
``catchup_dups`` / ``catchup_gaps`` (also counted in the row's ``lost`` and ``dups``),
and the fill's rows (``catchup_fill_message_rows``, ``catchup_fill_inbox_rows``).

What the returning device pays depends on K, not on the group size, so ``--sweep-groups``
adds points with the catch-up alone (``sweep: "groups"``; no online phase, one fresh node
each): K groups of ``--sweep-groups-members`` members, the same M messages spread over
them. Their rows carry the catch-up in ``sent`` / ``received`` / ``lost`` / ``dups`` too.

``--plot DIR`` writes ``fanout-sweep.png``: deliveries/s, store writes/s, server RSS and
catch-up time against group size, write vs read, with the node's default threshold
(``group_write_fanout_max``) marked, and catch-up time against K.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import math
import statistics
import time
from pathlib import Path
from typing import Any

from yim.config import Settings
from yimbench.client import Account, make_accounts, run_tag
from yimbench.runner import Coordinator, RunData, WorkerCtx
from yimbench.scenarios.catchup import Cursors, catch_up, create_groups, fill, wait_quiet
from yimbench.scenarios.group import GroupScenario
from yimbench.target import Target, raise_fd_limit, store_counters

DEFAULT_SIZES = (10, 30, 100, 300, 1000, 3000, 10_000)
DEFAULT_SWEEP_GROUPS = (1, 10, 100, 1000)
MODES = ("write", "read")
#: other processes' CPU (% of one core) above which a point's figures count as noisy
NOISY_OTHER_CPU_PCT = 30.0


def _noisy(row: dict[str, Any]) -> bool:
    return (row.get("other_cpu_pct") or 0.0) > NOISY_OTHER_CPU_PCT


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("group sizes must be at least 2 (a sender and a receiver)")
    return sizes


def _counts(text: str) -> list[int]:
    try:
        counts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("group counts must be at least 1")
    return counts


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"modes are a list of {', '.join(MODES)}, not {text!r}")
    return modes


def messages_per_sender(members: int, senders: int, deliveries: int, max_messages: int) -> int:
    """Messages each sender sends at this group size: ~``deliveries`` receipts in all."""
    return max(1, min(max_messages, round(deliveries / (senders * (members - 1)))))


def crossovers(write: list[tuple[float, float]], read: list[tuple[float, float]]) -> list[tuple[float, str]]:
    """Group sizes where the two curves cross (interpolated on log-log axes), each with the
    mode that leads past it."""
    w, r = dict(write), dict(read)
    common = sorted(x for x in w.keys() & r.keys() if w[x] > 0 and r[x] > 0)
    out = []
    for a, b in itertools.pairwise(common):
        da, db = math.log(r[a] / w[a]), math.log(r[b] / w[b])
        if da * db < 0 or (da == 0 and db != 0):
            frac = da / (da - db)
            out.append((math.exp(math.log(a) + frac * (math.log(b) - math.log(a))), "read" if db > 0 else "write"))
    return out


def crossover_note(write: list[tuple[float, float]], read: list[tuple[float, float]]) -> str:
    r, w = dict(read), dict(write)
    common = r.keys() & w.keys()
    if not common:
        return ""
    found = crossovers(write, read)
    if found:
        return "; ".join(f"{mode} fan-out ahead past ~{x:,.0f} members" for x, mode in found)
    if all(r[x] == w[x] for x in common):
        return ""
    ahead = "read" if all(r[x] >= w[x] for x in common) else "write"
    return f"{ahead} fan-out ahead at every size measured"


class FanoutSweepScenario(GroupScenario):
    name = "fanout-sweep"
    help = "group sizes 10 → 10,000: deliveries/s, store writes/s, memory and a returning member's catch-up"
    swept = (
        "members",
        "messages",
        "fanout",
        "group_write_fanout_max",
        "sweep",
        "catchup_groups",
        "catchup_group_members",
    )
    columns = [
        ("members", "members", "{}"),
        ("fanout_mode", "fanout", "{}"),
        ("messages_per_sender", "msgs/sender", "{}"),
        ("msgs_per_s", "msgs/s", "{:,.0f}"),
        ("deliveries_per_s", "deliv/s", "{:,.0f}"),
        ("store_writes_per_s", "store w/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"),
        ("lost", "lost", "{}"),
        ("dups", "dups", "{}"),
        ("server_rss_mb", "srv MB", "{:.0f}"),
        ("server_rss_growth_mb", "+MB load", "{:.1f}"),
        ("server_cpu_pct", "srv CPU%", "{:.0f}"),
        ("client_cpu_pct", "gen CPU%", "{:.0f}"),
        ("catchup_groups", "cu groups", "{}"),
        ("catchup_ms", "cu ms", "{:.1f}"),
        ("catchup_msgs_per_s", "cu msgs/s", "{:,.0f}"),
        ("catchup_requests", "cu reqs", "{}"),
    ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("fanout-sweep")
        g.add_argument(
            "--sizes",
            type=_sizes,
            default=list(DEFAULT_SIZES),
            help=f"group sizes, comma-separated (default {','.join(map(str, DEFAULT_SIZES))})",
        )
        g.add_argument("--modes", type=_modes, default=list(MODES), help="fan-out modes to run (default write,read)")
        g.add_argument("--senders", type=int, default=2, help="members that send (default 2)")
        g.add_argument(
            "--deliveries",
            type=int,
            default=200_000,
            help="receipts each point aims at, which sets the messages per sender (default 200000)",
        )
        g.add_argument("--max-messages", type=int, default=500, help="messages per sender at most (default 500)")
        g.add_argument("--messages", type=int, default=None, help="messages per sender at every size (no scaling)")
        g.add_argument("--window", type=int, default=10, help="messages awaiting their ACK per sender (default 10)")
        g.add_argument("--ack-every", type=int, default=100, help="members ack after this many events (default 100)")
        g.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late deliveries (default 10)")
        c = parser.add_argument_group("fanout-sweep: catch-up of a returning member")
        c.add_argument(
            "--catchup-groups",
            type=int,
            default=50,
            help="groups the returning member is in, at every size point; 0: no catch-up (default 50)",
        )
        c.add_argument(
            "--catchup-messages",
            type=int,
            default=1000,
            help="messages sent round-robin over those groups while it is offline (default 1000)",
        )
        c.add_argument(
            "--catchup-max-members",
            type=int,
            default=300,
            help="its groups have min(size, this) members: write fan-out fills messages x members inbox rows "
            "(default 300)",
        )
        c.add_argument(
            "--catchup-page",
            type=int,
            default=100,
            help="entries asked per sync and history page (default 100, the SDK's; the node caps history at 200)",
        )
        c.add_argument(
            "--catchup-repeat",
            type=int,
            default=3,
            help="catch-ups from the same cursors; the median is reported (default 3)",
        )
        c.add_argument(
            "--sweep-groups",
            type=_counts,
            default=list(DEFAULT_SWEEP_GROUPS),
            help="after the sizes, catch-up points alone (no online phase) for each of these numbers of groups, "
            f"same messages (default {','.join(map(str, DEFAULT_SWEEP_GROUPS))}; '' for none)",
        )
        c.add_argument(
            "--sweep-groups-members",
            type=int,
            default=10,
            help="members of each group at the --sweep-groups points (default 10)",
        )

    @classmethod
    def variants(cls, args: argparse.Namespace) -> list[argparse.Namespace]:
        out = []
        for members in args.sizes:
            for mode in args.modes:
                v = copy.copy(args)
                v.sweep, v.members, v.fanout = "size", members, mode
                if args.messages is None:
                    v.messages = messages_per_sender(members, args.senders, args.deliveries, args.max_messages)
                out.append(v)
        for groups in args.sweep_groups:
            for mode in args.modes:
                v = copy.copy(args)
                v.sweep, v.members, v.fanout, v.catchup_groups = "groups", args.sweep_groups_members, mode, groups
                out.append(v)
        return out

    def catchup_members(self) -> int:
        """Members of each group of the returning member (it and the owner included)."""
        a = self.args
        return a.members if a.sweep == "groups" else min(a.members, a.catchup_max_members)

    def validate(self) -> None:
        a = self.args
        if a.sweep == "size":
            super().validate()
        elif a.senders < 1:
            raise ValueError("--senders must be at least 1")
        if a.url:
            raise ValueError("fanout-sweep starts a node per point to force each mode; drop --url")
        if a.deliveries < 1 or a.max_messages < 1:
            raise ValueError("--deliveries and --max-messages must be at least 1")
        if a.catchup_groups < 0 or a.catchup_messages < 1 or a.catchup_repeat < 1 or not 1 <= a.catchup_page <= 1000:
            raise ValueError(
                "need --catchup-groups >= 0, --catchup-messages and --catchup-repeat >= 1, --catchup-page 1..1000"
            )
        if a.catchup_max_members < 2 or a.sweep_groups_members < 2:
            raise ValueError("--catchup-max-members and --sweep-groups-members must be at least 2 (owner + returner)")
        limit = raise_fd_limit()
        if a.members + 200 > limit:
            raise ValueError(
                f"a group of {a.members} online members needs as many connections, and this process may "
                f"open at most {limit} files (ulimit -Hn)"
            )

    def params(self) -> dict[str, Any]:
        a = self.args
        out = {**super().params(), "sweep": a.sweep}
        if a.catchup_groups:
            out.update(
                catchup_groups=a.catchup_groups,
                catchup_group_members=self.catchup_members(),
                catchup_messages=a.catchup_messages,
                catchup_page=a.catchup_page,
                catchup_repeat=a.catchup_repeat,
            )
        return out

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        a = self.args
        payloads: list[dict[str, Any]]
        if a.sweep == "groups":  # catch-up alone: the owner and the other members, never online
            names = [f"k{run_tag()}m{i}" for i in range(a.members - 1)]
            accounts = [acc[0] for acc in await make_accounts(target.url, names)]
            payloads = [{}]
        else:
            payloads = await super().prepare(target, deadline)
            indexed = sorted((m for p in payloads for m in p["members"]), key=lambda m: m[0])
            accounts = [acc for _i, acc in indexed]
        for p in payloads:  # every worker walks the catch-up barriers, one does the work
            p["catchup_phase"] = a.catchup_groups > 0
        if a.catchup_groups:
            payloads[0]["catchup"] = await self._catchup_plan(target.url, accounts)
        return payloads

    async def _catchup_plan(self, url: str, accounts: list[Account]) -> dict[str, Any]:
        a = self.args
        size = self.catchup_members()
        tag = run_tag()
        [[device]] = await make_accounts(url, [f"r{tag}"])
        members = [device.user_id, *(m.user_id for m in accounts[1 : size - 1])]
        groups, fanout = await create_groups(url, accounts[0], members, a.catchup_groups, tag)
        return {
            "url": url,
            "device": device,
            "senders": accounts[: min(a.senders, size - 1)],  # the owner first; all are in every group
            "groups": groups,
            "group_members": size,
            "fanout": fanout,
            "messages": a.catchup_messages,
            "page": a.catchup_page,
            "repeat": a.catchup_repeat,
        }

    def on_barrier(self, name: str, coordinator: Coordinator) -> None:
        super().on_barrier(name, coordinator)
        if name in ("cu_ready", "cu_filled"):
            coordinator.extra[f"counters_{name}"] = store_counters(coordinator.target.url)
        if name == "cu_filled" and coordinator.target.pid:
            coordinator.extra["catchup_settle_s"] = wait_quiet(coordinator.target.pid)
            # the measured phase starts after the wait, not at the barrier
            coordinator.snapshot(name)

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        result = await GroupScenario.work(ctx, payload) if "conv_id" in payload else {}
        if payload["catchup_phase"]:
            result["catchup"] = await _catchup_phase(ctx, payload.get("catchup"))
        return result

    def summarize(self, run: RunData) -> dict[str, Any]:
        cu = self._catchup_fields(run)
        if self.args.sweep == "groups":
            return {
                "sweep": "groups",
                "members": self.args.members,
                "fanout_mode": cu["catchup_fanout"],
                "sent": cu["catchup_sent"],
                "received": cu["catchup_received"],
                "lost": cu["catchup_lost"],
                "dups": cu["catchup_dups"],
                "latency_of": "none (catch-up alone)",
                **cu,
            }
        row = super().summarize(run)
        if cu:  # a message the returning member missed is as lost as one a member online missed
            row["lost"] = None if row["lost"] is None else row["lost"] + cu["catchup_lost"]
            row["dups"] += cu["catchup_dups"]
        a, b = run.snapshots.get("connected"), run.snapshots.get("done")
        connected = a.server_rss if a else None
        growth = b.server_rss - a.server_rss if a and b and a.server_rss and b.server_rss else None
        return {
            "sweep": "size",
            "members": self.args.members,
            "messages_per_sender": self.args.messages,
            "server_rss_connected_mb": round(connected / 2**20, 1) if connected else None,
            "server_rss_growth_mb": round(growth / 2**20, 1) if growth is not None else None,
            **row,
            **cu,
        }

    @staticmethod
    def _catchup_fields(run: RunData) -> dict[str, Any]:
        r = next((x["catchup"] for x in run.results if x.get("catchup")), None)
        if r is None:
            return {}
        runs = r["runs"]
        ms = statistics.median(x["seconds"] * 1000 for x in runs)
        sent = r["messages"] - r["refused"]
        unique = min(x["unique"] for x in runs)
        first = runs[0]  # the requests are the same each time: same cursors, same entries
        cpu = run.server_cpu_s("cu_filled", "cu_done")
        a, b = run.extra.get("counters_cu_ready"), run.extra.get("counters_cu_filled")
        message_rows = inbox_rows = None
        if a and b:
            message_rows = round(b["yim_messages_in_total"] - a["yim_messages_in_total"])
            inbox_rows = round(b["yim_deliveries_total"] - a["yim_deliveries_total"])
        return {
            "catchup_groups": r["groups"],
            "catchup_group_members": r["group_members"],
            "catchup_fanout": r["fanout"],
            "catchup_messages": r["messages"],
            "catchup_ms": round(ms, 2),
            "catchup_ms_runs": [round(x["seconds"] * 1000, 2) for x in runs],
            "catchup_msgs_per_s": round(unique / ms * 1000, 1) if ms > 0 else None,
            "catchup_requests": first["sync_pages"] + first["history_pages"],
            "catchup_sync_pages": first["sync_pages"],
            "catchup_history_pages": first["history_pages"],
            "catchup_entries": first["entries"],
            "catchup_sent": sent,
            "catchup_received": unique,
            "catchup_lost": sent - unique,
            "catchup_dups": max(x["dups"] for x in runs),
            "catchup_gaps": max(x["gaps"] for x in runs),
            "catchup_server_cpu_us_per_msg": round(cpu / (len(runs) * unique) * 1e6, 1) if cpu and unique else None,
            "catchup_other_cpu_pct": run.other_cpu_pct("cu_filled", "cu_done"),
            "catchup_settle_s": run.extra.get("catchup_settle_s"),
            "catchup_fill_s": round(r["fill_s"], 3),
            "catchup_fill_message_rows": message_rows,
            "catchup_fill_inbox_rows": inbox_rows,
        }

    @classmethod
    def sweep_plots(cls, directory: Path, rows: list[dict[str, Any]]) -> list[Path]:
        from yimbench.plot import Panel, log_x_png

        by_size = [r for r in rows if r.get("sweep", "size") == "size"]
        by_groups = [r for r in rows if r.get("sweep") == "groups"]

        def series(points: list[dict[str, Any]], x: str, key: str) -> dict[str, list[tuple[float, float]]]:
            out: dict[str, list[tuple[float, float]]] = {}
            for mode in MODES:
                pts = sorted((r[x], r[key]) for r in points if r.get("fanout_mode") == mode and r.get(key) is not None)
                if pts:
                    out[f"{mode} fan-out"] = pts
            return out

        def hollow(points: list[dict[str, Any]], x: str, noisy: Any) -> dict[str, set[float]]:
            return {
                f"{mode} fan-out": {r[x] for r in points if r.get("fanout_mode") == mode and noisy(r)} for mode in MODES
            }

        deliveries = series(by_size, "members", "deliveries_per_s")
        # The project's rule (docs/performance.md): a run in which other processes used more
        # than 30 % of a core is noisy. Such points are drawn hollow rather than left out.
        noisy = hollow(by_size, "members", _noisy)
        note = crossover_note(deliveries.get("write fan-out", []), deliveries.get("read fan-out", []))
        panels = [
            Panel("deliveries/s (member receipts), every member online", deliveries, note=note, hollow=noisy),
            Panel(
                "store rows written/s (messages + inbox)",
                series(by_size, "members", "store_writes_per_s"),
                hollow=noisy,
            ),
            Panel("server peak RSS (MB)", series(by_size, "members", "server_rss_mb"), log_y=False, hollow=noisy),
        ]
        catchup = series(by_size, "members", "catchup_ms")
        if catchup:
            r0 = next(r for r in by_size if r.get("catchup_ms") is not None)
            k, m = r0["catchup_groups"], r0["catchup_messages"]
            cap = max(r["params"]["catchup_group_members"] for r in by_size if r.get("catchup_ms") is not None)
            panels.append(
                Panel(
                    f"catch-up (ms, lower is better): a member of {k} groups of min(size, {cap}) back after "
                    f"{m:,} messages",
                    catchup,
                    note=_requests_note(by_size, "members"),
                    hollow=hollow(by_size, "members", _noisy_catchup),
                )
            )
        by_k = series(by_groups, "catchup_groups", "catchup_ms")
        if by_k:
            r0 = by_groups[0]
            panels.append(
                Panel(
                    f"the same catch-up (ms) against the groups it is in: {r0['catchup_messages']:,} messages, "
                    f"groups of {r0['members']}",
                    by_k,
                    note=_requests_note(by_groups, "catchup_groups"),
                    hollow=hollow(by_groups, "catchup_groups", _noisy_catchup),
                    xlabel="groups the returning member is in (log scale)",
                )
            )
        threshold = Settings().group_write_fanout_max
        senders = rows[0]["params"]["senders"] if rows else 0
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "fanout-sweep.png"
        any_noisy = any(noisy.values()) or any(_noisy_catchup(r) for r in rows)
        log_x_png(
            path,
            f"Group fan-out, write vs read: {senders} senders, one fresh node per point",
            "group size (members, log scale)",
            panels,
            mark_x=threshold,
            mark_label=f"group_write_fanout_max = {threshold} (default)",
            footnote=(
                f"hollow: other processes used more than {NOISY_OTHER_CPU_PCT:.0f}% of a core during that point"
                if any_noisy
                else ""
            ),
        )
        return [path]


def _noisy_catchup(row: dict[str, Any]) -> bool:
    return (row.get("catchup_other_cpu_pct") or 0.0) > NOISY_OTHER_CPU_PCT


def _requests_note(rows: list[dict[str, Any]], x: str) -> str:
    """Requests per catch-up, write vs read, at the largest x measured in both modes."""
    reqs = {(r[x], r.get("fanout_mode")): r.get("catchup_requests") for r in rows if r.get("catchup_requests")}
    both = [v for v, mode in reqs if mode == "write" and (v, "read") in reqs]
    if not both:
        return ""
    v = max(both)
    return f"requests at {v:,}: write {reqs[(v, 'write')]:,}, read {reqs[(v, 'read')]:,}"


async def _catchup_phase(ctx: WorkerCtx, plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """The catch-up barriers, walked by every worker; the one holding ``plan`` does the work
    (yimbench/scenarios/catchup.py)."""
    cursors = Cursors()
    if plan is not None:
        url, device, m, page = plan["url"], plan["device"], plan["messages"], plan["page"]
        # Up to date before going offline: the measured catch-up starts from these cursors.
        await asyncio.wait_for(catch_up(url, device, cursors, page, m), timeout=max(0.1, ctx.remaining()))
    await ctx.barrier("cu_ready")
    if plan is not None:
        started = time.monotonic()
        refused = await asyncio.wait_for(
            fill(url, plan["senders"], plan["groups"], m), timeout=max(0.1, ctx.remaining())
        )
        fill_s = time.monotonic() - started
    await ctx.barrier("cu_filled")
    runs = []
    if plan is not None:
        for _ in range(plan["repeat"]):
            done = await asyncio.wait_for(
                catch_up(url, device, cursors.copy(), page, m), timeout=max(0.1, ctx.remaining())
            )
            runs.append(done.as_dict())
    await ctx.barrier("cu_done")
    if plan is None:
        return None
    return {
        "runs": runs,
        "refused": refused,
        "fill_s": fill_s,
        "messages": m,
        "groups": len(plan["groups"]),
        "group_members": plan["group_members"],
        "fanout": plan["fanout"],
    }
