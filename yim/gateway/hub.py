"""The table of this node's live connections, keyed by (user, device), and local delivery.

Session identity is (user_id, device_id): a device that connects again replaces its old
connection (the old one is closed with 4002), so the newest connection always wins.

Memory: one dict entry per online user, holding the user's Connection itself while it is
the only one (most users), a dict of the user's devices while there are several; a
Connection is ~170 bytes plus its send buffer (none while idle). The whole of an idle
connection, aiohttp's objects included, is in docs/performance.md ("Where an idle
connection's bytes go", "Idle memory at two workers").
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from yim.gateway.connection import Connection
from yim.protocol.close import CLOSE_IDLE, CLOSE_POLICY, CLOSE_REPLACED
from yim.protocol.platforms import signed_out

if TYPE_CHECKING:
    from yim.config import Settings
    from yim.metrics import Metrics


_PLATFORM = operator.attrgetter("platform")
_CONNECTED_AT = operator.attrgetter("connected_at")


class Hub:
    def __init__(self, metrics: Metrics, settings: Settings) -> None:
        #: user -> the user's one connection, or device -> connection when there are several
        #: (never a dict of fewer than two: a dict per user is ~110 bytes of every online user)
        self._by_user: dict[int, Connection | dict[str, Connection]] = {}
        self._metrics = metrics
        self._idle_timeout = settings.idle_timeout_s
        self._class_limits = settings.class_limits
        self._max_per_user = settings.max_connections_per_user
        self._sweeper: asyncio.Task[None] | None = None
        #: (user, device) -> (last_seen_ms, acked_seq), flushed to the store periodically.
        self.seen: dict[tuple[int, str], tuple[int, int]] = {}
        #: every connection's Connection.on_slow: one bound method, not a closure each
        self.on_slow = self._count_slow

    def _count_slow(self, _conn: Connection) -> None:
        self._metrics.slow_consumers.inc()

    def __len__(self) -> int:
        return sum(len(d) if isinstance(d, dict) else 1 for d in self._by_user.values())

    def connections(self) -> Iterator[Connection]:
        for devices in list(self._by_user.values()):
            if isinstance(devices, dict):
                yield from list(devices.values())
            else:
                yield devices

    def online_users(self) -> int:
        return len(self._by_user)

    def online_user_ids(self) -> list[int]:
        return list(self._by_user)

    def devices_of(self, user_id: int) -> dict[str, Connection]:
        """The user's connections by device (read only: with several it is the hub's own dict)."""
        devices = self._by_user.get(user_id)
        if devices is None:
            return {}
        if isinstance(devices, dict):
            return devices
        return {devices.device_id: devices}

    def connections_of(self, user_id: int) -> Iterable[Connection]:
        """The user's connections, as a delivery walks them (no dict made for a lone one)."""
        devices = self._by_user.get(user_id)
        if devices is None:
            return ()
        if isinstance(devices, dict):
            return devices.values()
        return (devices,)

    def register(self, conn: Connection) -> None:
        user_id = conn.user_id
        cur = self._by_user.get(user_id)
        if cur is None or cur is conn or (not isinstance(cur, dict) and cur.device_id == conn.device_id):
            self._by_user[user_id] = conn  # alone: the newest, within every limit
            if cur is not None and cur is not conn:
                cur.close(CLOSE_REPLACED, "replaced by a newer connection of this device")
            else:
                self._metrics.connections.inc()
            return
        devices = cur if isinstance(cur, dict) else {cur.device_id: cur}
        self._by_user[user_id] = devices
        old = devices.get(conn.device_id)
        devices[conn.device_id] = conn
        if old is not None and old is not conn:
            old.close(CLOSE_REPLACED, "replaced by a newer connection of this device")
        else:
            self._metrics.connections.inc()
        self._enforce_device_policy(conn, devices)

    def _enforce_device_policy(self, newest: Connection, devices: dict[str, Connection]) -> None:
        """The newest registration wins: the user's other devices beyond a platform-class
        limit (e.g. one mobile at a time) or beyond the per-user limit are closed with 4006,
        the oldest first. ``newest`` is never among them, also when its socket opened
        before theirs (a slow auth): skipped inside the slice, it would leave one too many."""
        if newest.closing:  # closed during its checks (replaced, kicked): it signs no one out
            return
        others = (c for c in devices.values() if c is not newest and not c.closing)
        limits, most = self._class_limits, self._max_per_user
        for old, reason in signed_out(newest.platform, others, limits, most, _PLATFORM, _CONNECTED_AT):
            old.close(CLOSE_POLICY, reason)

    def unregister(self, conn: Connection) -> None:
        devices = self._by_user.get(conn.user_id)
        if devices is conn:
            del self._by_user[conn.user_id]
            self._metrics.connections.dec()
        elif isinstance(devices, dict) and devices.get(conn.device_id) is conn:
            del devices[conn.device_id]
            if len(devices) == 1:
                self._by_user[conn.user_id] = next(iter(devices.values()))
            self._metrics.connections.dec()
        self.mark_seen(conn)

    def mark_seen(self, conn: Connection) -> None:
        if conn.user_id:
            self.seen[(conn.user_id, conn.device_id)] = (int(time.time() * 1000), conn.acked_seq)

    def deliver(self, user_id: int, frames: dict[str, bytes], exclude: Connection | None = None) -> int:
        """Send an already-encoded frame (one per wire format) to every device of a user."""
        sent = 0
        for conn in self.connections_of(user_id):
            if conn is exclude:
                continue
            conn.send(frames[conn.codec.name])
            sent += 1
        return sent

    def close_sessions(self, user_id: int, session_ids: set[str], code: int, reason: str) -> int:
        closed = 0
        for conn in list(self.connections_of(user_id)):
            if conn.session_id in session_ids:
                conn.close(code, reason)
                closed += 1
        return closed

    # idle sweeping: one task for all connections instead of a timer per connection
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass

    async def _sweep_forever(self) -> None:
        interval = max(0.2, min(5.0, self._idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep_idle()

    def sweep_idle(self) -> int:
        deadline = time.monotonic() - self._idle_timeout
        closed = 0
        for conn in self.connections():
            if conn.last_recv < deadline:
                conn.close(CLOSE_IDLE, "idle timeout: no frame within the heartbeat window")
                closed += 1
        return closed
