"""What a scenario provides to the run engine (yimbench/runner.py).

A new scenario (``group``, ``fanout-sweep`` …) is one module with a ``Scenario`` subclass,
listed in ``yimbench.scenarios.SCENARIOS``:

- ``add_arguments`` — its own options (the common ones live in yimbench/cli.py);
- ``variants`` — the configurations one invocation runs (one, or a sweep over a parameter);
- ``prepare`` — in the coordinator: accounts (and conversations) over HTTP, then one
  payload per load-generator process;
- ``work`` — in each load-generator process: connect, walk the barriers, drive the load,
  return raw results (counts, latencies, timestamps);
- ``on_barrier`` — optional coordinator hook while every worker waits at a barrier;
- ``summarize`` — worker results + psutil snapshots → the scenario's result fields;
- ``sweep_plots`` — optional charts over every variant of a sweep (``--plot``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from yimbench.client import Account, raw_connect
from yimbench.rawws import RawWebSocket

if TYPE_CHECKING:
    import aiohttp

    from yimbench.runner import Coordinator, RunData, WorkerCtx
    from yimbench.target import Target

#: the node's ``group_write_fanout_max`` that forces each ``--fanout`` mode (auto: its default)
FANOUT_THRESHOLD = {"write": "1000000", "read": "1"}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_fields(latencies_ms: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_ms)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "p50_ms": r(percentile(values, 50)),
        "p95_ms": r(percentile(values, 95)),
        "p99_ms": r(percentile(values, 99)),
        "max_ms": r(values[-1] if values else None),
    }


class WindowedPair(Protocol):
    """What :class:`WindowedSends` needs of a pair: its messages in flight, and the future a
    paced sender waits on while its window is full."""

    inflight: int
    waiter: asyncio.Future[None] | None


class WindowedSends:
    """The one sending rule of the one-to-one load, whatever protocol carries it (yim's
    WebSocket frames, XMPP stanzas): at most ``window`` messages of a pair in flight until
    its receiver has them; ``interval`` > 0 paces each sender to one message per interval
    (a full window still holds it back). A subclass writes the message (``_send``) and calls
    ``_release`` when one is delivered or refused."""

    n: int
    window: int
    interval: float
    pairs: dict[int, Any]

    def _start_sending(self) -> list[asyncio.Task[None]]:
        """Start the load: one paced sender task per pair, spread evenly over one interval,
        or (unpaced) every pair's window filled at once, the rest sent as slots free up."""
        if self.interval:
            step = self.interval / len(self.pairs)
            start = time.monotonic()
            return [asyncio.create_task(self._paced(p, start + k * step)) for k, p in enumerate(self.pairs.values())]
        for p in self.pairs.values():
            for _ in range(min(self.window, self.n)):
                self._send(p)
        return []

    def _send(self, p: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _release(p: WindowedPair) -> None:
        p.inflight -= 1
        waiter = p.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _paced(self, p: WindowedPair, start: float) -> None:
        loop = asyncio.get_running_loop()
        for k in range(self.n):
            delay = start + k * self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while p.inflight >= self.window:
                p.waiter = loop.create_future()
                await p.waiter
                p.waiter = None
            self._send(p)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin ``items`` over ``parts`` non-empty lists (fewer if there are fewer items)."""
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


def add_fanout_arguments(g: argparse._ArgumentGroup) -> None:
    """``--fanout`` and ``--drain``, as the group scenarios take them."""
    g.add_argument(
        "--fanout", choices=("write", "read", "auto"), default="auto", help="fan-out mode to force (default auto)"
    )
    g.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late deliveries (default 10)")


def fanout_env(fanout: str) -> dict[str, str]:
    """The node setting that forces ``fanout`` (none for auto)."""
    threshold = FANOUT_THRESHOLD.get(fanout)
    return {"YIM_GROUP_WRITE_FANOUT_MAX": threshold} if threshold else {}


def load_span(results: list[dict[str, Any]]) -> float:
    """Seconds from the first send of any worker to the last receipt of any (0: none)."""
    firsts = [r["first_send"] for r in results if r["first_send"]]
    lasts = [r["last_event"] for r in results if r["last_event"]]
    return (max(lasts) - min(firsts)) if firsts and lasts else 0.0


def gathered(results: list[dict[str, Any]], key: str) -> list[float]:
    """Every worker's ``key`` list (latencies, times) in one."""
    values: list[float] = []
    for r in results:
        values.extend(r[key])
    return values


async def create_group(http: aiohttp.ClientSession, owner: Account, members: list[Account], name: str) -> Any:
    """A group of ``owner`` with ``members``, over HTTP; its reply body (``group``: the group)."""
    r = await http.post(
        "/api/v1/groups",
        json={"name": name, "members": [m.user_id for m in members]},
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    body = await r.json()
    if r.status != 201:
        raise RuntimeError(f"creating the group {name!r} failed: {body}")
    return body


async def open_sockets(ctx: WorkerCtx, conns: list[tuple[int, str, str]]) -> dict[int, RawWebSocket]:
    """One connection per (key, url, token), at most 100 opening at once, within the run's time."""
    socks: dict[int, RawWebSocket] = {}
    sem = asyncio.Semaphore(100)

    async def open_one(key: int, url: str, token: str) -> None:
        async with sem:
            socks[key], _ = await raw_connect(url, token, keep_reading=True)

    try:
        await asyncio.wait_for(asyncio.gather(*(open_one(*conn) for conn in conns)), timeout=max(0.1, ctx.remaining()))
    except BaseException:
        await close_sockets(socks)
        raise
    return socks


async def settle_and_drain(
    ctx: WorkerCtx, settled: asyncio.Future[None] | None, drain: float, received: Callable[[], int], expected: int
) -> None:
    """Wait until every send of this worker is answered (``settled``; None: it sends
    nothing), then up to ``drain`` seconds for the ``expected`` receipts; the run's time
    bounds both."""
    try:
        if settled is not None:
            await asyncio.wait_for(asyncio.shield(settled), timeout=max(0.0, ctx.remaining()))
        deadline = time.monotonic() + min(drain, max(0.0, ctx.remaining()))
        while received() < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    except TimeoutError:
        pass


async def close_sockets(socks: dict[int, RawWebSocket]) -> None:
    await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in socks.values()), return_exceptions=True), timeout=10)


