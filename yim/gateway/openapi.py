"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/v1/openapi.json``.

It is generated, not written: request and response schemas come from the typed msgspec
structs the handlers decode and encode (``msgspec.json.schema_components``), and the
operations from the app's live route table, so the description cannot drift from the
code. Shared-op routes (``_op_route`` in yim/gateway/http.py, the same ops as the
WebSocket) are described from their op struct and the return annotation of their action;
the handful of explicit handlers are described in ``EXPLICIT`` below; any other ``/api/``
route still appears, with its path parameters and generic responses, and is marked
``x-yim-undescribed`` until someone adds it to ``EXPLICIT`` (or calls ``describe``).

Errors are one schema for every status (``{"code", "message", "retry_after"?}``, codes
listed in docs/protocol.md); a 429 also carries ``Retry-After``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from yim import __version__
from yim.gateway.http import OP_ROUTES
from yim.gateway.ops import OPS
from yim.protocol import frames as f
from yim.protocol.errors import ERROR_STATUS

_REF = "#/components/schemas/{name}"
_PARAM = re.compile(r"\{(\w+)(?::((?:[^{}]|\{[^{}]*\})*))?\}")


@dataclass(frozen=True)
class Operation:
    """What a route takes and returns, for the description."""

    summary: str
    body: Any = None  # a struct type decoded from the JSON body
    query: Any = None  # a struct type decoded from the query string
    response: Any = None  # the struct / type of the success body (None: no body)
    status: int = 200
    auth: bool = True
    extra_status: tuple[int, ...] = ()  # other success statuses with the same body
    raw_body: bool = False  # the body is raw bytes (an upload), not JSON
    binary: bool = False  # the success body is the bytes of a file (200, 206 for a Range, 304)
    unavailable: Any = None  # the struct of the 503 body, where it is not an Error (the probes)


class DevicesPage(msgspec.Struct):
    devices: list[f.DeviceOut]


#: explicit handlers of yim/gateway/http.py, keyed by (METHOD, path without regexes)
EXPLICIT: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation(
        "Liveness and node facts (503 only while the node is fenced)",
        response=f.Health,
        unavailable=f.Health,
        auth=False,
    ),
    ("GET", "/readyz"): Operation(
        "Readiness for a balancer: 200 only if the node, its store and Redis can serve now",
        response=f.Readiness,
        unavailable=f.Readiness,
        auth=False,
    ),
    ("POST", "/api/v1/accounts"): Operation(
        "Register an account", body=f.RegisterBody, response=f.UserOut, status=201, auth=False
    ),
    ("POST", "/api/v1/sessions"): Operation(
        "Log a device in; returns a bearer token", body=f.LoginBody, response=f.LoginOut, status=201, auth=False
    ),
    ("DELETE", "/api/v1/sessions/current"): Operation("Log this session out", status=204),
    ("GET", "/api/v1/me"): Operation("The authenticated user", response=f.UserOut),
    ("GET", "/api/v1/users"): Operation("Find a user by username", query=f.UserQuery, response=f.UserOut),
    ("GET", "/api/v1/users/{user_id}"): Operation("A user's public profile", response=f.UserOut),
    ("GET", "/api/v1/devices"): Operation("This user's devices", response=DevicesPage),
    ("DELETE", "/api/v1/devices/{device_id}"): Operation("Revoke every session of a device", status=204),
    ("POST", "/api/v1/messages"): Operation(
        "Send a message (idempotent by client_msg_id: a resend answers 200)",
        body=f.SendBody,
        response=f.SendAck,
        status=201,
        extra_status=(200,),
    ),
    ("GET", "/api/v1/openapi.json"): Operation("This description", response=dict[str, Any], auth=False),
    ("POST", "/api/v1/media"): Operation(
        "Upload a media file; the body is its raw bytes",
        query=f.MediaUploadQuery,
        raw_body=True,
        response=f.MediaOut,
        status=201,
    ),
    ("GET", "/api/v1/media/{media_id}"): Operation("Download a media file (Range, ETag)", binary=True),
    ("GET", "/api/v1/media/{media_id}/thumbnail"): Operation("A media file's thumbnail (WebP)", binary=True),
    ("GET", "/api/v1/admin/reports/{report_id}/media/{media_id}"): Operation(
        "A server admin downloads the media file of a reported message (Range, ETag)", binary=True
    ),
    ("GET", "/api/v1/admin/reports/{report_id}/media/{media_id}/thumbnail"): Operation(
        "A server admin's view of a reported image's thumbnail (WebP)", binary=True
    ),
}


def describe(method: str, path: str, op: Operation) -> None:
    """Describe a route added outside yim/gateway/http.py (media, customer service ...)."""
    EXPLICIT[(method.upper(), _formatter(path))] = op


