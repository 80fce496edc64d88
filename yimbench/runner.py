"""The run engine: one coordinating process, N load-generator processes, barriers between.

A run is: start (or target) a server → ``Scenario.prepare`` makes accounts over HTTP in
the coordinator → N worker processes (multiprocessing, spawn) run ``Scenario.work`` →
every worker walks the same named barriers (``ready``, ``connected``, ``done`` …) →
at each barrier the coordinator snapshots the server's CPU/RSS and the workers' CPU
(psutil), runs the scenario's hook, then releases everyone → ``Scenario.summarize``
turns worker results + snapshots into one result row.

Everything is bounded: the run has one deadline (``--timeout``) that the workers and the
coordinator both honour; a worker that overruns is terminated by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import uvloop

from yimbench.target import (
    LocalServer,
    Probe,
    Snapshot,
    Target,
    check_loopback,
    find_listener_pid,
    is_yim,
    raise_fd_limit,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from yimbench.scenarios.base import Scenario

#: Fields every result row carries (None where a figure does not apply to the scenario).
RESULT_FIELDS = (
    "system",
    "scenario",
    "params",
    "msgs_per_s",
    "deliveries_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "sent",
    "received",
    "lost",
    "dups",
    "server_rss_mb",
    "kb_per_conn",
    "server_cpu_pct",
    "client_cpu_pct",
)

_GRACE_S = 10.0


class BenchError(RuntimeError):
    pass


# --- the worker side ----------------------------------------------------------------------------


class WorkerCtx:
    """What a scenario's ``work`` sees in a load-generator process."""

    def __init__(self, index: int, workers: int, pipe: Connection, deadline: float) -> None:
        self.index = index
        self.workers = workers
        self.deadline = deadline
        self._pipe = pipe

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def barrier(self, name: str) -> None:
        """Wait until every worker has reached ``name`` and the coordinator lets go."""
        self._pipe.send(("barrier", name))
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._pipe.poll, self.remaining() + _GRACE_S)
        if not ready:
            raise TimeoutError(f"barrier {name!r}: the coordinator did not release in time")
        msg = self._pipe.recv()
        if msg != ("go", name):
            raise BenchError(f"barrier {name!r}: unexpected {msg!r}")


def _worker_main(scenario_name: str, index: int, workers: int, payload: Any, pipe: Connection, deadline: float) -> None:
    from yimbench.scenarios import SCENARIOS

    raise_fd_limit()
    ctx = WorkerCtx(index, workers, pipe, deadline)
    try:
        result = uvloop.run(SCENARIOS[scenario_name].work(ctx, payload))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    else:
        pipe.send(("done", result))
    finally:
        pipe.close()


# --- the coordinator side -----------------------------------------------------------------------


