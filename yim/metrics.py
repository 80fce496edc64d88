"""Prometheus metrics of one node (names prefixed ``yim_``), served at ``GET /metrics``.

Each node owns its registry, so several nodes in one process (tests) do not collide.

The counters on the message path (every frame, message, push) are plain integers read by a
collector at scrape time: prometheus_client's own take a lock and, when labelled, a
label lookup with validation on every increment — 8 % of the event loop's time under
load. Invariant: they are only changed on the event-loop thread, so an integer add needs
no lock; a scrape reads them on the same thread.

A node of several workers (``yim serve --workers N``) answers a scrape of any worker with the
whole node: the worker that takes it asks the others for their :func:`snapshot` (through the
store process, yim/bus/workers.py), sums them per series with :func:`merge` and adds the
store's own series once (:func:`node_exposition`). A one-process node's registry is exposed as
it is.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class LoopCounter:
    """A counter changed only on the event-loop thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class LabelledLoopCounter:
    """A counter with one label, changed only on the event-loop thread."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, LoopCounter] = {}

    def labels(self, value: str) -> LoopCounter:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = LoopCounter()
        return child


class LoopHistogram:
    """A histogram observed only on the event-loop thread."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class _LoopCollector(Collector):
    def __init__(self) -> None:
        self.counters: list[tuple[str, str, LoopCounter]] = []
        self.labelled: list[tuple[str, str, str, LabelledLoopCounter]] = []
        self.histograms: list[tuple[str, str, LoopHistogram]] = []

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for name, doc, counter in self.counters:
            yield CounterMetricFamily(name, doc, value=counter.value)
        for name, doc, label, labelled in self.labelled:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, child in sorted(labelled.children.items()):
                family.add_metric([value], child.value)
            yield family
        for name, doc, hist in self.histograms:
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, hist.bounds), "+Inf"], hist.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("yim_connections", "Authenticated WebSocket connections", registry=r)
        self.fenced = Gauge("yim_fenced", "1 while the node is fenced (no node id it can vouch for)", registry=r)
        self.fences = Counter("yim_fences_total", "Times the node fenced itself", registry=r)
        loop = _LoopCollector()
        self.frames_in = self._labelled(loop, "yim_frames_in", "Request frames received", "op")
        self.errors = self._labelled(loop, "yim_errors", "Error replies sent", "code")
        self.messages_in = self._counter(loop, "yim_messages_in", "Messages accepted and stored")
        self.messages_dup = self._counter(loop, "yim_messages_duplicate", "Resends answered idempotently")
        self.events_out = self._counter(loop, "yim_events_out", "Event frames pushed to connections")
        self.deliveries = self._counter(loop, "yim_deliveries", "Inbox entries written (one per member)")
        self.store_latency = LoopHistogram((0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        loop.histograms.append(
            ("yim_store_latency_seconds", "Time from submitting a message to its durable commit", self.store_latency)
        )
        self.webhook_before_send = self._labelled(
            loop, "yim_webhook_before_send", "before_send webhook verdicts: allow, reject, replace, failed", "result"
        )
        self.webhook_deliveries = self._labelled(
            loop, "yim_webhook_deliveries", "Outbox webhook attempts: delivered, retry, dead", "result"
        )
        self.slow_consumers = self._counter(loop, "yim_slow_consumers", "Connections cut off for not reading")
        r.register(loop)
        self.logins = Counter("yim_logins_total", "Successful logins", registry=r)
        self.pushes = Counter(
            "yim_pushes_total", "Pushes sent to providers, by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.service_assignments = Counter(
            "yim_service_assignments_total", "Service sessions assigned to an agent", registry=r
        )
        self.webhook_dead_letters = Gauge(
            "yim_webhook_dead_letters", "Webhook events that failed every attempt (store-wide)", registry=r
        )
        self.webhook_outbox = Gauge(
            "yim_webhook_outbox", "Webhook events waiting in the outbox (store-wide)", registry=r
        )
        self.service_queued = Counter("yim_service_queued_total", "Service sessions put in a shop queue", registry=r)
        #: set on a worker of a multi-process node: the exposition of the whole node, which
        #: ``GET /metrics`` answers instead of this registry's (yim/bus/workers.py)
        self.whole_node: Callable[[], Awaitable[bytes]] | None = None

    @staticmethod
    def _counter(loop: _LoopCollector, name: str, doc: str) -> LoopCounter:
        counter = LoopCounter()
        loop.counters.append((name, doc, counter))
        return counter

    @staticmethod
    def _labelled(loop: _LoopCollector, name: str, doc: str, label: str) -> LabelledLoopCounter:
        counter = LabelledLoopCounter()
        loop.labelled.append((name, doc, label, counter))
        return counter


class StoreCollector(Collector):
    """The store writer's group-commit counters (``stats``), read at scrape time:
    jobs / batches is the average batch, the measure of how well commits are shared."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        for key, value in sorted(self._stats().items()):
            yield CounterMetricFamily(f"yim_store_{key}", f"store writer: {key.replace('_', ' ')}", value=value)


# --- a node of several workers: one scrape answers for all of them ------------------------
class Family(msgspec.Struct, array_like=True, frozen=True):
    """One metric family of a worker's registry as it travels to the worker answering a
    scrape: what ``collect()`` gave, samples as (name, labels, value)."""

    name: str
    type: str
    documentation: str
    unit: str
    samples: list[tuple[str, dict[str, str], float]]


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """Every family of ``registry`` now (a worker's registry holds no store series)."""
    return [
        Family(m.name, m.type, m.documentation, m.unit, [(s.name, s.labels, s.value) for s in m.samples])
        for m in registry.collect()
    ]


#: one series of a family: its sample name and labels
_Series = tuple[str, tuple[tuple[str, str], ...]]


def merge(snapshots: Iterable[list[Family]]) -> list[Metric]:
    """The families of several workers as one node's: each series (sample name and labels)
    summed over the workers that have it — counters, gauges (connections of the node) and
    histogram buckets, sums and counts alike — except a ``_created`` time, the earliest of
    them. Families and series keep the order they are first seen in."""
    firsts: dict[str, Family] = {}
    labels_of: dict[str, dict[_Series, dict[str, str]]] = {}
    values: dict[str, dict[_Series, float]] = {}
    for families in snapshots:
        for family in families:
            if family.name not in firsts:
                firsts[family.name], labels_of[family.name], values[family.name] = family, {}, {}
            labels, sums = labels_of[family.name], values[family.name]
            created = family.name + "_created"
            for name, sample_labels, value in family.samples:
                key = (name, tuple(sorted(sample_labels.items())))
                if key not in sums:
                    labels[key], sums[key] = sample_labels, value
                elif name == created:
                    sums[key] = min(sums[key], value)
                else:
                    sums[key] += value
    out = []
    for family_name, first in firsts.items():
        metric = Metric(family_name, first.documentation, first.type, first.unit)
        labels = labels_of[family_name]
        for key, value in values[family_name].items():
            metric.add_sample(key[0], labels[key], value)
        out.append(metric)
    return out


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def node_exposition(snapshots: list[list[Family]], store_stats: dict[str, int] | None) -> bytes:
    """The text a scrape of a multi-process node answers: the workers' ``snapshots`` (those
    that answered) merged, the store's counters once (None: the store process did not
    answer, its series are left out of this scrape) and ``yim_workers_reporting``."""
    families = merge(snapshots)
    if store_stats is not None:
        families += StoreCollector(lambda: store_stats).collect()
    families.append(
        GaugeMetricFamily("yim_workers_reporting", "Workers whose counters this scrape sums", value=len(snapshots))
    )
    return generate_latest(_Families(families))
