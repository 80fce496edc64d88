"""The aiohttp application of a node and its server lifecycle (start, graceful stop)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from typing import Any

from aiohttp import web

from yim.config import Settings
from yim.gateway.http import error_middleware, routes
from yim.gateway.keys import NODE_KEY
from yim.gateway.limits import install_connection_guard, throttle_logger
from yim.gateway.media_http import media_routes
from yim.gateway.openapi import openapi_handler
from yim.gateway.ws import websocket_handler
from yim.node import Node
from yim.protocol.errors import YimError

log = logging.getLogger("yim.gateway")

#: The cyclic GC's thresholds for a serving process (CPython's defaults: 700, 10, 10): a
#: young collection every 10,000 allocations; a middle one every 2 young ones; a full one
#: considered every 50 middle ones (and run only once the old heap grew by 25 %). See
#: tune_gc().
GC_YOUNG_THRESHOLD = 10_000
GC_MIDDLE_THRESHOLD = 2
GC_OLD_THRESHOLD = 50


#: the exit code of a node that stopped because it can never serve again (e.g. fenced and no
#: node id to lease): its supervisor should restart it
EXIT_FAILED = 3

#: what a fenced node still answers: probes and metrics
_FENCE_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def fence_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A fenced node takes no new connections, logins or API calls: the client goes elsewhere."""
    node = request.app[NODE_KEY]
    if node.fenced is not None and request.path not in _FENCE_OPEN:
        raise YimError(
            "unavailable", "this node is fenced (its node id is not confirmed); use another node", retry_after=1.0
        )
    return await handler(request)


def build_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, fence_middleware], client_max_size=node.settings.hard_frame_bytes
    )
    app[NODE_KEY] = node
    app.router.add_get("/ws", websocket_handler)
    app.add_routes(routes)
    app.add_routes(media_routes)
    app.router.add_get("/api/v1/openapi.json", openapi_handler)
    return app


class NodeServer:
    """A node served on host:port. ``start()`` returns once it accepts connections."""

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.node = Node(settings)
        self.app = build_app(self.node)
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        await self.node.start()
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=5.0,
            # also the deadline for a new connection's first complete request (slowloris)
            keepalive_timeout=self.settings.http_idle_timeout_s,
            # a request line fits the longest query the API takes (a 1,024-character media
            # name, percent-encoded); headers keep aiohttp's limits (8 KiB each, 128 of them)
            max_line_size=16 * 1024,
            # No SO_KEEPALIVE: a setsockopt per connect for probes after 2 h of silence, when
            # the idle sweep closes a silent WebSocket after idle_timeout_s and the deadline
            # above a silent HTTP connection.
            tcp_keepalive=False,
        )
        await self._runner.setup()
        install_connection_guard(self._runner.server, self.node.limits)
        throttle_logger("aiohttp.server")  # it logs every malformed request with a traceback
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))
        sock.listen(4096)
        self.port = sock.getsockname()[1]
        # SockSite listens again on the socket: without backlog it would shrink to 128 and
        # drop connections in a reconnect storm.
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl, backlog=4096)
        await site.start()
        log.info("serving on %s (WebSocket %s/ws)", self.url, self.url.replace("http", "ws", 1))

    async def stop(self) -> None:
        """Stop accepting, close every connection with 1001 after flushing, drain the store."""
        self.node.stopping = True
        for conn in list(self.node.hub.connections()):
            conn.close(1001, "server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        await self.node.stop()


def tune_gc() -> None:
    """Make the cyclic GC cheap for a process whose heap is mostly long-lived connections.

    Every connection leaves ~65 GC-tracked objects behind (aiohttp's protocol, parser,
    request, WebSocket reader and writer, two tasks and their coroutines, ours). With
    CPython's default thresholds a young collection runs every ~10 connects and moves
    them on, a middle one every ~100, and a full one at every 25 % of heap growth: in a
    burst of 10,000 connects that was 2.5-4 s of event-loop CPU, ~300 µs per connect,
    more than a bare relay spends on the whole connect. Freezing what exists after
    start-up (modules, classes, the node) keeps it out of every later scan, and a young
    threshold of 10,000 makes collections ~15 times rarer. Garbage cycles then wait for
    at most 10,000 more allocations (a few MB).

    A middle collection scans everything promoted since the last one, and in a burst of
    connects nearly everything survives: with CPython's 10 young collections per middle
    one, that was ~100,000 objects and pauses of 36-62 ms in a burst of 10,000 connects.
    Every 2 young ones, the pauses stay under ~15 ms for the same total work (each object is
    scanned once on its way to the old generation either way). The old threshold grows by
    the same factor, so a full collection is still considered every ~1M allocations and
    runs only once the heap has grown by 25 % since the last.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, GC_OLD_THRESHOLD)


async def serve_forever(settings: Settings, ssl_context: ssl.SSLContext | None = None) -> None:
    server = NodeServer(settings, ssl_context=ssl_context)
    await server.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"yim node {server.node.ids.node_id} listening on {server.url}  (data: {settings.data_dir})", flush=True)
    failed = loop.create_task(server.node.failed.wait())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    log.info("shutting down")
    await server.stop()
    if server.node.failed.is_set():
        raise SystemExit(EXIT_FAILED)
