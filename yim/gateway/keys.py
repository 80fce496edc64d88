"""What the gateway serves: the node, as the little the HTTP and WebSocket handlers use of it.

The gateway sits beside the bus, under the composition root (``yim.node``) that builds
both, and imports neither: ``ServedNode`` describes the node the aiohttp app is given
(``NODE_KEY``), and ``yim.node.Node`` satisfies it structurally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from yim.services.context import Context, Device, Publish

if TYPE_CHECKING:
    from yim.gateway.hub import Hub
    from yim.gateway.limits import Limits
    from yim.services.accounts import Accounts
    from yim.services.clock import Clock
    from yim.services.media import MediaService


class RoutingBus(Publish, Protocol):
    """The bus as a connection's lifecycle tells it about devices (cluster mode: routes)."""

    async def connected(self, conn: Device) -> None: ...

    def registered(self, conn: Device) -> None: ...

    def disconnected(self, conn: Device) -> None: ...


class ServedNode(Context, Protocol):
    @property
    def hub(self) -> Hub: ...

    @property
    def bus(self) -> RoutingBus: ...

    @property
    def accounts(self) -> Accounts: ...

    @property
    def media(self) -> MediaService: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def started_at(self) -> float: ...

    @property
    def clock(self) -> Clock:
        """The host's clocks: a connection's ``connected_at`` is read from its monotonic one."""

    @property
    def stopping(self) -> bool: ...

    @property
    def fenced(self) -> str | None:
        """Why the node serves no one now (its node id is not confirmed), or None."""

    async def readiness(self) -> dict[str, str]: ...


NODE_KEY: web.AppKey[ServedNode] = web.AppKey("node")