class Tally:
    """What the members of one load-generator process count: sends and their answers,
    receipts, latencies (ms), and when the load began and ended. ``settled`` resolves once
    each of the ``my_sends`` sends of this process is answered."""

    def __init__(self, my_sends: int) -> None:
        self.lat = array("d")
        self.sent = self.acked = self.received = self.dups = self.errors = 0
        self.first_send = 0.0
        self.last_event = 0.0
        self.my_sends = my_sends
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sending(self, now_s: float) -> None:
        if not self.first_send:
            self.first_send = now_s
        self.sent += 1

    def answered(self, ok: bool) -> None:
        if ok:
            self.acked += 1
        else:
            self.errors += 1
        if self.acked + self.errors >= self.my_sends and not self.settled.done():
            self.settled.set_result(None)

    async def settle_and_drain(self, ctx: WorkerCtx, drain: float, expected: int) -> None:
        """:func:`settle_and_drain` for this process's sends and receipts."""
        await settle_and_drain(ctx, self.settled if self.my_sends else None, drain, lambda: self.received, expected)

    def counts(self) -> dict[str, Any]:
        """The tallies, as a worker returns them."""
        return {
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "dups": self.dups,
            "errors": self.errors,
            "first_send": self.first_send,
            "last_event": self.last_event,
            "lat": self.lat,
        }


class Scenario:
    name: ClassVar[str]
    help: ClassVar[str]
    #: what p50..max measure in this scenario
    latency_of: ClassVar[str]
    #: can the bare relay (which stores nothing) serve this scenario?
    baseline_ok: ClassVar[bool] = True
    #: the barriers between which CPU percentages are measured
    cpu_phase: ClassVar[tuple[str, str]]
    #: the barriers whose server-RSS difference, per connection, gives kb_per_conn
    mem_phase: ClassVar[tuple[str, str] | None] = ("ready", "connected")
    #: table columns: (result key, header, format)
    columns: ClassVar[list[tuple[str, str, str]]] = []
    #: ``params`` that differ between the variants of a sweep: the variants then share one
    #: table (these are columns of it) instead of printing a header each
    swept: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def variants(cls, args: argparse.Namespace) -> list[argparse.Namespace]:
        """The configurations one invocation runs; a sweep returns several."""
        return [args]

    def validate(self) -> None:
        """Raise ValueError on options that make no sense together."""

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def node_env(self) -> dict[str, str]:
        """Settings (YIM_* variables) for a node the bench starts itself for this scenario."""
        return {}

    def connections(self) -> int:
        """How many WebSocket connections the run holds open (for kb_per_conn)."""
        return 0

    async def prepare(self, target: Target, deadline: float) -> list[Any]:
        raise NotImplementedError

    def on_barrier(self, name: str, coordinator: Coordinator) -> None:
        pass

    @staticmethod
    async def work(ctx: WorkerCtx, payload: Any) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self, run: RunData) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def sweep_plots(cls, directory: Path, rows: list[dict[str, Any]]) -> list[Path]:
        """Charts over all variants of one invocation (one row per variant and system,
        the median where there were several runs); returns the files written."""
        return []
