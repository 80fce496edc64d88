"""What a service is handed: the narrow interfaces it uses, not the node that implements them.

Services sit under the gateway and the bus and may not import them (nor ``yim.node``, the
composition root that builds everything). So the things a service reaches through are
described here as typing Protocols: ``Context`` (store, ids, settings, the devices on this
node, the bus, and the node's other services as the little each service uses of them) and
``Device`` (one live connection: "the connection that asked", or one a push goes to).
``yim.node.Node`` and ``yim.gateway.connection.Connection`` satisfy them structurally; the
services only name them in annotations, so nothing here costs anything at run time (no
wrapper on the send path).

The service collaborators (rosters, presence, ...) are Protocols too rather than the
classes themselves: those classes take a ``Context``, and naming them here would close an
import cycle inside the services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from yim.config import Settings
    from yim.ids.snowflake import Snowflake
    from yim.metrics import Metrics
    from yim.protocol.codec import Codec
    from yim.services.hooks import Webhooks
    from yim.services.words import WordFilter
    from yim.storage.base import Store
    from yim.storage.blobs import BlobStore
    from yim.storage.records import MessageRec, SendCmd, SendResult
    from yim.storage.relations import InboxWrite

#: Where the request being served came from ("http <ip>", "ws <ip>"): the gateway sets it
#: for each request, the audit log records it.
REQUEST_SOURCE: ContextVar[str] = ContextVar("yim_request_source", default="")

#: a user's devices on this node, as presence shares them: device id -> (status, platform,
#: connected_ms), that in ms of this host's monotonic clock (the workers of one node share
#: it; a cluster's shared state converts it to wall-clock ms, yim/services/clock.py)
LocalDevices = dict[str, tuple[str, str, int]]
#: a user's presence: (status, sorted platform classes)
State = tuple[str, tuple[str, ...]]


class PresenceChange:
    """What one sync of a user with the shared state found: the aggregate now, and what it
    was before; ``may_be_agent`` False when the shared state knows the user is no
    customer-service agent (their change then needs no agent check)."""

    __slots__ = ("before", "changed", "last_seen", "may_be_agent", "state", "user_id")

    def __init__(
        self,
        user_id: int,
        changed: bool,
        state: State,
        before: State,
        last_seen: int | None,
        may_be_agent: bool = True,
    ) -> None:
        self.user_id = user_id
        self.changed = changed
        self.state = state
        self.before = before
        self.last_seen = last_seen
        self.may_be_agent = may_be_agent


class Device(Protocol):
    """One device's live connection on this node."""

    user_id: int
    device_id: str
    platform: str
    #: "online" or "away" (presence_set)
    presence: str
    session_id: str
    acked_seq: int
    codec: Codec
    closing: bool
    #: a reading of the node's ``clock.monotonic`` (yim/services/clock.py): comparable only
    #: on this host; what leaves it is converted to wall-clock time
    connected_at: float

    def send(self, payload: bytes) -> None:
        """Queue one complete, already-encoded frame."""

    def close(self, code: int, reason: str) -> None: ...


class Devices(Protocol):
    """This node's live connections (the gateway's hub)."""

    def devices_of(self, user_id: int) -> Mapping[str, Device]: ...

    def connections_of(self, user_id: int) -> Iterable[Device]: ...

    def connections(self) -> Iterator[Device]: ...

    def online_users(self) -> int: ...

    def online_user_ids(self) -> list[int]: ...

    def close_sessions(self, user_id: int, session_ids: set[str], code: int, reason: str) -> int: ...


class Publish(Protocol):
    """Pushing to devices, on this node and (cluster mode) every other: the bus."""

    def publish_entry(
        self, deliveries: list[tuple[int, int]], payload_json: bytes, origin: Device | None = None
    ) -> None: ...

    def publish_event(
        self, deliveries: list[tuple[int, int]], type_: str, payload_json: bytes, origin: Device | None = None
    ) -> None: ...

    def publish_notice(
        self,
        user_ids: Iterable[int],
        type_: str,
        payload_json: bytes,
        origin: Device | None = None,
        skip: set[int] | None = None,
    ) -> None: ...

    def sessions_revoked(self, user_id: int, session_ids: list[str], reason: str, code: int = ...) -> None: ...

    def roster_changed(self, conv_id: int) -> None: ...


