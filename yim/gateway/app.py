"""The aiohttp application of a node (its routes and middlewares), and the GC tuning of a
serving process. ``yim.node.NodeServer`` serves it."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from yim.gateway.export_http import setup_exports
from yim.gateway.http import error_middleware, routes
from yim.gateway.keys import NODE_KEY, ServedNode
from yim.gateway.media_http import media_routes
from yim.gateway.openapi import openapi_handler
from yim.gateway.ws import websocket_handler
from yim.protocol.errors import YimError

log = logging.getLogger("yim.gateway")

#: The cyclic GC's thresholds for a serving process (CPython's defaults: 700, 10, 10): a
#: young collection every 10,000 allocations; a middle one every 2 young ones; a full one
#: considered every 50 middle ones (and run only once the old heap grew by 25 %). See
#: tune_gc().
GC_YOUNG_THRESHOLD = 10_000
GC_MIDDLE_THRESHOLD = 2
GC_OLD_THRESHOLD = 50

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


@web.middleware
def ws_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Awaitable[web.StreamResponse]:
    """``/ws`` goes straight to its handler, past the other middlewares.

    An ``async def`` middleware's coroutine frame lives as long as the request it wraps, and
    a WebSocket's request lasts as long as its connection: the frames of error_middleware
    and fence_middleware were ~520 bytes of every idle connection. This middleware is a
    plain function that hands back the handler's own coroutine, so it leaves no frame.
    Nothing the two do is lost for ``/ws``: a fenced node's refusal still goes through them,
    before the upgrade the handler raises only HTTP errors (which error_middleware passes on
    outside /api/), and after it no HTTP answer can be sent: the handler answers errors on
    the socket, and aiohttp's server logs an unexpected exception as error_middleware did.
    """
    if request.match_info.handler is websocket_handler and request.app[NODE_KEY].fenced is None:
        return websocket_handler(request)
    return handler(request)


def build_app(node: ServedNode) -> web.Application:
    app = web.Application(
        middlewares=[ws_middleware, error_middleware, fence_middleware], client_max_size=node.settings.hard_frame_bytes
    )
    app[NODE_KEY] = node
    app.router.add_get("/ws", websocket_handler)
    app.add_routes(routes)
    app.add_routes(media_routes)
    setup_exports(app, node)
    app.router.add_get("/api/v1/openapi.json", openapi_handler)
    return app


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
