"""``yim bench SCENARIO [options]``: the command, its output and the medians.

Output: one line per run (a JSON object with ``--json``, else a table row), then with
``--runs N`` (N > 1) a line of per-field medians, then with ``--compare-baseline`` a line
with yim's figures as ratios of the bare relay's (with ``--server yim,ejabberd``, of
ejabberd's). Runs of the systems are interleaved, so drift of the machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from yimbench.runner import BenchError, median_row, run_once
from yimbench.scenarios import SCENARIOS, Scenario
from yimbench.target import is_yim

#: the scenarios the XMPP client of yimbench/xmpp.py speaks (``--server ejabberd``)
XMPP_SCENARIOS = ("pairs",)

_RATIO_KEYS = (
    "msgs_per_s",
    "deliveries_per_s",
    "connects_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_us_per_msg",
    "kb_per_conn",
)


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("run")
    g.add_argument("--url", default=d(None), help="drive this node (loopback only) instead of starting one")
    g.add_argument("--server-pid", type=int, default=d(None), help="pid of the --url server, for RSS/CPU")
    g.add_argument("--baseline", action="store_true", default=d(False), help="run against the bare relay instead")
    g.add_argument(
        "--compare-baseline", action="store_true", default=d(False), help="run yim and the bare relay, print the ratio"
    )
    g.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default=d("sqlite"),
        help="sqlite: one node on its embedded store (default); postgres: start PostgreSQL 15 (fsync on)"
        " + Redis + --nodes nodes in cluster mode",
    )
    g.add_argument("--nodes", type=int, default=d(1), help="cluster nodes to start (more than 1: --store postgres)")
    g.add_argument(
        "--pg-stat-statements",
        action="store_true",
        default=d(False),
        help="cluster: report PostgreSQL's top statements over the measured phase",
    )
    g.add_argument(
        "--workers",
        default=d("1"),
        metavar="N[,M...]",
        help="the node's worker processes (yim serve --workers); a list runs each, interleaved (default 1)",
    )
    g.add_argument(
        "--server",
        default=d("yim"),
        metavar="yim[,ejabberd]",
        help="the servers to run, interleaved run by run (default yim). ejabberd: a private ejabberd the bench"
        " starts on loopback (pairs only; needs Debian's package: apt-get install --no-install-recommends"
        " ejabberd), driven by an XMPP client doing what the yim client does; e.g. --server yim,ejabberd"
        " --workers 1,2 --runs 3",
    )
    g.add_argument(
        "--ejabberd-modules",
        choices=("minimal", "debian"),
        default=d("minimal"),
        help="ejabberd's modules: minimal (mod_register only, for the accounts; the default) or debian (the list"
        " of Debian's /etc/ejabberd/ejabberd.yml, which has no mod_mam); both without traffic shaping",
    )
    g.add_argument(
        "--ejabberd-busy-wait",
        choices=("default", "none"),
        default=d("default"),
        help="ejabberd's schedulers: default (Erlang's: they spin a while before they sleep) or none"
        " (+sbwt none +sbwtdcpu none +sbwtdio none: they sleep at once)",
    )
    g.add_argument("--procs", type=int, default=d(1), help="load-generator processes (default 1)")
    g.add_argument("--runs", type=int, default=d(1), help="repeat, and report the median too (default 1)")
    g.add_argument("--timeout", type=float, default=d(120.0), help="bound of each run in seconds (default 120)")
    g.add_argument("--json", action="store_true", default=d(False), help="one JSON object per line")
    g.add_argument("--plot", metavar="DIR", default=d(None), help="write charts here (SVG; a sweep's PNG)")


def add_bench_parser(sub: Any, *, help_line: str) -> None:
    """Register ``yim bench`` on the ``yim`` command's subparsers (``help_line``: its line in ``yim --help``)."""
    bench = sub.add_parser(
        "bench",
        help=help_line,
        description="Drive a yim node (started on a free loopback port, or --url) and measure it.",
    )
    _add_common(bench, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, cls in SCENARIOS.items():
        doc = sys.modules[cls.__module__].__doc__ or cls.help
        p = scenarios.add_parser(
            name, parents=[common], help=cls.help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        cls.add_arguments(p)
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cls = SCENARIOS[args.scenario]
    try:
        systems = _systems(args, cls)
    except ValueError as exc:
        print(f"yim bench: {exc}", file=sys.stderr)
        return 2
    clean = True
    printer: _Printer | None = None
    sweep_rows: list[dict[str, Any]] = []
    for variant in cls.variants(args):
        scenario = cls(variant)
        try:
            scenario.validate()
        except ValueError as exc:
            print(f"yim bench: {exc}", file=sys.stderr)
            return 2
        if printer is None or not cls.swept:
            printer = _Printer(out, scenario, variant.json)
        by_system: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for k in range(variant.runs):
            for system in systems:
                try:
                    row = run_once(scenario, system, variant)
                except (BenchError, RuntimeError, OSError, TimeoutError) as exc:
                    print(f"yim bench: {system} run {k + 1} failed: {exc}", file=sys.stderr)
                    return 1
                row = {"kind": "run", "run": k + 1, **row}
                by_system[system].append(row)
                printer.row(row)
                clean = clean and not (row.get("lost") or row.get("dups"))
        medians = {}
        for system, rows in by_system.items():
            medians[system] = median_row(rows) if len(rows) > 1 else rows[0]
            if len(rows) > 1:
                medians[system]["kind"] = "median"
                printer.row(medians[system])
        if len(systems) == 2 and "relay" in medians:
            (yim_system,) = (s for s in systems if s != "relay")
            printer.comparison(_comparison(medians[yim_system], medians["relay"]))
        if "ejabberd" in medians:
            for yim_system in (s for s in systems if is_yim(s)):
                printer.comparison(_comparison(medians[yim_system], medians["ejabberd"], against="ejabberd"))
        printer.footer(medians)
        sweep_rows.extend(medians.values())
        if variant.plot:
            from yimbench.plot import write_plots

            rows = [r for rs in by_system.values() for r in rs]
            for path in write_plots(Path(variant.plot), scenario.name, scenario.latency_of, rows):
                print(f"wrote {path}", file=sys.stderr)
    if printer is not None:
        printer.finish()
    if args.plot and cls.swept:
        for path in cls.sweep_plots(Path(args.plot), sweep_rows):
            print(f"wrote {path}", file=sys.stderr)
    if not clean:
        print("yim bench: some run lost or duplicated messages (see lost / dups)", file=sys.stderr)
        return 1
    return 0


def _systems(args: argparse.Namespace, cls: type[Scenario]) -> list[str]:
    if args.baseline and args.compare_baseline:
        raise ValueError("--baseline and --compare-baseline exclude each other")
    if args.compare_baseline and args.url:
        raise ValueError("--compare-baseline starts both servers itself; drop --url")
    if args.procs < 1 or args.runs < 1 or args.timeout <= 0:
        raise ValueError("--procs and --runs must be at least 1, --timeout positive")
    if args.nodes < 1:
        raise ValueError("--nodes must be at least 1")
    if args.nodes > 1 and args.store != "postgres":
        raise ValueError("several nodes share one store: add --store postgres")
    if args.store == "postgres" and (args.url or args.baseline or args.compare_baseline):
        raise ValueError("--store postgres starts its own cluster of yim nodes: drop --url and the relay options")
    if args.pg_stat_statements and args.store != "postgres":
        raise ValueError("--pg-stat-statements needs --store postgres")
    try:
        workers = [int(n) for n in str(args.workers).split(",")]
    except ValueError:
        raise ValueError("--workers takes a number or a comma-separated list of numbers, e.g. 1,2") from None
    if not workers or min(workers) < 1 or len(set(workers)) != len(workers):
        raise ValueError("--workers: each count at least 1, none twice")
    if max(workers) > 1 and (args.store == "postgres" or args.url):
        raise ValueError("--workers above 1: a node on the embedded store that the bench starts; drop --store, --url")
    if len(workers) > 1 and args.compare_baseline:
        raise ValueError("--compare-baseline compares one yim node with the relay: give one --workers count")
    servers = [s.strip() for s in str(args.server).split(",")]
    if not servers or len(set(servers)) != len(servers) or not set(servers) <= {"yim", "ejabberd"}:
        raise ValueError("--server takes yim, ejabberd or both, e.g. yim,ejabberd")
    if "ejabberd" in servers:
        if cls.name not in XMPP_SCENARIOS:
            raise ValueError(f"ejabberd runs {', '.join(XMPP_SCENARIOS)} only, not `{cls.name}`")
        if args.url or args.baseline or args.compare_baseline:
            raise ValueError("--server ejabberd starts its own ejabberd: drop --url and the relay options")
    if "yim" not in servers and (len(workers) > 1 or workers != [1]):
        raise ValueError("--workers is yim's: add yim to --server")
    yims = ["yim"] if workers == [1] else [f"yim-w{n}" for n in workers]
    if args.baseline:
        systems = ["relay"]
    elif args.compare_baseline:
        systems = [*yims, "relay"]
    else:
        # in the order given, so --server ejabberd,yim runs ejabberd first in each round
        systems = [name for server in servers for name in (yims if server == "yim" else [server])]
    if "relay" in systems and not cls.baseline_ok:
        raise ValueError(f"the bare relay stores nothing, so it has no `{cls.name}` baseline")
    return systems


def _comparison(yim: dict[str, Any], other: dict[str, Any], *, against: str = "relay") -> dict[str, Any]:
    """yim's figures as ratios of ``other``'s (the bare relay's, or ejabberd's)."""
    ratio = {}
    for key in _RATIO_KEYS:
        a, b = yim.get(key), other.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            ratio[key] = round(a / b, 3)
    return {
        "kind": "comparison",
        "scenario": yim["scenario"],
        "params": {k: v for k, v in yim["params"].items() if k not in ("password_hashing", "store")},
        "of": yim.get("run"),
        "system": yim["system"],
        "against": against,
        "yim": {k: yim.get(k) for k in _RATIO_KEYS if yim.get(k) is not None},
        against: {k: other.get(k) for k in _RATIO_KEYS if other.get(k) is not None},
        "ratio": ratio,
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


class _Printer:
    def __init__(self, out: TextIO, scenario: Scenario, as_json: bool) -> None:
        self.out = out
        self.scenario = scenario
        self.json = as_json
        self.header_done = False
        self.swept = scenario.swept
        self.pending: list[str] = []  # a sweep's footers, held back so its table stays whole
        self.columns = [
            ("system", "system", "{}"),
            ("run", "run", "{}"),
            *scenario.columns,
            ("other_cpu_pct", "other CPU%", "{:.0f}"),
        ]

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _cells(self, values: list[str]) -> str:
        widths = [max(len(h), 6) for _k, h, _f in self.columns]
        widths[1] = 11
        return "  ".join(
            v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    def row(self, row: dict[str, Any]) -> None:
        if self.json:
            self._line(json.dumps(_public(row), separators=(",", ":")))
            return
        if not self.header_done:
            params = " ".join(f"{k}={v}" for k, v in row["params"].items() if v is not None and k not in self.swept)
            self._line(f"{self.scenario.name}: {params}")
            self._line(f"latency = {self.scenario.latency_of}")
            self._line(self._cells([h for _k, h, _f in self.columns]))
            self.header_done = True
        cells = []
        for key, _h, fmt in self.columns:
            value = row.get(key)
            if key == "run" and row.get("kind") == "median":
                value = "median"
            cells.append("-" if value is None else fmt.format(value))
        self._line(self._cells(cells))

    def comparison(self, comp: dict[str, Any]) -> None:
        if self.json:
            self._line(json.dumps(comp, separators=(",", ":")))
            return
        parts = [f"{k} {v:.2f}x" for k, v in comp["ratio"].items()]
        of = comp["of"] if isinstance(comp["of"], str) else f"run {comp['of']}"
        if comp["against"] == "relay":
            self._line(f"yim / bare relay ({of}): " + ", ".join(parts))
        else:
            self._line(f"{comp['system']} / {comp['against']} ({of}): " + ", ".join(parts))

    def footer(self, medians: dict[str, dict[str, Any]]) -> None:
        if self.json:
            return
        for system, row in medians.items():
            point = "".join(f" {k}={row['params'].get(k)}" for k in self.swept)
            line = f"{system}{point}: limited by {row.get('limited_by')}"
            if self.swept:
                self.pending.append(line)
            else:
                self._line(line)

    def finish(self) -> None:
        for line in self.pending:
            self._line(line)
        self.pending.clear()
