"""The clocks of the host a node runs on, and which of them a time that leaves the host is in.

A node takes a device's connect time on the host's monotonic clock (``Clock.monotonic``,
``Device.connected_at``): immune to clock steps, so "which of my connections is older" and
every duration on the host stay right. CLOCK_MONOTONIC counts from about the host's boot,
though, so its readings mean nothing on another host: a node on a host that booted a month
earlier would look a month newer. Every connect time that other hosts compare is therefore
wall-clock milliseconds since the epoch — a route's ``connected_ms`` (the multi-device
policy sorts every node's devices by it, :mod:`yim.bus.redis`) and a presence field's
(the newest connection of a device wins, :mod:`yim.bus.cluster_state`) — converted at the
moment it is written, by :meth:`Clock.wall_ms` / :meth:`Clock.offset`.

Invariant: a ``connected_at`` is a reading of the same node's ``clock.monotonic`` (the
gateway takes it with ``node.clock``), so the conversion holds; times that stay on the host
(the workers' hub of one node, the hub's own policy) stay monotonic.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """A host's monotonic and wall clocks, as a node reads them (default: the real ones; a
    test gives two nodes in one process the clocks of two hosts)."""

    __slots__ = ("monotonic", "wall")

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.monotonic = monotonic
        self.wall = wall

    def offset(self) -> float:
        """Seconds that turn a reading of ``monotonic`` into a wall-clock time, as the two
        clocks stand now.

        Derived when a time is sent rather than stamped at connect, so a connection keeps one
        float and no second time (idle memory per connection counts). The cost is the error
        bound: a time converted now is off from the wall clock's reading at the event by the
        wall clock's steps in between (an NTP step, settimeofday; and time the host spent
        suspended, which CLOCK_MONOTONIC does not count) — it is where the wall clock as it
        reads now puts the event, which is what other hosts, synchronised to the same time,
        compare it with. NTP's slewing does not count: it adjusts both clocks alike. The two
        reads add microseconds. Across hosts add their clock skew (NTP: milliseconds)."""
        return self.wall() - self.monotonic()

    def wall_ms(self, at: float, offset: float | None = None) -> int:
        """``at``, a reading of ``monotonic``, as wall-clock ms since the epoch (see
        :meth:`offset` for the error bound); ``offset``: one :meth:`offset` read for a
        batch of times, else read now."""
        return int((at + (self.offset() if offset is None else offset)) * 1000)
