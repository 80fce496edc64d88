"""A device as the gateway's Hub and a bus use it, for tests that drive a bus in-process (the
workers' and the cluster's): the frames it would write to its WebSocket are kept, and a
close is recorded instead of ending a socket."""

from __future__ import annotations

import json
import time
from typing import Any

from yim.protocol.codec import JSON


class RecordingDevice:
    def __init__(self, user_id: int, device_id: str, platform: str = "web", session_id: str = "s") -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.platform = platform
        self.presence = "online"
        self.session_id = session_id
        self.acked_seq = 0
        self.codec = JSON
        self.closing = False
        self.closed: tuple[int, str] | None = None
        self.connected_at = time.monotonic()  # as the gateway's Connection takes it
        self.frames: list[dict[str, Any]] = []

    def send(self, payload: bytes) -> None:
        self.frames.append(json.loads(payload))

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.closed = (code, reason)

    def events(self) -> list[int]:
        return [f["seq"] for f in self.frames if "seq" in f]


async def connect_through(bus: Any, hub: Any, dev: RecordingDevice) -> RecordingDevice:
    """What the gateway does for an authenticated connection (yim/gateway/ws.py): route it
    through the bus, then register it in the hub and tell the bus."""
    await bus.connected(dev)
    hub.register(dev)
    bus.registered(dev)
    return dev


def disconnect_through(bus: Any, hub: Any, dev: RecordingDevice) -> None:
    """What the gateway does when a connection ends."""
    hub.unregister(dev)
    bus.disconnected(dev)
