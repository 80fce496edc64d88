"""In-process bus: a stored event goes straight to this node's connections.

Push is only a shortcut: every event is in the store before it is published, and a
device that misses a push (not connected, cut off, pseudo-online) finds it by ``sync``
from its cursor. So the bus may drop; it must never reorder one user's events, and it
does not — publishing happens in commit order on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import msgspec

from yim.ids.snowflake import Snowflake
from yim.protocol.close import CLOSE_REVOKED
from yim.protocol.codec import JSON, MSGPACK
from yim.protocol.frames import Notice

if TYPE_CHECKING:
    from yim.metrics import Metrics
    from yim.services.context import Device as Connection
    from yim.services.context import Devices


class NodeHooks(Protocol):
    """What a cluster bus calls back on the node that owns it: fencing (its node id is no
    longer its own) and the caches a missed cross-node invalidation leaves stale."""

    #: why the node serves no one now, or None
    fenced: str | None
    ids: Snowflake

    def fence(self, reason: str) -> None: ...

    def unfence(self) -> None: ...

    def fail(self, reason: str) -> None:
        """The node can never serve again: it exits."""

    def forget_sessions(self, session_ids: list[str] | None = None) -> None:
        """Drop cached sessions (``None``: all)."""

    def forget_rosters(self, conv_id: int | None = None) -> None:
        """Drop cached conversation rosters (``None``: all)."""


class LocalBus:
    def __init__(self, hub: Devices, metrics: Metrics) -> None:
        self._hub = hub
        self._events_out = metrics.events_out

    def publish_entry(
        self, deliveries: list[tuple[int, int]], payload_json: bytes, origin: Connection | None = None
    ) -> None:
        """The ``message`` event of a committed timeline entry (a send, a recall, a group
        change ...): :meth:`publish_event` on one node and in a cluster. A worker of a node
        of several pushes it to its own devices only: the store process routed it to the
        other workers when it committed it (yim/bus/workers.py)."""
        self.publish_event(deliveries, "message", payload_json, origin)

    def publish_event(
        self,
        deliveries: list[tuple[int, int]],
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
    ) -> None:
        """Push one event to every device of each (user_id, inbox_seq), except ``origin``
        (the sending connection, which learns the same facts from its reply). The payload
        is encoded once; only the small frame around it differs per user."""
        payload_msgpack: bytes | None = None
        connections_of = self._hub.connections_of
        sent = 0
        for user_id, inbox_seq in deliveries:
            json_frame = msgpack_frame = None
            for conn in connections_of(user_id):
                if conn is origin:
                    continue
                if conn.codec.binary:
                    if msgpack_frame is None:
                        if payload_msgpack is None:
                            payload_msgpack = MSGPACK.json_to_native(payload_json)
                        msgpack_frame = MSGPACK.event(inbox_seq, type_, payload_msgpack)
                    conn.send(msgpack_frame)
                else:
                    if json_frame is None:
                        json_frame = JSON.event(inbox_seq, type_, payload_json)
                    conn.send(json_frame)
                sent += 1
        if sent:
            self._events_out.inc(sent)

    def publish_notice(
        self,
        user_ids: Iterable[int],
        type_: str,
        payload_json: bytes,
        origin: Connection | None = None,
        skip: set[int] | None = None,
    ) -> None:
        """Push one unnumbered notice to every online device of the given users: the frame
        is serialized once per wire format and the same bytes go to every connection."""
        frames: dict[str, bytes] = {}
        connections_of = self._hub.connections_of
        if isinstance(user_ids, set | frozenset) and len(user_ids) > self._hub.online_users():
            # A big group with few members online: walk the online users, not the roster.
            user_ids = [u for u in self._hub.online_user_ids() if u in user_ids]
        sent = 0
        for user_id in user_ids:
            if skip and user_id in skip:
                continue
            for conn in connections_of(user_id):
                if conn is origin:
                    continue
                name = conn.codec.name
                frame = frames.get(name)
                if frame is None:
                    codec = MSGPACK if conn.codec.binary else JSON
                    frame = frames[name] = codec.encode(
                        Notice(type=type_, data=msgspec.Raw(codec.json_to_native(payload_json)))
                    )
                conn.send(frame)
                sent += 1
        if sent:
            self._events_out.inc(sent)

    @staticmethod
    def push_event(conn: Connection, seq: int, type_: str, payload_json: bytes) -> None:
        """Push one stored inbox event to one connection (a catch-up, not a fan-out)."""
        if conn.codec.binary:
            conn.send(MSGPACK.event(seq, type_, MSGPACK.json_to_native(payload_json)))
        else:
            conn.send(JSON.event(seq, type_, payload_json))

    # --- cluster hooks: no-ops on one node; yim.bus.redis.RedisBus implements them ---------
    async def ping(self) -> None:
        """Raise if what carries events between nodes is unreachable (nothing, here)."""

    async def start(self) -> None:
        """Connect to whatever carries events between nodes (nothing, here)."""

    async def stop(self) -> None: ...

    def make_ids(self, node_id: int, floor: int) -> Snowflake:
        """The node's id generator (cluster mode leases the node id)."""
        return Snowflake(node_id, floor=floor)

    async def connected(self, conn: Connection) -> None:
        """A device authenticated on this node; called before it is registered locally and
        before its auth reply, so every node can route to it once it can sync."""

    def registered(self, conn: Connection) -> None:
        """The device ``connected`` told of is in this node's hub now (after its checks)."""

    def disconnected(self, conn: Connection) -> None:
        """A device's connection on this node ended."""

    def sessions_revoked(self, user_id: int, session_ids: list[str], reason: str, code: int = CLOSE_REVOKED) -> None:
        """Sessions were revoked on this node: other nodes must drop them too."""

    def roster_changed(self, conv_id: int) -> None:
        """A conversation's membership changed: other nodes' cached rosters are stale."""