@dataclass
class RunData:
    """Everything ``Scenario.summarize`` gets about one finished run."""

    target: Target
    results: list[dict[str, Any]]
    snapshots: dict[str, Snapshot]
    peak_rss: int
    extra: dict[str, Any] = field(default_factory=dict)

    def cpu_pct(self, start: str, end: str) -> tuple[float | None, float | None, float | None]:
        """(server %, server event-loop thread %, load generator %) between two barriers."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or b.t <= a.t:
            return None, None, None
        dt = b.t - a.t

        def pct(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else round(100.0 * (y - x) / dt, 1)

        return (
            pct(a.server_cpu, b.server_cpu),
            pct(a.server_loop_cpu, b.server_loop_cpu),
            pct(a.client_cpu, b.client_cpu),
        )

    def other_cpu_pct(self, start: str, end: str) -> float | None:
        """CPU used on the machine by anything but the server (its node(s), PostgreSQL and
        Redis when the bench started them) and the load generator (% of one core)."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or b.t <= a.t:
            return None
        if a.groups_cpu and b.groups_cpu:
            server = sum(b.groups_cpu.values()) - sum(a.groups_cpu.values())
        elif a.server_cpu is not None and b.server_cpu is not None:
            server = b.server_cpu - a.server_cpu
        else:
            return None
        other = (b.machine_cpu - a.machine_cpu) - server - (b.client_cpu - a.client_cpu)
        return round(max(0.0, 100.0 * other / (b.t - a.t)), 1)

    def group_cpu_s(self, role: str, start: str, end: str) -> float | None:
        """CPU seconds of one role's processes ("node", "postgres", "redis") between two barriers."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or role not in a.groups_cpu or role not in b.groups_cpu:
            return None
        return b.groups_cpu[role] - a.groups_cpu[role]

    def thread_cpu_pcts(self, start: str, end: str) -> list[float]:
        """CPU % of the server's busiest threads (the event loop is the process's own id)."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or b.t <= a.t:
            return []
        dt = b.t - a.t
        pcts = [100.0 * (cpu - a.server_threads.get(tid, 0.0)) / dt for tid, cpu in b.server_threads.items()]
        return [round(p, 1) for p in sorted(pcts, reverse=True)[:4] if p >= 1.0]

    def server_cpu_s(self, start: str, end: str) -> float | None:
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or a.server_cpu is None or b.server_cpu is None:
            return None
        return b.server_cpu - a.server_cpu

    def server_procs_cpu_s(self, start: str, end: str) -> dict[str, float]:
        """CPU seconds of each of the server's processes (the node, its children by label)."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None:
            return {}
        return {label: cpu - a.server_procs.get(label, 0.0) for label, cpu in b.server_procs.items()}

    def server_procs_cpu_pct(self, start: str, end: str) -> dict[str, float]:
        """Each of the server's processes' CPU % of one core between two barriers."""
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        if a is None or b is None or b.t <= a.t:
            return {}
        dt = b.t - a.t
        return {label: round(100.0 * cpu / dt, 1) for label, cpu in sorted(self.server_procs_cpu_s(start, end).items())}

    def client_cpu_s(self, start: str, end: str) -> float | None:
        a, b = self.snapshots.get(start), self.snapshots.get(end)
        return None if a is None or b is None else b.client_cpu - a.client_cpu


class Coordinator:
    """Spawns the workers, runs the barriers, collects results — all within the deadline."""

    def __init__(self, scenario: Scenario, target: Target, payloads: list[Any], deadline: float) -> None:
        self.scenario = scenario
        self.target = target
        self.payloads = payloads
        self.deadline = deadline
        self.snapshots: dict[str, Snapshot] = {}
        self.procs: list[BaseProcess] = []
        self.pipes: list[Connection] = []
        self.probe: Probe | None = None
        #: what a scenario's ``on_barrier`` gathered (e.g. server counters), for ``summarize``
        self.extra: dict[str, Any] = {}

    def snapshot(self, name: str) -> Snapshot:
        assert self.probe is not None
        snap = self.snapshots[name] = self.probe.snapshot()
        return snap

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def run(self) -> RunData:
        ctx = multiprocessing.get_context("spawn")
        n = len(self.payloads)
        for i, payload in enumerate(self.payloads):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(self.scenario.name, i, n, payload, child_end, self.deadline),
                name=f"yim-bench-worker-{i}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.pipes.append(parent_end)
        self.probe = Probe(self.target.pid, [p.pid for p in self.procs if p.pid is not None], groups=self.target.groups)
        self.probe.start()
        try:
            results = self._loop()
        finally:
            self.probe.stop()
            self._reap()
        return RunData(self.target, results, self.snapshots, self.probe.peak_rss, self.extra)

    def _loop(self) -> list[dict[str, Any]]:
        n = len(self.pipes)
        results: list[dict[str, Any] | None] = [None] * n
        at_barrier: dict[int, str] = {}
        open_pipes = dict(enumerate(self.pipes))
        while open_pipes:
            left = self.deadline + _GRACE_S - time.monotonic()
            if left <= 0:
                raise BenchError(f"workers did not finish within --timeout (+{_GRACE_S:.0f}s grace)")
            ready = multiprocessing.connection.wait(list(open_pipes.values()), timeout=min(left, 1.0))
            for pipe in ready:
                # wait() returns the very objects it was given: look up the Connection itself
                i = next(k for k, p in open_pipes.items() if p is pipe)
                try:
                    kind, value = open_pipes[i].recv()
                except EOFError:
                    raise BenchError(
                        f"worker {i} exited without a result (exit code {self.procs[i].exitcode})"
                    ) from None
                if kind == "error":
                    raise BenchError(f"worker {i} failed:\n{value}")
                if kind == "done":
                    results[i] = value
                    del open_pipes[i]
                elif kind == "barrier":
                    at_barrier[i] = value
            waiting = [i for i in open_pipes if i in at_barrier]
            if open_pipes and len(waiting) == len(open_pipes):
                names = {at_barrier[i] for i in waiting}
                if len(names) != 1:
                    raise BenchError(f"workers disagree on the barrier: {sorted(names)}")
                name = names.pop()
                self.snapshot(name)
                self._statements(name)
                self.scenario.on_barrier(name, self)
                for i in waiting:
                    self.pipes[i].send(("go", name))
                at_barrier.clear()
        return [r for r in results if r is not None]

    def _statements(self, name: str) -> None:
        """A cluster stack's log counts at the end of the measured phase, and with
        ``--pg-stat-statements`` PostgreSQL's statement times over it (reset at its first
        barrier, read at its last, both after the CPU snapshot)."""
        stack = self.target.stack
        if stack is None:
            return
        start, end = self.scenario.cpu_phase
        if name == end:
            self.extra["logs"] = stack.log_counts()
        if not stack.pg_stat_statements:
            return
        if name == start:
            stack.reset_statements()
        elif name == end:
            self.extra["pg_statements"] = stack.statements()

    def _reap(self) -> None:
        for proc in self.procs:
            proc.join(timeout=max(1.0, min(5.0, self.remaining())))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


# --- one run, many runs -------------------------------------------------------------------------


def run_once(scenario: Scenario, system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start (or reach) the server, run the scenario once, return its result row."""
    started = time.monotonic()
    deadline = started + args.timeout
    if args.url:
        host, port = check_loopback(args.url)
        pid = args.server_pid or find_listener_pid(host, port)
        target = Target(url=args.url.rstrip("/").replace("ws://", "http://", 1), system=system, pid=pid)
        return run_on(scenario, target, deadline, args)
    if is_yim(system) and (args.store == "postgres" or args.nodes > 1):
        from yimbench.stack import ClusterStack

        stack = ClusterStack(args.nodes, env=scenario.node_env(), pg_stat_statements=args.pg_stat_statements)
        with stack as target:
            return run_on(scenario, target, deadline, args)
    if system == "ejabberd":
        from yimbench.ejabberd import EjabberdServer

        with EjabberdServer(modules=args.ejabberd_modules, busy_wait=args.ejabberd_busy_wait) as target:
            return run_on(scenario, target, deadline, args)
    with LocalServer(system, env=scenario.node_env() if is_yim(system) else None) as target:
        return run_on(scenario, target, deadline, args)


