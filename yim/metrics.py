"""Prometheus metrics of one node (names prefixed ``yim_``), served at ``GET /metrics``.

Each node owns its registry, so several nodes in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("yim_connections", "Authenticated WebSocket connections", registry=r)
        self.frames_in = Counter("yim_frames_in_total", "Request frames received", ["op"], registry=r)
        self.errors = Counter("yim_errors_total", "Error replies sent", ["code"], registry=r)
        self.messages_in = Counter("yim_messages_in_total", "Messages accepted and stored", registry=r)
        self.messages_dup = Counter("yim_messages_duplicate_total", "Resends answered idempotently", registry=r)
        self.events_out = Counter("yim_events_out_total", "Event frames pushed to connections", registry=r)
        self.deliveries = Counter("yim_deliveries_total", "Inbox entries written (one per member)", registry=r)
        self.store_latency = Histogram(
            "yim_store_latency_seconds",
            "Time from submitting a message to its durable commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.slow_consumers = Counter("yim_slow_consumers_total", "Connections cut off for not reading", registry=r)
        self.logins = Counter("yim_logins_total", "Successful logins", registry=r)
        self.service_assignments = Counter(
            "yim_service_assignments_total", "Service sessions assigned to an agent", registry=r
        )
        self.service_queued = Counter("yim_service_queued_total", "Service sessions put in a shop queue", registry=r)
