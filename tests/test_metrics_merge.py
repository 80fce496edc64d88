"""A scrape of a multi-process node sums its workers' metrics (yim/metrics.py): two workers'
snapshots, through the wire, merge into what one node that saw everything would expose."""

from __future__ import annotations

import msgspec
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from yim.metrics import Family, Metrics, node_exposition, snapshot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: bytes) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and every family's type, as a scraper reads them."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def _work(m: Metrics, n: int, op: str, code: str, latencies: list[float]) -> None:
    """What a worker counts: loop counters (plain and labelled), prometheus_client's own
    counters (plain and labelled), a gauge and a histogram."""
    m.messages_in.inc(n)
    m.frames_in.labels("send").inc(n)
    m.frames_in.labels(op).inc()
    m.errors.labels(code).inc(2)
    m.logins.inc(n)
    m.pushes.labels("webpush", "sent").inc(n)
    m.connections.inc(n + 1)
    for seconds in latencies:
        m.store_latency.observe(seconds)


def _wire(m: Metrics) -> list[Family]:
    """A worker's snapshot as the worker answering the scrape decodes it."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(snapshot(m.registry)), type=list[Family])


def test_two_workers_merge_into_one_node() -> None:
    a, b, whole = Metrics(), Metrics(), Metrics()
    _work(a, 3, "sync", "rate_limited", [0.0003, 0.004, 2.0])
    _work(b, 5, "pull", "rate_limited", [0.004, 0.03])
    _work(whole, 3, "sync", "rate_limited", [0.0003, 0.004, 2.0])
    _work(whole, 5, "pull", "rate_limited", [0.004, 0.03])

    merged, types = _samples(node_exposition([_wire(a), _wire(b)], {"jobs": 7, "batches": 2}))
    want, want_types = _samples(generate_latest(whole.registry))

    def created(s: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {k: v for k, v in s.items() if k[0].endswith("_created")}

    # every series of the node, summed; a counter's creation time is the earliest worker's
    assert {k: v for k, v in merged.items() if k not in created(merged)} == {
        **{k: v for k, v in want.items() if k not in created(want)},
        ("yim_store_jobs_total", ()): 7,
        ("yim_store_batches_total", ()): 2,
        ("yim_workers_reporting", ()): 2,
    }
    assert created(merged).keys() == created(want).keys()
    first, second = _samples(generate_latest(a.registry))[0], _samples(generate_latest(b.registry))[0]
    for key, value in created(merged).items():
        assert value == min(first.get(key, value), second.get(key, value))
    assert types == {**want_types, "yim_store_jobs": "counter", "yim_store_batches": "counter",
                     "yim_workers_reporting": "gauge"}  # fmt: skip

    # spot checks, by hand: labelled series only one worker has, histogram buckets cumulative
    assert merged[("yim_messages_in_total", ())] == 8
    assert merged[("yim_frames_in_total", (("op", "send"),))] == 8
    assert merged[("yim_frames_in_total", (("op", "sync"),))] == 1
    assert merged[("yim_frames_in_total", (("op", "pull"),))] == 1
    assert merged[("yim_errors_total", (("code", "rate_limited"),))] == 4
    assert merged[("yim_pushes_total", (("kind", "webpush"), ("outcome", "sent")))] == 8
    assert merged[("yim_connections", ())] == 4 + 6
    assert merged[("yim_store_latency_seconds_bucket", (("le", "0.005"),))] == 3
    assert merged[("yim_store_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert merged[("yim_store_latency_seconds_count", ())] == 5
    assert abs(merged[("yim_store_latency_seconds_sum", ())] - 2.0383) < 1e-9


def test_a_worker_alone_and_no_store() -> None:
    """One worker answering (the others left out) is still a whole exposition; a store process
    that did not answer leaves its series out rather than reporting stale or zero counts."""
    m = Metrics()
    m.messages_in.inc(2)
    got, _ = _samples(node_exposition([_wire(m)], None))
    assert got[("yim_workers_reporting", ())] == 1
    assert got[("yim_messages_in_total", ())] == 2
    assert not [k for k in got if k[0].startswith(("yim_store_jobs", "yim_store_batches"))]
