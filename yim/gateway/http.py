"""HTTP API routes under ``/api/v1/`` plus ``/healthz``, ``/readyz``, ``/metrics`` and ``/``.

Handlers are thin: decode and validate into the typed structs of
:mod:`yim.protocol.frames`, call a service, encode the result. Errors are
``{"code": ..., "message": ...}`` with the status of the code (docs/protocol.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from yim import __version__
from yim import web as web_assets
from yim.gateway.keys import NODE_KEY, ServedNode
from yim.gateway.ops import OPS
from yim.protocol import frames as f
from yim.protocol.errors import YimError
from yim.protocol.frames import Health, LoginBody, Readiness, RegisterBody, SendBody, UserQuery
from yim.protocol.ids import parse_id
from yim.services import users
from yim.services.context import REQUEST_SOURCE
from yim.services.messages import forward_copies, send_ack, send_message
from yim.storage.records import SessionRec

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
            code = {404: "not_found", 405: "method_not_allowed", 413: "frame_too_large"}.get(exc.status, "bad_request")
            resp = error_response(YimError(code, exc.reason or "error"))
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
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
    except RecursionError:
        raise YimError("bad_frame", "body is nested too deeply") from None
    except UnicodeError:
        raise YimError("bad_frame", "body is not valid UTF-8") from None


def read_query(request: web.Request, type_: type[T]) -> T:
    if len(set(request.query)) != len(request.query):
        raise YimError("bad_request", "query: a parameter is given more than once")
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


def _node(request: web.Request) -> ServedNode:
    return request.app[NODE_KEY]


# --- routes --------------------------------------------------------------------------------

routes = web.RouteTableDef()


def _health(node: ServedNode, status: str, reason: str | None = None) -> Health:
    return Health(
        status=status,
        node_id=node.ids.node_id,
        version=__version__,
        uptime_s=round(time.time() - node.started_at, 3),
        connections=len(node.hub),
        reason=reason,
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: 503 only while the node is fenced (it holds no node id it can vouch for and
    is leasing a new one); a node that stays fenced exits on its own (docs/operations.md)."""
    node = _node(request)
    if node.fenced is not None:
        return json_response(_health(node, "fenced", node.fenced), status=503)
    return json_response(_health(node, "stopping" if node.stopping else "ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness, for routing users: 200 only if the node serves (not fenced, not stopping)
    and its store and Redis each answer a cheap question now."""
    node = _node(request)
    problems = await node.readiness()
    body = Readiness(
        status="not_ready" if problems else "ready",
        node_id=node.ids.node_id,
        version=__version__,
        uptime_s=round(time.time() - node.started_at, 3),
        connections=len(node.hub),
        problems=problems,
    )
    return json_response(body, status=503 if problems else 200)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    metrics = _node(request).metrics
    # a worker of a multi-process node answers for the whole node (yim/metrics.py)
    body = generate_latest(metrics.registry) if metrics.whole_node is None else await metrics.whole_node()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# The web client (yim/web): the page at ``/``, its modules and styles under ``/static/``.
# Every response carries a strong ETag and ``no-cache`` (revalidate, answered by 304): the
# files have no build step and no content hashes in their names, so a cached copy must
# never outlive an upgrade of the node.
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _asset_response(request: web.Request, rel: str) -> web.Response:
    found = web_assets.asset(rel)
    if found is None:
        raise web.HTTPNotFound(text="no such file")
    headers = {
        "ETag": found.etag,
        "Cache-Control": "no-cache",
        "Content-Type": found.content_type,
        "X-Content-Type-Options": "nosniff",
    }
    if found.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = _PAGE_CSP
        headers["Referrer-Policy"] = "no-referrer"
    if found.etag in request.headers.get("If-None-Match", ""):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers=headers)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _asset_response(request, "index.html")


# The service worker at the root: its scope is the folder it is served from, and the page is at /.
@routes.get("/sw.js")
async def service_worker(request: web.Request) -> web.Response:
    return _asset_response(request, "sw.js")


@routes.get("/static/{path:.+}")
async def static_file(request: web.Request) -> web.Response:
    return _asset_response(request, request.match_info["path"])


@routes.post("/api/v1/accounts")
async def register(request: web.Request) -> web.Response:
    limits = _node(request).limits
    await limits.check_register(limits.ip_key(request.remote))
    body = await read_body(request, RegisterBody)
    return json_response(await _node(request).accounts.register(body), status=201)


@routes.post("/api/v1/sessions")
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    limits = _node(request).limits
    ip = limits.ip_key(request.remote)
    await limits.check_login(body.username, ip)  # lockout with exponential back-off (docs/security.md)
    try:
        out = await _node(request).accounts.login(body)
    except YimError as exc:
        if exc.code == "unauthorized":
            await limits.login_failed(body.username, ip)
        raise
    await limits.login_succeeded(body.username, ip)
    return json_response(out, status=201)


@routes.delete("/api/v1/sessions/current")
async def logout(request: web.Request) -> web.Response:
    session = await authenticated(request)
    await _node(request).accounts.logout(session)
    return web.Response(status=204)


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    session = await authenticated(request)
    return json_response(await users.user(_node(request), session.user_id))


@routes.get("/api/v1/users")
async def find_user(request: web.Request) -> web.Response:
    await authenticated(request)
    query = read_query(request, UserQuery)
    return json_response(await users.user_named(_node(request), query.username))


@routes.get("/api/v1/users/{user_id:[0-9]{1,20}}")
async def get_user(request: web.Request) -> web.Response:
    await authenticated(request)
    uid = parse_id(request.match_info["user_id"], "user")
    return json_response(await users.user(_node(request), uid))


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
    limits = _node(request).limits
    limits.check_send(session.user_id, limits.ip_key(request.remote))
    result = await send_message(_node(request), session, body)
    return json_response(send_ack(result), status=200 if result.duplicate else 201)


# --- the shared ops (same structs and actions as the WebSocket; docs/protocol.md) ----------


async def _run_op(
    request: web.Request, op: type[msgspec.Struct], *, from_query: bool = False, status: int = 200
) -> web.Response:
    """Decode an op from the query string or JSON body plus the path, and run its action."""
    session = await authenticated(request)
    data: dict[str, Any]
    if from_query:
        data = dict(request.query)
        if len(data) != len(request.query):
            raise YimError("bad_request", "query: a parameter is given more than once")
    else:
        raw = await request.read()
        try:
            data = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError as exc:
            raise YimError("bad_frame", f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise YimError("bad_frame", "body is nested too deeply") from None
        except UnicodeError:
            raise YimError("bad_frame", "body is not valid UTF-8") from None
        if not isinstance(data, dict):
            raise YimError("bad_request", "body must be a JSON object")
    _node(request).limits.check_request(session.user_id)
    REQUEST_SOURCE.set(f"http {request.remote}")  # this request's task only: the audit log's "from where"
    data.pop("op", None)
    data.update(request.match_info)
    data["rid"] = 0
    try:
        req = msgspec.convert(data, op, strict=not from_query)
    except msgspec.ValidationError as exc:
        raise YimError("bad_request", str(exc).replace("`$.", "`")) from None
    if isinstance(req, f.Forward):  # each copy is a message: the send limits count them all
        limits = _node(request).limits
        limits.check_send(session.user_id, limits.ip_key(request.remote), forward_copies(req))
    return json_response(await OPS[op](_node(request), session, req, None), status=status)


#: (method, path, op struct, from_query, status) of every shared-op route: the OpenAPI
#: description (yim/gateway/openapi.py) is generated from this table.
OP_ROUTES: list[tuple[str, str, type[msgspec.Struct], bool, int]] = []


def _op_route(method: str, path: str, op: type[msgspec.Struct], *, from_query: bool = False, status: int = 200) -> None:
    OP_ROUTES.append((method, path, op, from_query, status))

    async def handler(request: web.Request) -> web.Response:
        return await _run_op(request, op, from_query=from_query, status=status)

    handler.__name__ = f"{op.__name__.lower()}_handler"
    routes.route(method, path)(handler)


_CONV = "/api/v1/conversations/{conv_id:[0-9]{1,20}}"
_GROUP = "/api/v1/groups/{conv_id:[0-9]{1,20}}"
_MEMBER = _GROUP + "/members/{user_id:[0-9]{1,20}}"
_op_route("GET", "/api/v1/sync", f.Sync, from_query=True)
_op_route("GET", "/api/v1/conversations", f.Conversations, from_query=True)
_op_route("GET", _CONV, f.Conversation, from_query=True)
_op_route("GET", _CONV + "/messages", f.History, from_query=True)
_op_route("POST", _CONV + "/read", f.Read)
_op_route("POST", _CONV + "/recall", f.Recall)
_op_route("POST", _CONV + "/edit", f.Edit)
_op_route("POST", _CONV + "/hide", f.Hide)
_op_route("GET", _CONV + "/messages/{seq:[0-9]{1,20}}/versions", f.MessageVersions, from_query=True)
_op_route("POST", _CONV + "/forward", f.Forward)
_op_route("GET", _CONV + "/receipts", f.Receipts, from_query=True)
_op_route("POST", _CONV + "/typing", f.Typing)
_op_route("POST", _CONV + "/reactions", f.React)
_op_route("GET", _CONV + "/reactions", f.Reactions, from_query=True)
_op_route("GET", _CONV + "/reactors", f.Reactors, from_query=True)
_op_route("POST", _CONV + "/pins", f.Pin)
_op_route("DELETE", _CONV + "/pins", f.Unpin, from_query=True)
_op_route("POST", "/api/v1/groups", f.GroupCreate, status=201)
_op_route("GET", _GROUP, f.GroupInfo, from_query=True)
_op_route("PATCH", _GROUP, f.GroupUpdate)
_op_route("DELETE", _GROUP, f.GroupDissolve)
_op_route("GET", _GROUP + "/members", f.GroupMembers, from_query=True)
_op_route("POST", _GROUP + "/members", f.GroupInvite)
_op_route("POST", _GROUP + "/join", f.GroupJoin)
_op_route("POST", _GROUP + "/leave", f.GroupLeave)
_op_route("DELETE", _MEMBER, f.GroupRemove)
_op_route("PUT", _MEMBER + "/role", f.GroupRole)
_op_route("PUT", _MEMBER + "/mute", f.GroupMute)
_USER = "/api/v1/users/{user_id:[0-9]{1,20}}"
_REQUEST = "/api/v1/friend-requests/{request_id:[0-9]{1,20}}"
_op_route("GET", "/api/v1/friends", f.Friends, from_query=True)
_op_route("PATCH", "/api/v1/friends/{user_id:[0-9]{1,20}}", f.FriendUpdate)
_op_route("DELETE", "/api/v1/friends/{user_id:[0-9]{1,20}}", f.FriendDelete)
_op_route("GET", "/api/v1/friend-requests", f.FriendRequests, from_query=True)
_op_route("POST", "/api/v1/friend-requests", f.FriendRequest, status=201)
_op_route("POST", _REQUEST + "/accept", f.FriendAccept)
_op_route("POST", _REQUEST + "/reject", f.FriendReject)
_op_route("POST", _REQUEST + "/cancel", f.FriendCancel)
_op_route("GET", _USER + "/relation", f.Relation, from_query=True)
_op_route("GET", _USER + "/counts", f.RelationCountsReq, from_query=True)
_op_route("GET", _USER + "/followers", f.Followers, from_query=True)
_op_route("GET", _USER + "/following", f.Following, from_query=True)
_op_route("PUT", _USER + "/follow", f.Follow)
_op_route("DELETE", _USER + "/follow", f.Unfollow)
_op_route("PUT", _USER + "/block", f.Block)
_op_route("DELETE", _USER + "/block", f.Unblock)
_op_route("GET", "/api/v1/blocks", f.Blocks, from_query=True)
_op_route("GET", "/api/v1/me/privacy", f.PrivacyGet, from_query=True)
_op_route("PATCH", "/api/v1/me/privacy", f.PrivacySet)
_op_route("POST", "/api/v1/presence/query", f.PresenceQuery)
_op_route("PUT", "/api/v1/me/pusher", f.PusherSet)
_op_route("DELETE", "/api/v1/me/pusher", f.PusherRemove)
_op_route("GET", "/api/v1/me/pushers", f.Pushers, from_query=True)
_op_route("GET", "/api/v1/push/vapid-key", f.PushKey, from_query=True)
_op_route("GET", "/api/v1/me/push-settings", f.PushSettingsGet, from_query=True)
_op_route("PATCH", "/api/v1/me/push-settings", f.PushSettingsSet)
_op_route("PUT", _CONV + "/push-mute", f.PushMute)
_SHOP = "/api/v1/shops/{shop_id:[0-9]{1,20}}"
_SESSION = "/api/v1/service/sessions/{session_id:[0-9]{1,20}}"
_op_route("POST", "/api/v1/users/lookup", f.Users)
_op_route("GET", _SHOP, f.ShopInfo, from_query=True)
_op_route("POST", "/api/v1/shops", f.ShopCreate, status=201)
_op_route("GET", "/api/v1/shops", f.Shops, from_query=True)
_op_route("GET", _SHOP + "/agents", f.ShopAgents, from_query=True)
_op_route("PUT", _SHOP + "/agents/{user_id:[0-9]{1,20}}", f.ShopAgentSet)
_op_route("DELETE", _SHOP + "/agents/{user_id:[0-9]{1,20}}", f.ShopAgentRemove)
_op_route("GET", _SHOP + "/dashboard", f.ShopDashboard, from_query=True)
_op_route("GET", _SHOP + "/service", f.ServiceStatus, from_query=True)
_op_route("PUT", "/api/v1/me/agent-status", f.AgentStatus)
_op_route("GET", "/api/v1/service/sessions", f.ServiceSessions, from_query=True)
_op_route("POST", _SESSION + "/transfer", f.ServiceTransfer)
_op_route("POST", _SESSION + "/close", f.ServiceClose)
_op_route("POST", _SESSION + "/rate", f.ServiceRate)
_op_route("GET", "/api/v1/search", f.Search, from_query=True)
_ADMIN_USER = "/api/v1/admin/users/{user_id:[0-9]{1,20}}"
_op_route("GET", "/api/v1/admin/users", f.AdminUsers, from_query=True)
_op_route("GET", _ADMIN_USER, f.AdminUser, from_query=True)
_op_route("POST", _ADMIN_USER + "/disable", f.AdminDisable)
_op_route("POST", _ADMIN_USER + "/enable", f.AdminEnable)
_op_route("POST", _ADMIN_USER + "/password", f.AdminResetPassword)
_op_route("DELETE", _ADMIN_USER + "/devices", f.AdminRevoke)
_op_route("DELETE", _ADMIN_USER + "/devices/{device_id}", f.AdminRevoke)
_op_route("PUT", _ADMIN_USER + "/role", f.AdminSetRole)
_op_route("GET", "/api/v1/admin/audit", f.AdminAudit, from_query=True)
_ADMIN_GROUP = "/api/v1/admin/groups/{conv_id:[0-9]{1,20}}"
_op_route("GET", "/api/v1/admin/groups", f.AdminGroups, from_query=True)
_op_route("GET", _ADMIN_GROUP, f.AdminGroup, from_query=True)
_op_route("DELETE", _ADMIN_GROUP, f.AdminGroupDissolve)
_op_route("PUT", _ADMIN_GROUP + "/owner", f.AdminGroupTransfer)
_op_route("POST", "/api/v1/admin/shops", f.AdminShopCreate, status=201)
_op_route("PUT", "/api/v1/admin/shops/{shop_id:[0-9]{1,20}}/agents/{user_id:[0-9]{1,20}}", f.AdminShopAgentSet)
_op_route("PUT", "/api/v1/me/password", f.PasswordChange)
_op_route("PATCH", "/api/v1/me", f.ProfileSet)
_op_route("POST", _ADMIN_USER + "/erase", f.AdminErase)
_op_route("POST", "/api/v1/me/deletion", f.AccountDelete, status=202)
_op_route("GET", "/api/v1/me/deletion", f.AccountDeletion, from_query=True)
_op_route("POST", "/api/v1/reports", f.Report, status=201)
_op_route("GET", "/api/v1/reports", f.MyReports, from_query=True)
_op_route("GET", "/api/v1/admin/reports", f.AdminReports, from_query=True)
_op_route("GET", "/api/v1/admin/reports/{report_id:[0-9]{1,20}}", f.AdminReport, from_query=True)
_op_route("POST", "/api/v1/admin/reports/{report_id:[0-9]{1,20}}/resolve", f.AdminResolve)
_op_route("GET", "/api/v1/shops/search", f.ShopSearch, from_query=True)