def run_on(scenario: Scenario, target: Target, deadline: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario once on a server already up (``target``), by ``deadline`` (monotonic)."""
    setup_started = time.monotonic()
    payloads = uvloop.run(
        asyncio.wait_for(scenario.prepare(target, deadline), timeout=max(1.0, deadline - time.monotonic()))
    )
    setup_s = time.monotonic() - setup_started
    coordinator = Coordinator(scenario, target, payloads, deadline)
    data = coordinator.run()
    row: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
    row.update(
        system=target.system,
        scenario=scenario.name,
        params={**scenario.params(), "procs": len(payloads), **target.notes},
        server_rss_mb=round(data.peak_rss / 2**20, 1) if data.peak_rss else None,
        cores=psutil.cpu_count(),
    )
    start, end = scenario.cpu_phase
    row["server_cpu_pct"], row["server_loop_cpu_pct"], row["client_cpu_pct"] = data.cpu_pct(start, end)
    if target.system == "ejabberd":
        # an Erlang VM has no one event loop: its schedulers are threads (server_threads_cpu_pct)
        row["server_loop_cpu_pct"] = None
    row["other_cpu_pct"] = data.other_cpu_pct(start, end)
    row["server_threads_cpu_pct"] = data.thread_cpu_pcts(start, end)
    if scenario.mem_phase is not None:
        a, b = (data.snapshots.get(k) for k in scenario.mem_phase)
        conns = scenario.connections()
        if a and b and a.server_rss is not None and b.server_rss is not None and conns >= 100:
            row["kb_per_conn"] = round((b.server_rss - a.server_rss) / 1024 / conns, 2)
    row.update(scenario.summarize(data))
    row.update(_cpu_by_role(data, start, end, row.get("acked")))
    acked = row.get("acked")
    if isinstance(acked, int | float) and acked > 0:
        procs = data.server_procs_cpu_s(start, end)
        if procs:  # server_cpu_us_per_msg is their sum
            row["server_procs_cpu_us_per_msg"] = {k: round(v / acked * 1e6, 1) for k, v in sorted(procs.items())}
    row.update(data.extra.get("logs", {}))
    if "pg_statements" in data.extra:
        row["pg_statements"] = data.extra["pg_statements"]
    row["setup_s"] = round(setup_s, 2)  # accounts over HTTP, not part of any figure
    row["limited_by"] = limited_by(row, len(payloads))
    return row


#: the roles whose CPU a run reports (yimbench/target.py Target.groups), and the load generator
ROLES = ("node", "postgres", "redis")


def _cpu_by_role(data: RunData, start: str, end: str, acked: Any) -> dict[str, Any]:
    """``<role>_cpu_pct`` and ``<role>_cpu_us_per_msg`` for every process role (node(s),
    PostgreSQL's postmaster and backends, Redis) and the load generator, and their sum
    per message over the server's side (``stack_cpu_us_per_msg``)."""
    a, b = data.snapshots.get(start), data.snapshots.get(end)
    if a is None or b is None or b.t <= a.t:
        return {}
    dt = b.t - a.t
    out: dict[str, Any] = {}
    per_msg = isinstance(acked, int | float) and acked > 0
    stack = 0.0
    for role in ROLES:
        cpu = data.group_cpu_s(role, start, end)
        if cpu is None:
            continue
        out[f"{role}_cpu_pct"] = round(100.0 * cpu / dt, 1)
        stack += cpu
        if per_msg:
            out[f"{role}_cpu_us_per_msg"] = round(cpu / acked * 1e6, 1)
    client = data.client_cpu_s(start, end)
    if per_msg and out:
        out["stack_cpu_us_per_msg"] = round(stack / acked * 1e6, 1)
        if client is not None:
            out["generator_cpu_us_per_msg"] = round(client / acked * 1e6, 1)
    return out


def limited_by(row: dict[str, Any], procs: int) -> str:
    """A hint at who saturated: the server's event loop, the load generator, or neither."""
    loop = row.get("server_loop_cpu_pct") or row.get("server_cpu_pct")
    client = row.get("client_cpu_pct")
    cores = os.cpu_count() or 1
    server = row.get("server_cpu_pct") or 0
    threads = row.get("server_threads_cpu_pct") or []
    hints = []
    if row.get("system") == "ejabberd":
        # one scheduler thread per core, no GIL: the VM is saturated when all of them are
        if server >= 90 * cores:
            shares = " + ".join(f"{t:.0f}" for t in threads)
            hints.append(f"ejabberd's VM ({shares}% over its scheduler threads)")
    elif loop is not None and loop >= 90:
        hints.append(f"server event loop ({loop:.0f}% of one core)")
    elif threads and threads[0] >= 90:
        hints.append(f"a server thread ({threads[0]:.0f}% of one core)")
    elif server >= 85 and len(threads) > 1:
        shares = " + ".join(f"{t:.0f}" for t in threads)
        hints.append(f"server process ({shares}% over its threads, whose Python work shares one GIL)")
    if client is not None and client >= 90 * min(procs, cores):
        hints.append(f"load generator ({client:.0f}% over {procs} process(es))")
    pg = row.get("postgres_cpu_pct")
    if pg is not None and pg >= 80:
        hints.append(f"PostgreSQL ({pg:.0f}% of a core over its processes)")
    other = row.get("other_cpu_pct") or 0
    side = (row.get("postgres_cpu_pct") or 0) + (row.get("redis_cpu_pct") or 0)
    nodes = row.get("node_cpu_pct") or server
    total = nodes + side + (client or 0) + other
    if not hints and total >= 90 * cores:
        hints.append(f"machine CPU (server + load generator + other = {total:.0f}% of {cores} cores)")
    if other >= 25:
        hints.append(f"other processes used {other:.0f}% of a core: figures are noisy")
    return "; ".join(hints) or "not CPU-bound (window, rate or latency bound)"


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians of several runs of the same configuration."""
    out: dict[str, Any] = dict(rows[0])
    for key, value in rows[0].items():
        if key in ("params", "system", "scenario", "run"):
            continue
        values = [r.get(key) for r in rows]
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if nums and len(nums) == len(values):
            med = statistics.median(nums)
            out[key] = round(med, 3) if isinstance(med, float) else med
        elif len(lists := [v for v in values if isinstance(v, list)]) == len(values) and all(
            isinstance(x, int | float) for v in lists for x in v
        ):
            # per-position medians (e.g. the server's busiest threads, busiest first)
            width = max(len(v) for v in lists)
            out[key] = [round(statistics.median(v[i] for v in lists if len(v) > i), 1) for i in range(width)]
        elif len(dicts := [v for v in values if isinstance(v, dict)]) == len(values) and all(
            isinstance(x, int | float) for v in dicts for x in v.values()
        ):
            # per-key medians (e.g. the CPU per message of each server process)
            out[key] = {k: round(statistics.median(v.get(k, 0.0) for v in dicts), 1) for k in value}
        elif isinstance(value, str) and key == "limited_by":
            out[key] = statistics.mode(str(v) for v in values)
    out["run"] = f"median of {len(rows)}"
    return out
