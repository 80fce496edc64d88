"""HTTP routes of data exports (docs/protocol.md §19.7): ``GET /api/v1/admin/users/{user_id}/export``
(a server admin; audit-logged) and ``GET /api/v1/me/export`` (the user's own data). Both
answer a zip archive (``application/zip``), built by :mod:`yim.services.export` into a
temporary file that is streamed and then removed. HTTP only: a WebSocket frame is no place
for an archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from yim.gateway.http import authenticated, read_query
from yim.gateway.keys import NODE_KEY, ServedNode
from yim.gateway.media_http import content_disposition
from yim.gateway.openapi import Operation, describe
from yim.protocol.frames import AdminExportQuery, MyExportQuery
from yim.protocol.ids import parse_id
from yim.services.export import ExportGate, begin_admin_export, check_admin, clear_leftovers, export_dir, write_archive

log = logging.getLogger("yim.gateway.export")

export_routes = web.RouteTableDef()
EXPORT_GATE: web.AppKey[ExportGate] = web.AppKey("export_gate")
_CHUNK = 256 * 1024


def setup_exports(app: web.Application, node: ServedNode) -> None:
    """The node's export gate, and removal of archives a crash left behind."""
    app[EXPORT_GATE] = ExportGate(node.settings.export_max_concurrent)

    async def clear(app: web.Application) -> None:
        await asyncio.to_thread(clear_leftovers, node.settings.data_path)

    app.on_startup.append(clear)
    app.add_routes(export_routes)


async def _send(request: web.Request, path: Path, name: str) -> web.StreamResponse:
    size = (await asyncio.to_thread(path.stat)).st_size
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Length": str(size),
            "Content-Disposition": content_disposition("attachment", name),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    with open(path, "rb") as fh:  # noqa: ASYNC230 - reads below run in worker threads
        try:
            while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                await response.write(chunk)
        except (ConnectionError, OSError) as exc:
            log.info("export download ended early: %s", exc)
            response.force_close()
            return response
    await response.write_eof()
    return response


async def _archive(request: web.Request, node: ServedNode, user_id: int, exported_by: str) -> web.StreamResponse:
    path, name, _counts = await write_archive(
        node.store, node.media.blobs, user_id, export_dir(node.settings.data_path), exported_by
    )
    try:
        return await _send(request, path, name)
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink)


@export_routes.get("/api/v1/admin/users/{user_id:[0-9]{1,20}}/export", allow_head=False)  # no archive for a HEAD
async def admin_export(request: web.Request) -> web.StreamResponse:
    node: ServedNode = request.app[NODE_KEY]
    session = await authenticated(request)
    node.limits.check_request(session.user_id)
    query = read_query(request, AdminExportQuery)
    user_id = parse_id(request.match_info["user_id"], "user")
    await check_admin(node.store, session.user_id)
    with request.app[EXPORT_GATE].slot():
        # the audit row is written before the first byte is read (and whatever happens next)
        await begin_admin_export(node.store, session.user_id, user_id, query.reason, f"http {request.remote}")
        return await _archive(request, node, user_id, "admin")


describe(
    "GET",
    "/api/v1/admin/users/{user_id}/export",
    Operation("A user's data as a zip archive (server admins; audit-logged)", query=AdminExportQuery, binary=True),
)


@export_routes.get("/api/v1/me/export", allow_head=False)
async def my_export(request: web.Request) -> web.StreamResponse:
    node: ServedNode = request.app[NODE_KEY]
    session = await authenticated(request)
    node.limits.check_request(session.user_id)
    read_query(request, MyExportQuery)
    with request.app[EXPORT_GATE].slot():
        return await _archive(request, node, session.user_id, "self")


describe("GET", "/api/v1/me/export", Operation("Your own data as a zip archive", query=MyExportQuery, binary=True))
