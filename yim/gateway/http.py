"""HTTP API routes under ``/api/v1/`` plus ``/healthz``, ``/metrics`` and ``/``.

Handlers are thin: decode and validate into the typed structs of
:mod:`yim.protocol.frames`, call a service, encode the result. Errors are
``{"code": ..., "message": ...}`` with the status of the code (docs/protocol.md).
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from yim import __version__
from yim.gateway.keys import NODE_KEY
from yim.protocol.errors import YimError
from yim.protocol.frames import (
    ConversationsQuery,
    Health,
    HistoryQuery,
    LoginBody,
    ReadBody,
    RegisterBody,
    SendBody,
    SyncQuery,
    UserQuery,
)
from yim.services import conversations as conv_service
from yim.services import sync as sync_service
from yim.services.accounts import user_out
from yim.services.messages import parse_id, send_ack, send_message
from yim.storage.base import SessionRec

if TYPE_CHECKING:
    from yim.node import Node

log = logging.getLogger("yim.gateway.http")
T = TypeVar("T")
_encoder = msgspec.json.Encoder()


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def error_response(exc: YimError) -> web.Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    headers = {}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.Response(body=_encoder.encode(body), status=exc.status, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except YimError as exc:
        request.app[NODE_KEY].metrics.errors.labels(exc.code).inc()
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            code = {404: "not_found", 405: "bad_request", 413: "frame_too_large"}.get(exc.status, "bad_request")
            return error_response(YimError(code, exc.reason or "error"))
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(YimError("internal", "internal error"))


async def read_body(request: web.Request, type_: type[T]) -> T:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise YimError("bad_request", str(exc).replace("`$.", "`")) from None
    except msgspec.DecodeError as exc:
        raise YimError("bad_frame", f"body is not valid JSON: {exc}") from None


def read_query(request: web.Request, type_: type[T]) -> T:
    try:
        return msgspec.convert(dict(request.query), type_, strict=False)
    except msgspec.ValidationError as exc:
        raise YimError("bad_request", f"query: {str(exc).replace('`$.', '`')}") from None


async def authenticated(request: web.Request) -> SessionRec:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise YimError("unauthorized", "missing `Authorization: Bearer <token>` header")
    return await _node(request).accounts.authenticate(token.strip())


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


# --- routes --------------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    node = _node(request)
    return json_response(
        Health(
            status="stopping" if node.stopping else "ok",
            node_id=node.settings.node_id,
            version=__version__,
            uptime_s=round(time.time() - node.started_at, 3),
            connections=len(node.hub),
        )
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_node(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    page = resources.files("yim.web").joinpath("index.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


@routes.post("/api/v1/accounts")
async def register(request: web.Request) -> web.Response:
    body = await read_body(request, RegisterBody)
    return json_response(await _node(request).accounts.register(body), status=201)


@routes.post("/api/v1/sessions")
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    return json_response(await _node(request).accounts.login(body), status=201)


@routes.delete("/api/v1/sessions/current")
async def logout(request: web.Request) -> web.Response:
    session = await authenticated(request)
    await _node(request).accounts.logout(session)
    return web.Response(status=204)


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    session = await authenticated(request)
    users = await _node(request).store.users_by_ids([session.user_id])
    return json_response(user_out(users[session.user_id]))


@routes.get("/api/v1/users")
async def find_user(request: web.Request) -> web.Response:
    await authenticated(request)
    query = read_query(request, UserQuery)
    user = await _node(request).store.user_by_name(query.username)
    if user is None:
        raise YimError("not_found", f"no user named {query.username!r}")
    return json_response(user_out(user))


@routes.get("/api/v1/users/{user_id:[0-9]{1,20}}")
async def get_user(request: web.Request) -> web.Response:
    await authenticated(request)
    uid = parse_id(request.match_info["user_id"], "user")
    users = await _node(request).store.users_by_ids([uid])
    if uid not in users:
        raise YimError("not_found", f"no user {uid}")
    return json_response(user_out(users[uid]))


@routes.get("/api/v1/devices")
async def devices(request: web.Request) -> web.Response:
    session = await authenticated(request)
    return json_response({"devices": await _node(request).accounts.devices(session)})


@routes.delete("/api/v1/devices/{device_id}")
async def revoke_device(request: web.Request) -> web.Response:
    session = await authenticated(request)
    await _node(request).accounts.revoke_device(session.user_id, request.match_info["device_id"])
    return web.Response(status=204)


@routes.post("/api/v1/messages")
async def post_message(request: web.Request) -> web.Response:
    session = await authenticated(request)
    body = await read_body(request, SendBody)
    result = await send_message(_node(request), session, body)
    return json_response(send_ack(result), status=200 if result.duplicate else 201)


@routes.get("/api/v1/sync")
async def get_sync(request: web.Request) -> web.Response:
    session = await authenticated(request)
    q = read_query(request, SyncQuery)
    return json_response(await sync_service.sync(_node(request), session, q.since, q.limit))


@routes.get("/api/v1/conversations")
async def get_conversations(request: web.Request) -> web.Response:
    session = await authenticated(request)
    q = read_query(request, ConversationsQuery)
    return json_response(await conv_service.list_conversations(_node(request), session, q.before, q.limit))


@routes.get("/api/v1/conversations/{conv_id:[0-9]{1,20}}/messages")
async def get_history(request: web.Request) -> web.Response:
    session = await authenticated(request)
    q = read_query(request, HistoryQuery)
    page = await conv_service.history(
        _node(request), session, request.match_info["conv_id"], q.before, q.after, q.limit
    )
    return json_response(page)


@routes.post("/api/v1/conversations/{conv_id:[0-9]{1,20}}/read")
async def post_read(request: web.Request) -> web.Response:
    session = await authenticated(request)
    body = await read_body(request, ReadBody)
    result = await conv_service.mark_read(_node(request), session, request.match_info["conv_id"], body.seq)
    return json_response(result)