class SharedState(Protocol):
    """Cluster mode: the presence and online agents every node shares (through Redis)."""

    #: False while the shared state is unreachable: callers use this node's own view
    healthy: bool

    def unavailable(self, exc: BaseException) -> None: ...

    async def presence_sync(self, users: dict[int, LocalDevices], swept: set[str]) -> list[PresenceChange]: ...

    async def presence_read(
        self, user_ids: list[int], local: Callable[[int], LocalDevices] | None = None
    ) -> dict[int, tuple[State, int | None]]: ...

    async def device_present(self, user_id: int, device_id: str) -> bool: ...

    def agent_connected(self, user_id: int) -> bool: ...

    async def agent_online(self, user_id: int, online: bool) -> None: ...


class RosterCache(Protocol):
    async def members(self, conv_id: int) -> set[int]: ...

    def apply(self, entry: MessageRec) -> None: ...

    def invalidate(self, conv_id: int) -> None: ...

    def push_notice(
        self,
        conv_id: int,
        type_: str,
        payload_json: bytes,
        origin: Device | None = None,
        skip: set[int] | None = None,
    ) -> None: ...


class PresenceView(Protocol):
    def changed(self, user_id: int) -> None: ...

    async def view(self, user_ids: list[int], fresh: bool = False) -> dict[int, tuple[State, int | None]]: ...

    def payload(self, user_id: int, state: State) -> bytes: ...

    def share(self, a: int, b: int) -> None: ...


class ServiceEvents(Protocol):
    """The customer service as other services see it."""

    def is_connected(self, user_id: int) -> bool: ...

    def publish(self, events: list[InboxWrite], origin: Device | None = None) -> None: ...

    def presence_changed(self, user_id: int, online: bool) -> None: ...

    async def agent_added(self, user_id: int) -> None: ...


class Credentials(Protocol):
    """Passwords and sessions, as the admin and self-service actions use them."""

    async def hash_password(self, password: str) -> str: ...

    async def check_password(self, password_hash: str, password: str) -> bool: ...

    def sessions_ended(self, user_id: int, session_ids: list[str], reason: str, code: int) -> None: ...


class MediaSend(Protocol):
    def send_message(self, cmd: SendCmd) -> asyncio.Future[SendResult]: ...

    @property
    def blobs(self) -> BlobStore:
        """The media bytes (an erasure deletes the ones no one else uses)."""


class TypingGate(Protocol):
    def allow(self, user_id: int, conv_id: int) -> bool: ...


class RateLimits(Protocol):
    """The node's rate limits a service checks itself (the gateway checks the others)."""

    def check_react(self, user_id: int) -> None: ...


class SyncReadAhead(Protocol):
    def take(self, user_id: int, device_id: str, since: int, limit: int) -> asyncio.Task[Any] | None: ...

    def start(self, ctx: Context, user_id: int, device_id: str, since: int, limit: int) -> None: ...

    def forget(self, user_id: int, device_id: str) -> None: ...


class PushControl(Protocol):
    """Push as the services see it: which pushers this node can serve, the VAPID key."""

    @property
    def vapid_public_key(self) -> str | None: ...

    @property
    def allow_http(self) -> bool: ...

    def accepts(self, kind: str) -> bool: ...


class Context(Protocol):
    """What a service uses of the node it runs in. Read-only properties, so that the node's
    own, more specific members (its concrete bus, hub, ...) satisfy them."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def ids(self) -> Snowflake: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def hub(self) -> Devices: ...

    @property
    def bus(self) -> Publish: ...

    @property
    def cluster(self) -> SharedState | None:
        """Cluster mode only."""

    @property
    def rosters(self) -> RosterCache: ...

    @property
    def presence(self) -> PresenceView: ...

    @property
    def service(self) -> ServiceEvents: ...

    @property
    def media(self) -> MediaSend: ...

    @property
    def accounts(self) -> Credentials: ...

    @property
    def typing(self) -> TypingGate: ...

    @property
    def read_ahead(self) -> SyncReadAhead: ...

    @property
    def words(self) -> WordFilter | None:
        """The sensitive-word filter; None when no word list is configured."""

    @property
    def limits(self) -> RateLimits: ...

    @property
    def push(self) -> PushControl: ...

    @property
    def hooks(self) -> Webhooks | None:
        """The operator's webhooks; None when none are configured."""
