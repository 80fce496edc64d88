"""``fanout-sweep``: write vs read fan-out over group sizes, to see where each one wins.

For every size in ``--sizes`` and every mode in ``--modes`` this is one ``group`` run
(the same accounts, group, load generator and figures: yim/bench/scenarios/group.py)
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
during the load. ``--plot DIR`` writes ``fanout-sweep.png``: deliveries/s, store writes/s
and server RSS against group size, write vs read, with the node's default threshold
(``group_write_fanout_max``) marked.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
from pathlib import Path
from typing import Any

from yim.bench.runner import RunData
from yim.bench.scenarios.group import GroupScenario
from yim.bench.target import raise_fd_limit
from yim.config import Settings

DEFAULT_SIZES = (10, 30, 100, 300, 1000, 3000, 10_000)
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
    help = "group sizes 10 → 10,000: deliveries/s, store writes/s and memory, write vs read fan-out"
    swept = ("members", "messages", "fanout", "group_write_fanout_max")
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

    @classmethod
    def variants(cls, args: argparse.Namespace) -> list[argparse.Namespace]:
        out = []
        for members in args.sizes:
            for mode in args.modes:
                v = copy.copy(args)
                v.members, v.fanout = members, mode
                if args.messages is None:
                    v.messages = messages_per_sender(members, args.senders, args.deliveries, args.max_messages)
                out.append(v)
        return out

    def validate(self) -> None:
        super().validate()
        a = self.args
        if a.url:
            raise ValueError("fanout-sweep starts a node per point to force each mode; drop --url")
        if a.deliveries < 1 or a.max_messages < 1:
            raise ValueError("--deliveries and --max-messages must be at least 1")
        limit = raise_fd_limit()
        if a.members + 200 > limit:
            raise ValueError(
                f"a group of {a.members} online members needs as many connections, and this process may "
                f"open at most {limit} files (ulimit -Hn)"
            )

    def summarize(self, run: RunData) -> dict[str, Any]:
        row = super().summarize(run)
        a, b = run.snapshots.get("connected"), run.snapshots.get("done")
        connected = a.server_rss if a else None
        growth = b.server_rss - a.server_rss if a and b and a.server_rss and b.server_rss else None
        return {
            "members": self.args.members,
            "messages_per_sender": self.args.messages,
            "server_rss_connected_mb": round(connected / 2**20, 1) if connected else None,
            "server_rss_growth_mb": round(growth / 2**20, 1) if growth is not None else None,
            **row,
        }

    @classmethod
    def sweep_plots(cls, directory: Path, rows: list[dict[str, Any]]) -> list[Path]:
        from yim.bench.plot import Panel, log_x_png

        def series(key: str) -> dict[str, list[tuple[float, float]]]:
            out: dict[str, list[tuple[float, float]]] = {}
            for mode in MODES:
                pts = sorted(
                    (r["members"], r[key]) for r in rows if r.get("fanout_mode") == mode and r.get(key) is not None
                )
                if pts:
                    out[f"{mode} fan-out"] = pts
            return out

        deliveries = series("deliveries_per_s")
        # The project's rule (docs/performance.md): a run in which other processes used more
        # than 30 % of a core is noisy. Such points are drawn hollow rather than left out.
        noisy = {
            f"{mode} fan-out": {r["members"] for r in rows if r.get("fanout_mode") == mode and _noisy(r)}
            for mode in MODES
        }
        note = crossover_note(deliveries.get("write fan-out", []), deliveries.get("read fan-out", []))
        threshold = Settings().group_write_fanout_max
        senders = rows[0]["params"]["senders"] if rows else 0
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "fanout-sweep.png"
        log_x_png(
            path,
            f"Group fan-out: every member online, {senders} senders, one fresh node per point",
            "group size (members, log scale)",
            [
                Panel("deliveries/s (member receipts)", deliveries, note=note, hollow=noisy),
                Panel("store rows written/s (messages + inbox)", series("store_writes_per_s"), hollow=noisy),
                Panel("server peak RSS (MB)", series("server_rss_mb"), log_y=False, hollow=noisy),
            ],
            mark_x=threshold,
            mark_label=f"group_write_fanout_max = {threshold} (default)",
            footnote=(
                f"hollow: other processes used more than {NOISY_OTHER_CPU_PCT:.0f}% of a core during that point"
                if any(noisy.values())
                else ""
            ),
        )
        return [path]