def _formatter(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _with_regex(regexes: dict[str, str], m: re.Match[str]) -> str:
    """``{name}`` -> ``{name:regex}``, the regex aiohttp compiled for that parameter."""
    return "{" + m.group(1) + ":" + regexes[m.group(1)] + "}"


def _path_params(path: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in _PARAM.finditer(path)]


def _return_type(action: Any) -> Any:
    ann = inspect.signature(action).return_annotation
    if ann is inspect.Signature.empty:
        return Any  # an untyped action: any JSON (annotate it to describe its result)
    if isinstance(ann, str):
        ann = eval(ann, action.__globals__)  # our own annotations, e.g. "f.SyncPage"
    return ann


def _op_operation(op: type[msgspec.Struct], from_query: bool, status: int) -> Operation:
    action = OPS[op]
    doc = (inspect.getdoc(action) or "").split("\n\n")[0].replace("\n", " ")
    tag = op.__struct_config__.tag
    summary = f"`{tag}` (the WebSocket op of the same name)" + (f": {doc}" if doc else "")
    return Operation(
        summary,
        body=None if from_query else op,
        query=op if from_query else None,
        response=_return_type(action),
        status=status,
    )


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema. ``X | None`` keeps its null branch: the literal ``null``
    in a query string means "absent", as an omitted parameter does."""
    if "default" in schema and schema["default"] is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def build_spec(routes: list[tuple[str, str]], server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document for ``routes``: (METHOD, path pattern) pairs of the app."""
    by_key: dict[tuple[str, str], Operation] = dict(EXPLICIT)
    for method, path, op_type, from_query, status in OP_ROUTES:
        by_key[(method, _formatter(path))] = _op_operation(op_type, from_query, status)

    types: list[Any] = []
    for described in by_key.values():
        for t in (described.body, described.query, described.response, described.unavailable):
            if t is not None and t not in types:
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))

    def fields_of(t: Any, drop: set[str]) -> dict[str, Any]:
        """The object schema of a struct, without the WebSocket envelope and path fields."""
        s = schema_of[t]
        if "$ref" in s:
            s = components[s["$ref"].rsplit("/", 1)[1]]
        s = copy.deepcopy(s)
        drop = drop | {"op", "rid"}
        s["properties"] = {k: v for k, v in s.get("properties", {}).items() if k not in drop}
        s["required"] = [k for k in s.get("required", []) if k not in drop]
        if not s["required"]:
            del s["required"]
        s.pop("title", None)
        s["additionalProperties"] = False  # every body struct forbids unknown fields
        return s

    paths: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for method, pattern in routes:
        if method == "HEAD" or not (pattern.startswith("/api/") or pattern in ("/healthz", "/readyz")):
            continue
        path = _formatter(pattern)
        if (method, path) in seen:
            continue
        seen.add((method, path))
        op = by_key.get((method, path))
        params: list[dict[str, Any]] = []
        path_names = set()
        for name, regex in _path_params(pattern):
            path_names.add(name)
            schema: dict[str, Any] = {"type": "string"}
            if regex:
                schema["pattern"] = f"^{regex}$"
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        entry: dict[str, Any] = {
            "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"
        }
        if op is None:
            entry["summary"] = "(not described yet)"
            entry["x-yim-undescribed"] = True
            entry["responses"] = {"default": _error_ref()}
            entry["parameters"] = params
            paths.setdefault(path, {})[method.lower()] = entry
            continue
        entry["summary"] = op.summary
        if op.query is not None:
            q = fields_of(op.query, path_names)
            required = set(q.get("required", []))
            for name, prop in q["properties"].items():
                params.append(
                    {"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop)}
                )
        if params:
            entry["parameters"] = params
        if op.raw_body:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        if op.body is not None:
            entry["requestBody"] = {
                "required": any(True for _ in fields_of(op.body, path_names).get("required", [])),
                "content": {"application/json": {"schema": fields_of(op.body, path_names)}},
            }
        responses: dict[str, Any] = {}
        if op.binary:
            file = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
            responses["200"] = {"description": "the file", **file}
            responses["206"] = {"description": "the requested range of the file", **file}
            responses["304"] = {"description": "not modified (If-None-Match)"}
        for status in (op.status, *op.extra_status) if not op.binary else ():
            if op.response is None or status == 204:
                responses[str(status)] = {"description": "done (no body)"}
            else:
                responses[str(status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": schema_of[op.response]}},
                }
        responses["4XX"] = _error_ref()
        if op.unavailable is not None:
            responses["503"] = {
                "description": "not serving now",
                "content": {"application/json": {"schema": schema_of[op.unavailable]}},
            }
        else:
            responses["503"] = _error_ref()
        entry["responses"] = responses
        if not op.auth:
            entry["security"] = []
        paths.setdefault(path, {})[method.lower()] = entry

    components["Error"] = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "enum": sorted(ERROR_STATUS)},
            "message": {"type": "string"},
            "retry_after": {"type": "number", "description": "seconds; with a Retry-After header"},
        },
        "required": ["code", "message"],
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "yim HTTP API",
            "version": __version__,
            "description": "Generated from the server's typed schemas; the WebSocket protocol and every error code "
            "are documented in docs/protocol.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _error_ref() -> dict[str, Any]:
    return {
        "description": "an error (docs/protocol.md lists the codes)",
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}},
    }


def app_routes(app: web.Application) -> tuple[tuple[str, str], ...]:
    """(METHOD, path with parameter regexes) of every route of ``app``."""
    out = []
    for route in app.router.routes():
        if route.resource is None:
            continue
        info = route.resource.get_info()
        formatter = info.get("path") or info.get("formatter")
        if formatter is None:
            continue
        regex = info.get("pattern")
        if regex is not None:  # put each parameter's regex back: {name} -> {name:regex}
            groups = dict(re.findall(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", regex.pattern))
            formatter = _PARAM.sub(functools.partial(_with_regex, groups), formatter)
        out.append((route.method, formatter))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _spec_bytes(routes: tuple[tuple[str, str], ...]) -> bytes:
    return msgspec.json.encode(build_spec(list(routes)))


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=_spec_bytes(app_routes(request.app)), content_type="application/json")
