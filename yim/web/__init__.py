"""The bundled web chat client: static files served by every node (``/``, ``/static/``,
and the service worker at ``/sw.js``).

Plain JavaScript modules and CSS, no build step. :func:`asset` maps a URL path below
``/static/`` to a file of this package, refusing anything that is not a plain relative
path of allowed characters (no ``..``, no dot-files, no backslashes) or whose extension
is not a known static type, so a request can never reach outside the package.
Assets are cached in memory with a strong ETag and re-read when the file changes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
}
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    stamp: tuple[int, int]  # (mtime_ns, size) of the file it was read from


_cache: dict[str, Asset] = {}


def asset(rel: str) -> Asset | None:
    """The file at ``rel`` (a ``/``-separated path inside this package), or None."""
    parts = rel.split("/")
    if not 0 < len(parts) <= _MAX_DEPTH or not all(_SEGMENT.fullmatch(p) for p in parts):
        return None
    content_type = CONTENT_TYPES.get(Path(parts[-1]).suffix.lower())
    if content_type is None:
        return None
    node = resources.files(__name__)
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    stamp = (0, 0)
    if isinstance(node, Path):
        st = node.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(rel)
    if cached is not None and cached.stamp == stamp:
        return cached
    body = node.read_bytes()
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    found = Asset(body=body, content_type=content_type, etag=etag, stamp=stamp)
    _cache[rel] = found
    return found
