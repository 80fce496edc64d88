"""HTTP routes of media: ``POST /api/v1/media`` (streaming upload) and
``GET /api/v1/media/{media_id}`` (+ ``/thumbnail``) with Range, ETag and caching.

Downloads are allowed to the uploader and to members who can see a message carrying the
media (docs/protocol.md, "Media, search"); anyone else gets ``404 media_not_found``, the
same answer as for an id that does not exist, so ids cannot be probed. A server admin also
reads the file of a reported message through its report:
``GET /api/v1/admin/reports/{report_id}/media/{media_id}`` (+ ``/thumbnail``, §19.9).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from yim.gateway.http import authenticated, error_response, json_response, read_query
from yim.gateway.keys import NODE_KEY, ServedNode
from yim.protocol.errors import YimError
from yim.protocol.frames import MediaUploadQuery
from yim.protocol.ids import parse_id
from yim.services.reports import report_media
from yim.storage.media import IMAGE_MIMES

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

log = logging.getLogger("yim.gateway.media")

media_routes = web.RouteTableDef()

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ ()+-]")
#: downloads are never rendered as a page of this origin
_MEDIA_CSP = "default-src 'none'; sandbox"


def _node(request: web.Request) -> ServedNode:
    return request.app[NODE_KEY]


@media_routes.post("/api/v1/media")
async def upload(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        session = await authenticated(request)
        node.limits.check_upload(session.user_id)
        query = read_query(request, MediaUploadQuery)
        media = await node.media.upload(
            session.user_id,
            query.kind,
            query.name,
            request.content,
            request.content_length,
            request.headers.get("Content-Type", ""),
        )
    except YimError as exc:
        node.metrics.errors.labels(exc.code).inc()
        response = error_response(exc)
        if not request.content.is_eof():
            # The client is still sending (a refused 200 MB upload): answer now and close,
            # rather than reading and discarding the rest.
            response.force_close()
        return response
    return json_response(media, status=201)


def content_disposition(disposition: str, name: str) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 name; nothing that could break the header."""
    fallback = _UNSAFE_FILENAME.sub("_", name) or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` → [start, stop), or None to send the whole body (no header,
    several ranges, or a unit other than bytes). Raises ``ValueError`` if unsatisfiable."""
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    if start >= size or stop <= start:
        raise ValueError("range outside the content")
    return start, stop


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


async def _serve(request: web.Request, *, thumbnail: bool) -> web.StreamResponse:
    node = _node(request)
    session = await authenticated(request)
    raw_id = int(request.match_info["media_id"])
    if "report_id" in request.match_info:
        media = await report_media(node, session, parse_id(request.match_info["report_id"], "report"), raw_id)
    else:
        media = await node.media.visible(session.user_id, raw_id)
    blob = media.blob
    if thumbnail:
        if blob.thumb_sha256 is None or blob.thumb_size is None:
            raise YimError("media_not_found", f"media {media.id} has no thumbnail")
        key, size, mime = blob.thumb_sha256, blob.thumb_size, "image/webp"
        name = media.name.rsplit(".", 1)[0] + ".webp"
    else:
        key, size, mime, name = blob.sha256, blob.size, blob.mime, media.name
    inline = mime in IMAGE_MIMES or mime.startswith(("video/", "audio/"))
    etag = f'"{key}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={node.settings.media_cache_max_age_s}",
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _MEDIA_CSP,
        "Content-Disposition": content_disposition("inline" if inline else "attachment", name),
    }
    if _etag_matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    start, stop, status = 0, size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == etag):
        try:
            wanted = parse_range(range_header, size)
        except ValueError:
            refused = error_response(YimError("range_not_satisfiable", f"the content is {size} bytes"))
            refused.headers["Content-Range"] = f"bytes */{size}"
            return refused
        if wanted is not None:
            (start, stop), status = wanted, 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Type"] = mime
    headers["Content-Length"] = str(stop - start)
    chunks: AsyncGenerator[bytes, None] = node.media.blobs.read(key, start, stop)
    try:
        first = b""
        if request.method != "HEAD" and stop > start:
            try:
                first = await anext(chunks)  # fail before the status line if the blob is gone
            except Exception as exc:
                log.error("media %s: blob %s unreadable: %s", media.id, key, exc)
                raise YimError("unavailable", "the media's bytes cannot be read right now") from None
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD" or stop <= start:
            await response.write_eof()
            return response
        try:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except (ConnectionError, OSError) as exc:
            # The client went away, or the blob store failed mid-body: the declared length
            # was not met, so close the connection rather than reuse it.
            log.info("media %s: download ended early: %s", media.id, exc)
            response.force_close()
            return response
        await response.write_eof()
        return response
    finally:
        await chunks.aclose()


@media_routes.get("/api/v1/media/{media_id:[0-9]{1,20}}")
async def download(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=False)


@media_routes.get("/api/v1/media/{media_id:[0-9]{1,20}}/thumbnail")
async def download_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=True)


@media_routes.get("/api/v1/admin/reports/{report_id:[0-9]{1,20}}/media/{media_id:[0-9]{1,20}}")
async def report_download(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=False)


@media_routes.get("/api/v1/admin/reports/{report_id:[0-9]{1,20}}/media/{media_id:[0-9]{1,20}}/thumbnail")
async def report_download_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=True)
