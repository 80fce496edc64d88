"""The Python SDK: HTTP account calls and a resilient WebSocket client (docs/protocol.md).

Two layers, over the I/O-free client core (:mod:`yim.client.core`, which keeps the
cursors and decides what to deliver and what to ask for):

- :class:`HttpApi` (and the shortcuts :func:`register` / :func:`login`) speaks the HTTP API
  under ``/api/v1/``: accounts, sessions, devices.
- :class:`Client` keeps one device online over ``/ws``: it is the I/O driver of the core.
  It authenticates, syncs the user's inbox from its *cursor* (the highest inbox seq it
  holds without a hole), merges pushed ``event`` frames by seq, acknowledges its cursor,
  heartbeats, and reconnects with exponential backoff + jitter across a list of
  endpoints, resuming from the cursor.

Delivery model (the inbox is the truth, pushes are a shortcut):

- Every inbox event is handed to the application exactly once and in seq order through
  :meth:`Client.events` / :meth:`Client.next_event`, as an :class:`InboxItem`.
- Events pushed while a sync is running, or ahead of a missing seq, wait in a buffer
  keyed by seq until the hole is filled; a hole that persists for ``gap_grace_s`` makes
  the client sync the missing range.
- The server does not push a device its own message: the ``send`` reply's ``inbox_seq``
  stands for it. The client counts that seq as held and hands the application the
  message (built from the request and the reply), so the event stream of every device is
  the same inbox timeline.
- Likewise for the device's own ``read`` event: the ``read`` reply's ``inbox_seq`` stands
  for it. Replies of other ops that name an ``inbox_seq`` (see :meth:`Client.call`) make
  the client sync, since their event is not pushed to the acting connection either.
- A ``send`` (and the idempotent ``read``, ``history``, ``conversations``) whose reply is
  lost with the connection is sent again after the reconnect, a send with the SAME
  ``client_msg_id``: the server answers a repeat with the original message and
  ``duplicate: true``. Requests resent after a reconnect keep their original order, and
  requests made meanwhile queue behind them, so one sender's messages keep their order.
- Messages are also deduplicated by ``msg_id``.

Read-fan-out groups (large groups; docs/protocol.md §12.3) keep their entries in the group
timeline, not in the inbox. The client keeps one *group cursor* per such group next to the
inbox cursor (:attr:`Client.group_cursors`: the highest conversation seq delivered without
a hole). Every sync page names the groups with their heads; ``group_message`` notices
carry new entries live; a head ahead of the cursor, or a notice past a hole, makes the
client pull ``history(after=cursor)``. Those entries reach the event stream as
:class:`GroupItem`, each once and in seq order per group, across reconnects. A group the
client has no cursor for starts at the ``from_seq`` the server names (earlier entries came
through the inbox). The device's own sends and changes in such a group stand for their
entries, as in the inbox. An application that persists ``cursor`` should persist
``group_cursors`` with it and pass both back to :class:`Client`.

Close codes 4001 (auth failed), 4002 (replaced by a newer connection of the same device),
4003 (session revoked) and 4006 (signed out by the multi-device policy) end the client: it
does not reconnect, pending requests fail with :class:`SessionEnded`, and the event stream
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
from msgspec import Raw, Struct

from yim.client.core import (
    ClientCore,
    InboxItem,
    StreamItem,
    SyncInbox,
)
from yim.protocol.close import (
    CLOSE_AUTH_FAILED,
    CLOSE_SLOW,
    FATAL_CLOSE_CODES,
)
from yim.protocol.frames import (
    Ack,
    AdminGroupPage,
    AdminReportDetail,
    AdminReportPage,
    AdminResolveOut,
    AdminUserDetail,
    AdminUserOut,
    AdminUserPage,
    AgentOut,
    AuditPage,
    Auth,
    AuthOk,
    Conversation,
    ConversationOut,
    ConversationPage,
    Conversations,
    DeletionOut,
    DeviceOut,
    Edit,
    EditOut,
    ErasedOut,
    Forward,
    ForwardOut,
    ForwardTarget,
    GroupChangeOut,
    GroupHeadOut,
    HiddenMarker,
    Hide,
    HideOut,
    History,
    HistoryPage,
    LoginBody,
    LoginOut,
    MediaOut,
    MessageOut,
    MessageVersions,
    MyReportPage,
    Notice,
    Pin,
    Ping,
    PinOut,
    PushMute,
    PushMuteMode,
    PushSettingsGet,
    PushSettingsOut,
    PushSettingsSet,
    React,
    ReactionEvent,
    ReactOut,
    Read,
    ReadMarker,
    ReadResult,
    RegisterBody,
    ReportOut,
    Request,
    RevokedOut,
    SendAck,
    ShopOut,
    ShopPage,
    ShopSearch,
    Sync,
    Unpin,
    UserOut,
    VersionsOut,
)

log = logging.getLogger("yim.client")

T = TypeVar("T")
Format = Literal["json", "msgpack"]
Platform = Literal["android", "ios", "web", "desktop"]

#: the client pings at least this often (seconds), whatever the server's heartbeat_s: a
#: node that hangs is noticed within this plus ping_timeout_s (a server asks for ~25 s,
#: which would leave a client on a hung node for close to a minute)
DEFAULT_PING_INTERVAL_S: Final = 5.0
#: a request unanswered this long while nothing at all arrived meanwhile makes the client
#: ping at once instead of at the next interval, with PROBE_TIMEOUT_S to answer: a user who
#: waits for an ACK from a hung node is moved to another one within ~3 s, not ~9 s
OVERDUE_REPLY_S: Final = 1.0
PROBE_TIMEOUT_S: Final = 1.5
#: how often the heartbeat looks for an overdue reply
_PROBE_CHECK_S: Final = 0.25
#: how long closing a connection may wait for the node (a hung one never answers)
_CLOSE_TIMEOUT_S: Final = 2.0


# --- errors ------------------------------------------------------------------------------------


class YimClientError(Exception):
    """Base class of every error the SDK raises."""


class ApiError(YimClientError):
    """The server answered a request with an error (``code`` is the protocol's stable code)."""

    def __init__(self, code: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class ConnectionLost(YimClientError):
    """The connection dropped before a (non-retried) request got its reply."""


class SessionEnded(YimClientError):
    """The server ended this device's session (close code 4001, 4002, 4003, 4006 or 4007 —
    the account was disabled —, or a refused token)."""

    def __init__(self, close_code: int | None, reason: str):
        super().__init__(f"session ended ({close_code}): {reason}")
        self.close_code = close_code
        self.reason = reason


class ClientClosed(YimClientError):
    """The client was closed by the application."""


# --- endpoints ---------------------------------------------------------------------------------


class Endpoint(NamedTuple):
    http: str  # base URL of the HTTP API, e.g. http://127.0.0.1:8080
    ws: str  # the WebSocket URL, e.g. ws://127.0.0.1:8080/ws


def parse_endpoint(url: str) -> Endpoint:
    """Accept ``http(s)://host:port`` or ``ws(s)://host:port/ws`` and derive the other one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    secure = scheme in ("https", "wss")
    if scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s):// or ws(s):// URL, not {url!r}")
    path = parts.path.rstrip("/")
    if scheme in ("ws", "wss"):
        base_path = path.removesuffix("/ws")
        ws_path = path or "/ws"
    else:
        base_path = path
        ws_path = path + "/ws"
    http = urlunsplit(("https" if secure else "http", parts.netloc, base_path, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, ws_path, "", ""))
    return Endpoint(http=http, ws=ws)


def _endpoints(urls: str | Sequence[str]) -> list[Endpoint]:
    items = [urls] if isinstance(urls, str) else list(urls)
    if not items:
        raise ValueError("give at least one endpoint URL")
    return [parse_endpoint(u) for u in items]


# --- HTTP API ----------------------------------------------------------------------------------


class _HttpError(Struct):
    code: str = "http_error"
    message: str = ""
    retry_after: float | None = None


class _DeviceList(Struct):
    devices: list[DeviceOut]


_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class HttpApi:
    """The HTTP API of a node (or of a cluster, given several endpoints).

    A connection failure moves on to the next endpoint; any HTTP answer (success or error)
    is final. A node that accepts the connection but does not answer within ``timeout_s``
    (a hung node) is abandoned too: a request that is safe to repeat (GET, PUT, DELETE,
    log-in, a message with its ``client_msg_id``) moves on to the next endpoint, any other
    raises :class:`ConnectionLost`, since the hung node may still carry it out later.
    ``connect_timeout_s`` bounds the TCP connect alone. Use as
    ``async with HttpApi(url) as api: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.endpoints = _endpoints(endpoints)
        self.token = token
        self._session = session
        self._own_session = session is None
        # per attempt: one hung endpoint costs at most timeout_s before the next is tried
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=connect_timeout_s, sock_connect=connect_timeout_s
        )
        self._index = 0

    async def __aenter__(self) -> HttpApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
        type_: Any = Any,
        idempotent: bool | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; returns the decoded JSON body as ``type_`` (None for 204).

        ``idempotent`` says whether the call may be sent again to the next endpoint when one
        does not answer in time (default: true for GET, HEAD, PUT and DELETE). A ``bytes``
        body is sent as it is, as ``content_type`` (an upload); anything else as JSON."""
        if idempotent is None:
            idempotent = method.upper() in _IDEMPOTENT_METHODS
        headers = {"Content-Type": content_type}
        if auth:
            if not self.token:
                raise ApiError("unauthorized", "this call needs a token: log in first")
            headers["Authorization"] = f"Bearer {self.token}"
        data = body if isinstance(body, bytes) else msgspec.json.encode(body) if body is not None else None
        last_exc: Exception | None = None
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._index + attempt) % len(self.endpoints)]
            try:
                async with self._http().request(
                    method, endpoint.http + path, data=data, params=params, headers=headers, timeout=self._timeout
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                last_exc = exc  # nothing was sent: the next endpoint is safe
                continue
            except (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # sent, but no answer: the node is hung or died under the request
                if not idempotent:
                    raise ConnectionLost(f"{endpoint.http} did not answer {method} {path}: {exc!r}") from None
                last_exc = exc
                continue
            self._index = (self._index + attempt) % len(self.endpoints)
            if status >= 400:
                try:
                    err = msgspec.json.decode(raw, type=_HttpError)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    err = _HttpError(code=f"http_{status}", message=raw[:200].decode(errors="replace"))
                raise ApiError(err.code, err.message, status=status, retry_after=err.retry_after)
            if not raw:
                return None
            return msgspec.json.decode(raw, type=type_)
        raise ConnectionLost(f"no endpoint reachable: {last_exc}")

    async def register(self, username: str, password: str, display_name: str = "") -> UserOut:
        body = RegisterBody(username=username, password=password, display_name=display_name)
        out: UserOut = await self.request("POST", "/api/v1/accounts", body=body, auth=False, type_=UserOut)
        return out

    async def login(
        self,
        username: str,
        password: str,
        device_id: str,
        platform: Platform = "desktop",
        device_name: str = "",
    ) -> LoginOut:
        """Start a session on a device; the token is kept for later calls on this object."""
        body = LoginBody(
            username=username, password=password, device_id=device_id, platform=platform, device_name=device_name
        )
        # idempotent: logging the same device in again replaces its session
        out: LoginOut = await self.request(
            "POST", "/api/v1/sessions", body=body, auth=False, type_=LoginOut, idempotent=True
        )
        self.token = out.token
        return out

    async def logout(self) -> None:
        await self.request("DELETE", "/api/v1/sessions/current")

    async def me(self) -> UserOut:
        out: UserOut = await self.request("GET", "/api/v1/me", type_=UserOut)
        return out

    async def user_by_name(self, username: str) -> UserOut:
        out: UserOut = await self.request("GET", "/api/v1/users", params={"username": username}, type_=UserOut)
        return out

    async def user(self, user_id: str) -> UserOut:
        out: UserOut = await self.request("GET", f"/api/v1/users/{user_id}", type_=UserOut)
        return out

    async def send(
        self,
        *,
        to: str | None = None,
        conv_id: str | None = None,
        kind: str = "text",
        body: Any,
        client_msg_id: str | None = None,
    ) -> SendAck:
        """``POST /api/v1/messages``. Sending again with the same ``client_msg_id`` is safe:
        the server answers a repeat with the original message (``duplicate: true``)."""
        if (to is None) == (conv_id is None):
            raise ValueError("give exactly one of `to` or `conv_id`")
        frame: dict[str, Any] = {"kind": kind, "body": body, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        frame.update({"to": to} if to is not None else {"conv_id": conv_id})
        # idempotent: the server answers a repeat of the client_msg_id with the original message
        out: SendAck = await self.request("POST", "/api/v1/messages", body=frame, type_=SendAck, idempotent=True)
        return out

    async def conversations(self, *, limit: int = 50, before: str | None = None) -> ConversationPage:
        params = {"limit": str(limit)} | ({"before": before} if before else {})
        out: ConversationPage = await self.request(
            "GET", "/api/v1/conversations", params=params, type_=ConversationPage
        )
        return out

    async def history(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> HistoryPage:
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        if after is not None:
            params["after"] = str(after)
        out: HistoryPage = await self.request(
            "GET", f"/api/v1/conversations/{conv_id}/messages", params=params, type_=HistoryPage
        )
        return out

    async def devices(self) -> list[DeviceOut]:
        out: _DeviceList = await self.request("GET", "/api/v1/devices", type_=_DeviceList)
        return out.devices

    async def revoke_device(self, device_id: str) -> None:
        await self.request("DELETE", f"/api/v1/devices/{device_id}")

    # -- one's own account (docs/protocol.md §19.3) -------------------------------------------
    async def change_password(self, old_password: str, new_password: str) -> int:
        """Change the password (``wrong_password`` if ``old_password`` is not it); the
        account's other sessions end. Returns how many did. Never resent to another
        endpoint: a second try after a change that went through would say wrong_password."""
        body = {"old_password": old_password, "new_password": new_password}
        out: RevokedOut = await self.request(
            "PUT", "/api/v1/me/password", body=body, type_=RevokedOut, idempotent=False
        )
        return out.revoked

    async def set_display_name(self, display_name: str) -> UserOut:
        out: UserOut = await self.request("PATCH", "/api/v1/me", body={"display_name": display_name}, type_=UserOut)
        return out

    async def upload(self, data: bytes, kind: Literal["image", "video", "file"] = "file", name: str = "") -> MediaOut:
        """Upload media (docs/protocol.md §16.1); its ``media_id`` goes into a message or,
        for an image, ``set_avatar``. Never resent to another endpoint: a retry would make a
        second upload record."""
        params = {"kind": kind, **({"name": name} if name else {})}
        out: MediaOut = await self.request(
            "POST",
            "/api/v1/media",
            body=data,
            params=params,
            type_=MediaOut,
            idempotent=False,
            content_type="application/octet-stream",
        )
        return out

    async def set_avatar(self, media_id: str) -> UserOut:
        """Make an image this user uploaded their avatar; ``""`` clears it (§19.4). Those who
        show the user get a ``profile`` notice carrying the new :class:`UserOut`."""
        out: UserOut = await self.request("PATCH", "/api/v1/me", body={"avatar": media_id}, type_=UserOut)
        return out

    # -- server administration (a server admin's token; docs/protocol.md §19) --------------------
    async def admin_users(self, q: str = "", *, after: str | None = None, limit: int = 50) -> AdminUserPage:
        params = {"q": q, "limit": str(limit), **({"after": after} if after else {})}
        out: AdminUserPage = await self.request("GET", "/api/v1/admin/users", params=params, type_=AdminUserPage)
        return out

    async def admin_user(self, user_id: str) -> AdminUserDetail:
        out: AdminUserDetail = await self.request("GET", f"/api/v1/admin/users/{user_id}", type_=AdminUserDetail)
        return out

    async def admin_disable(self, user_id: str, reason: str = "") -> AdminUserOut:
        return await self._admin_user_action("POST", f"{user_id}/disable", {"reason": reason})

    async def admin_enable(self, user_id: str, reason: str = "") -> AdminUserOut:
        return await self._admin_user_action("POST", f"{user_id}/enable", {"reason": reason})

    async def admin_erase(self, user_id: str, reason: str = "") -> ErasedOut:
        """Erase the account now (docs/protocol.md §19.8)."""
        out: ErasedOut = await self.request(
            "POST", f"/api/v1/admin/users/{user_id}/erase", body={"reason": reason}, type_=ErasedOut
        )
        return out

    async def delete_account(self, password: str) -> int:
        """Delete one's own account after the grace period; when it runs (ms)."""
        out: DeletionOut = await self.request(
            "POST", "/api/v1/me/deletion", body={"password": password}, type_=DeletionOut
        )
        assert out.due_at is not None
        return out.due_at

    async def account_deletion(self) -> int | None:
        """When one's pending deletion runs, or None."""
        out: DeletionOut = await self.request("GET", "/api/v1/me/deletion", type_=DeletionOut)
        return out.due_at

    async def admin_set_role(self, user_id: str, admin: bool, reason: str = "") -> AdminUserOut:
        return await self._admin_user_action("PUT", f"{user_id}/role", {"admin": admin, "reason": reason})

    async def admin_reset_password(self, user_id: str, password: str, reason: str = "") -> int:
        body = {"password": password, "reason": reason}
        out: RevokedOut = await self.request(
            "POST", f"/api/v1/admin/users/{user_id}/password", body=body, type_=RevokedOut
        )
        return out.revoked

    async def admin_revoke(self, user_id: str, device_id: str | None = None, reason: str = "") -> int:
        """Sign out one device of the user, or all (``device_id`` None); how many sessions ended."""
        path = f"/api/v1/admin/users/{user_id}/devices" + (f"/{device_id}" if device_id else "")
        out: RevokedOut = await self.request("DELETE", path, body={"reason": reason}, type_=RevokedOut)
        return out.revoked

    async def admin_audit(self, *, before: str | None = None, limit: int = 50) -> AuditPage:
        params = {"limit": str(limit), **({"before": before} if before else {})}
        out: AuditPage = await self.request("GET", "/api/v1/admin/audit", params=params, type_=AuditPage)
        return out

    async def admin_groups(self, q: str = "", *, after: str | None = None, limit: int = 50) -> AdminGroupPage:
        params = {"q": q, "limit": str(limit), **({"after": after} if after else {})}
        out: AdminGroupPage = await self.request("GET", "/api/v1/admin/groups", params=params, type_=AdminGroupPage)
        return out

    async def admin_group_dissolve(self, conv_id: str, reason: str = "") -> GroupChangeOut:
        out: GroupChangeOut = await self.request(
            "DELETE", f"/api/v1/admin/groups/{conv_id}", body={"reason": reason}, type_=GroupChangeOut
        )
        return out

    async def admin_group_transfer(self, conv_id: str, user_id: str, reason: str = "") -> GroupChangeOut:
        body = {"user_id": user_id, "reason": reason}
        out: GroupChangeOut = await self.request(
            "PUT", f"/api/v1/admin/groups/{conv_id}/owner", body=body, type_=GroupChangeOut
        )
        return out

    async def admin_shop_create(self, owner_id: str, name: str, reason: str = "") -> ShopOut:
        body = {"owner_id": owner_id, "name": name, "reason": reason}
        out: ShopOut = await self.request("POST", "/api/v1/admin/shops", body=body, type_=ShopOut)
        return out

    async def admin_shop_agent_set(
        self,
        shop_id: str,
        user_id: str,
        *,
        role: str = "agent",
        skills: Sequence[str] = ("pre_sale", "after_sale"),
        capacity: int = 10,
        reason: str = "",
    ) -> AgentOut:
        body = {"role": role, "skills": list(skills), "capacity": capacity, "reason": reason}
        path = f"/api/v1/admin/shops/{shop_id}/agents/{user_id}"
        out: AgentOut = await self.request("PUT", path, body=body, type_=AgentOut)
        return out

    # -- reports (docs/protocol.md §19.9) ------------------------------------------------------
    async def report(
        self,
        category: str,
        text: str = "",
        *,
        conv_id: str | None = None,
        seq: int | None = None,
        user_id: str | None = None,
    ) -> ReportOut:
        """Report a message (``conv_id`` and ``seq``) or a user (``user_id``) to the admins.
        Safe to resend: a repeat returns the open report (``duplicate``)."""
        body: dict[str, Any] = {"category": category, "text": text}
        body.update({k: v for k, v in (("conv_id", conv_id), ("seq", seq), ("user_id", user_id)) if v is not None})
        out: ReportOut = await self.request("POST", "/api/v1/reports", body=body, type_=ReportOut, idempotent=True)
        return out

    async def my_reports(self, *, before: str | None = None, limit: int = 50) -> MyReportPage:
        """This user's own reports, newest first, with the outcome of each resolved one."""
        params = {"limit": str(limit), **({"before": before} if before else {})}
        out: MyReportPage = await self.request("GET", "/api/v1/reports", params=params, type_=MyReportPage)
        return out

    async def admin_reports(
        self, status: str = "open", *, before: str | None = None, limit: int = 50
    ) -> AdminReportPage:
        params = {"status": status, "limit": str(limit), **({"before": before} if before else {})}
        out: AdminReportPage = await self.request("GET", "/api/v1/admin/reports", params=params, type_=AdminReportPage)
        return out

    async def admin_report(self, report_id: str) -> AdminReportDetail:
        out: AdminReportDetail = await self.request(
            "GET", f"/api/v1/admin/reports/{report_id}", type_=AdminReportDetail
        )
        return out

    async def admin_resolve(self, report_id: str, action: str, note: str = "") -> AdminResolveOut:
        """Resolve the report (and the other open reports of its target): ``dismiss``,
        ``recall`` the message, or ``disable`` the reported user."""
        body = {"action": action, "note": note}
        out: AdminResolveOut = await self.request(
            "POST", f"/api/v1/admin/reports/{report_id}/resolve", body=body, type_=AdminResolveOut
        )
        return out

    async def admin_report_media(
        self, report_id: str, media_id: str, out: str | os.PathLike[str], *, thumbnail: bool = False
    ) -> int:
        """Save the image, video or file of a reported message (or its thumbnail) to ``out``,
        as a server admin, through the report; returns its size in bytes."""
        path = f"/api/v1/admin/reports/{report_id}/media/{media_id}" + ("/thumbnail" if thumbnail else "")
        return await self.download(path, out)

    async def _admin_user_action(self, method: str, tail: str, body: dict[str, Any]) -> AdminUserOut:
        out: AdminUserOut = await self.request(method, f"/api/v1/admin/users/{tail}", body=body, type_=AdminUserOut)
        return out

    # -- data export (docs/protocol.md §19.7): a zip archive saved to a file --------------------
    async def export_me(self, out: str | os.PathLike[str], *, timeout_s: float = 3600.0) -> int:
        """Download this account's own data to ``out``; returns its size in bytes."""
        return await self.download("/api/v1/me/export", out, timeout_s=timeout_s)

    async def admin_export(
        self, user_id: str, out: str | os.PathLike[str], reason: str = "", *, timeout_s: float = 3600.0
    ) -> int:
        """Download a user's data to ``out`` as a server admin (audit-logged with ``reason``)."""
        params = {"reason": reason} if reason else None
        return await self.download(f"/api/v1/admin/users/{user_id}/export", out, params=params, timeout_s=timeout_s)

    async def download(
        self,
        path: str,
        out: str | os.PathLike[str],
        *,
        params: dict[str, str] | None = None,
        timeout_s: float = 3600.0,
    ) -> int:
        """GET ``path`` and stream the body to the file ``out`` (written to ``out.part`` and
        renamed once complete); an error answer raises :class:`ApiError`. The server builds
        an archive before its first byte, so ``timeout_s`` covers the whole transfer."""
        if not self.token:
            raise ApiError("unauthorized", "this call needs a token: log in first")
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._timeout.sock_connect)
        endpoint = self.endpoints[self._index % len(self.endpoints)]
        part = f"{os.fspath(out)}.part"
        async with self._http().get(endpoint.http + path, params=params, headers=headers, timeout=timeout) as resp:
            if resp.status >= 400:
                raw = await resp.read()
                try:
                    err = msgspec.json.decode(raw, type=_HttpError)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    err = _HttpError(code=f"http_{resp.status}", message=raw[:200].decode(errors="replace"))
                raise ApiError(err.code, err.message, status=resp.status, retry_after=err.retry_after)
            size = 0
            try:
                with open(part, "wb") as fh:  # noqa: ASYNC230 - writes below run in worker threads
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        await asyncio.to_thread(fh.write, chunk)
                        size += len(chunk)
                if resp.content_length is not None and size != resp.content_length:
                    raise ConnectionLost(f"the download ended after {size} of {resp.content_length} bytes")
                os.replace(part, out)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(part)
                raise
        return size


async def register(endpoints: str | Sequence[str], username: str, password: str, display_name: str = "") -> UserOut:
    """Create an account (``username_taken`` if the name exists, case-insensitively)."""
    async with HttpApi(endpoints) as api:
        return await api.register(username, password, display_name)


async def login(
    endpoints: str | Sequence[str],
    username: str,
    password: str,
    device_id: str,
    platform: Platform = "desktop",
    device_name: str = "",
) -> LoginOut:
    """Log a device in; pass ``.token`` to :class:`Client`."""
    async with HttpApi(endpoints) as api:
        return await api.login(username, password, device_id, platform, device_name)


# --- wire structs of the client side --------------------------------------------------------------


class _InFrame(Struct):
    """Every server frame in one lenient struct; ``data`` stays raw until its type is known."""

    t: str
    rid: int | str | None = None
    data: Raw = Raw()
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    seq: int = 0
    type: str = ""


class _EventIn(Struct):
    seq: int
    type: str
    data: Raw = Raw()


class _SyncPageIn(Struct):
    events: list[_EventIn]
    next_since: int
    head: int
    has_more: bool
    groups: list[GroupHeadOut] = []


_EVENT_TYPES: Final[dict[str, Any]] = {
    "message": MessageOut,
    "read": ReadMarker,
    "reaction": ReactionEvent,
    "hidden": HiddenMarker,
}


def _send_frame(
    rid: int, kind: str, body: Raw, client_msg_id: str, optional: dict[str, Any], mention_all: bool
) -> dict[str, Any]:
    """A ``send`` frame (see :class:`yim.protocol.frames.Send`) with only the fields in use,
    so that it stays valid for servers that do not know the optional ones."""
    frame: dict[str, Any] = {"op": "send", "rid": rid, "kind": kind, "body": body, "client_msg_id": client_msg_id}
    frame.update((k, v) for k, v in optional.items() if v)
    if mention_all:
        frame["mention_all"] = True
    return frame


def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Reset the socket of a connection to a node that stopped answering: writes blocked on
    it (the node does not read, the send buffer fills) fail at once, closing it does not
    wait to flush, and the unsent frames are dropped rather than delivered if the node
    wakes. Only while the connection is open: a socket looked up earlier may since have
    been closed and its descriptor reused."""
    sock = ws.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as dup:
        # linger 0: the last close sends a reset instead of waiting to flush
        dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        dup.shutdown(socket.SHUT_RDWR)


def _close_of(
    reader: asyncio.Task[tuple[int | None, str]], ws: aiohttp.ClientWebSocketResponse
) -> tuple[int | None, str]:
    """Close code and reason of a connection whose reader task has ended (or was stopped)."""
    if reader.done() and not reader.cancelled() and reader.exception() is None:
        return reader.result()
    return ws.close_code, ""


class _Pending:
    """A request waiting for its reply. ``gen`` is the connection it was last written to."""

    __slots__ = ("future", "gen", "on_reply", "payload", "reply_type", "retry", "rid", "written_at")

    def __init__(
        self,
        rid: int,
        payload: bytes,
        future: asyncio.Future[Any],
        *,
        retry: bool,
        reply_type: Any,
        on_reply: Callable[[Any], None] | None,
    ) -> None:
        self.rid = rid
        self.payload = payload
        self.future = future
        self.retry = retry
        self.reply_type = reply_type
        self.on_reply = on_reply
        self.gen = 0
        #: loop time of its last write to a connection (for the overdue-reply probe)
        self.written_at = 0.0


# --- the client -----------------------------------------------------------------------------------


class Client:
    """One device of one user, kept online over the WebSocket.

    ``endpoints`` are node URLs (``http://host:port`` or ``ws://host:port/ws``); the client
    connects to the first and moves to the next whenever a connection attempt fails or a
    connection is lost, so a node that hangs is never tried again first (failover).
    ``cursor`` resumes from a cursor the application stored earlier (0 = the whole inbox,
    None = from the inbox head at the first connection: only what happens from now on).
    ``group_cursors`` resumes the read-fan-out groups the same way (conv_id -> the last
    conversation seq delivered); a group missing from it starts where its entries stop
    coming through the inbox, or at its head when ``cursor`` is None.
    ``sync_limit`` is the sync page size; a page is one frame, so it is halved whenever the
    server cuts the connection as a slow reader (4008).

    Timeouts, so that a node that accepts TCP but never answers (hung, stopped, overloaded)
    is left for the next endpoint:

    - ``connect_timeout_s``: the TCP connect;
    - ``handshake_timeout_s``: the whole WebSocket upgrade, connect included, until the 101;
    - ``auth_timeout_s``: the ``auth`` request until its reply;
    - ``heartbeat_s``: the client pings this often (default: every ``DEFAULT_PING_INTERVAL_S``,
      or the server's ``heartbeat_s`` if that is shorter), and ``ping_timeout_s``: a
      connection on which nothing at all arrives within this long after a ping is dead,
      even if its socket looks open. A hung node is thus left within
      ``heartbeat + ping_timeout`` (9 s by default).

    Between attempts the client waits a jittered delay that doubles with each full round
    of the endpoint list that failed (``backoff_initial_s`` up to ``backoff_max_s``).

    Usage::

        async with Client(url, token) as client:
            ack = await client.send(to=peer_id, body={"text": "hi"})
            async for item in client.events():
                ...
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        token: str,
        *,
        format: Format = "json",
        cursor: int | None = 0,
        group_cursors: dict[str, int] | None = None,
        sync_limit: int = 100,
        ack_delay_s: float = 0.2,
        gap_grace_s: float = 0.05,
        heartbeat_s: float | None = None,
        ping_timeout_s: float = 4.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        handshake_timeout_s: float = 5.0,
        auth_timeout_s: float = 10.0,
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError("format must be 'json' or 'msgpack'")
        self.endpoints = _endpoints(endpoints)
        self.token = token
        self.format: Format = format
        self._binary = format == "msgpack"
        self._mod: Any = msgspec.msgpack if self._binary else msgspec.json
        self._encoder = self._mod.Encoder()
        self._frame_decoder = self._mod.Decoder(_InFrame)
        self._decoders: dict[Any, Any] = {}
        self._opcode = aiohttp.WSMsgType.BINARY if self._binary else aiohttp.WSMsgType.TEXT

        self._ack_delay = ack_delay_s
        self._gap_grace = gap_grace_s
        self._heartbeat_override = heartbeat_s
        self._ping_timeout = ping_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._connect_timeout = connect_timeout_s
        self._handshake_timeout = handshake_timeout_s
        self._auth_timeout = auth_timeout_s

        #: the cursors, held events and de-duplication (no I/O): this class feeds it what
        #: arrives and carries out the requests it makes
        self._core = ClientCore(cursor=cursor, group_cursors=group_cursors, sync_limit=sync_limit)
        self._queue: asyncio.Queue[StreamItem | None] = asyncio.Queue()

        self._waiters: dict[int, _Pending] = {}
        self._rids = itertools.count(1)
        self._gen = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ready = False  # the current connection is authenticated and has its backlog resent
        self._endpoint_index = 0
        #: loop time of the last frame received on the current connection (liveness)
        self._last_frame = 0.0

        self._http_session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._synced = asyncio.Event()
        self._need_sync = asyncio.Event()
        self._ended = asyncio.Event()
        self._acked = self.cursor
        self._ack_handle: asyncio.TimerHandle | None = None
        self._gap_handle: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()

        #: why the client stopped for good (set on a fatal close or refused token)
        self.ended: SessionEnded | None = None
        #: the auth reply of the current (or last) connection
        self.auth: AuthOk | None = None
        self.user_id = ""
        self.device_id = ""
        #: close code and reason of the last connection that ended
        self.last_close: tuple[int | None, str] = (None, "")
        # counters, for applications and tests
        self.connects = 0
        self.syncs = 0
        self.gaps = 0
        self.group_pulls = 0
        self.resent = 0
        self.acks_sent = 0
        #: connections abandoned because the node stopped answering (handshake, auth or ping timeout)
        self.timeouts = 0

    @property
    def cursor(self) -> int:
        """The highest inbox seq delivered with no hole below it (persist it to resume)."""
        return self._core.cursor

    @property
    def group_cursors(self) -> dict[str, int]:
        """Read-fan-out groups: conv_id -> the highest conversation seq delivered with no hole
        below it (persist it with ``cursor``)."""
        return self._core.group_cursors

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, wait: bool = True) -> None:
        """Start connecting. With ``wait`` (the default), return once the first connection is
        authenticated and caught up; raise :class:`SessionEnded` if the token is refused."""
        if self._runner is not None:
            raise RuntimeError("client already started")
        self._http_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, connect=self._connect_timeout)
        )
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="yim-client")
        if wait:
            await self.wait_synced()

    async def close(self) -> None:
        """Acknowledge the cursor, close the connection, fail what is still pending."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        ws = self._ws
        if ws is not None and self._ready and self.cursor > self._acked:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):  # a hung node must not hold close() up
                    await self._write(ws, self._encode(Ack(rid=next(self._rids), seq=self.cursor)))
                self._acked = self.cursor
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await ws.close()
        if self._runner is not None:
            # The runner notices _stopping between attempts; one stuck in a connection
            # attempt to a hung node would keep close() waiting for its timeout: cancel it.
            await asyncio.wait({self._runner}, timeout=_CLOSE_TIMEOUT_S)
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._background):
            task.cancel()
        for handle in (self._ack_handle, self._gap_handle):
            if handle is not None:
                handle.cancel()
        self._ack_handle = self._gap_handle = None
        self._finish(ClientClosed("client closed"))
        if self._http_session is not None:
            await self._http_session.close()
            self._http_session = None

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint in use (or to be tried next)."""
        return self.endpoints[self._endpoint_index % len(self.endpoints)]

    async def wait_connected(self) -> None:
        await self._wait_for(self._connected)

    async def wait_synced(self) -> None:
        """Wait until connected, caught up with the inbox head, and without a hole."""
        await self._wait_for(self._synced)

    async def wait_ended(self) -> SessionEnded | ClientClosed:
        """Wait until the client stops for good; returns why."""
        await self._ended.wait()
        return self.ended or ClientClosed("client closed")

    async def _wait_for(self, event: asyncio.Event) -> None:
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ender.cancel()
        if not event.is_set():
            raise self.ended or ClientClosed("client closed")

    def drop_connection(self) -> None:
        """Cut the current connection at the socket, without a close handshake, as a network
        failure would. The client then reconnects and resumes as usual."""
        ws = self._ws
        if ws is None:
            return
        sock = ws.get_extra_info("socket")
        if sock is None:
            return
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as dup:
            dup.shutdown(socket.SHUT_RDWR)

    # -- the event stream -------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[StreamItem]:
        """Inbox items (in seq order, each once), entries of read-fan-out groups
        (:class:`GroupItem`, in seq order per group, each once) and ephemeral notices,
        until the client ends."""
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let other iterators end too
                return
            yield item

    async def next_event(self) -> StreamItem:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise self.ended or ClientClosed("client closed")
        return item

    def pending_events(self) -> int:
        """Items delivered to the stream and not yet taken by the application."""
        return self._queue.qsize()

    # -- application requests -----------------------------------------------------------------------
    async def send(
        self,
        *,
        to: str | None = None,
        conv_id: str | None = None,
        kind: str = "text",
        body: Any,
        client_msg_id: str | None = None,
        mentions: list[str] | None = None,
        mention_all: bool = False,
        shop_id: str | None = None,
        category: str | None = None,
        reply_to: int | None = None,
    ) -> SendAck:
        """Send a message to a user (``to``), into a conversation (``conv_id``), or to a
        shop's customer service (``shop_id``, optionally with a ``category``).

        Returns once the message is durably stored. If the connection drops first, the
        request is sent again after the reconnect with the same ``client_msg_id``.
        ``mentions`` (user ids) and ``mention_all`` are for group messages. ``reply_to``:
        the seq of the message of ``conv_id`` this one replies to; the server adds the
        quote to the body (protocol.md §6.13), so this device gets its own reply as stored
        by catching up, not from the reply to the send.
        """
        if (to is not None) + (conv_id is not None) + (shop_id is not None) != 1:
            raise ValueError("give exactly one of `to`, `conv_id` or `shop_id`")
        cmid = client_msg_id or uuid.uuid4().hex
        body_bytes = self._mod.encode(body)
        canonical = msgspec.json.decode(msgspec.json.encode(body))
        fut = await self._submit(
            lambda rid: _send_frame(
                rid,
                kind,
                Raw(body_bytes),
                cmid,
                {
                    "to": to,
                    "conv_id": conv_id,
                    "shop_id": shop_id,
                    "category": category,
                    "mentions": mentions,
                    "reply_to": reply_to,
                },
                mention_all,
            ),
            reply_type=SendAck,
            retry=True,
            on_reply=(
                self._catch_up
                if reply_to is not None
                else lambda ack: self._on_send_ack(ack, kind, canonical, cmid, mentions or [], mention_all)
            ),
        )
        result: SendAck = await fut
        return result

    async def send_text(self, text: str, *, to: str | None = None, conv_id: str | None = None) -> SendAck:
        return await self.send(to=to, conv_id=conv_id, kind="text", body={"text": text})

    async def forward(self, conv_id: str, seqs: Sequence[int], targets: Sequence[ForwardTarget]) -> ForwardOut:
        """Copy messages (by seq) of ``conv_id`` into other conversations (protocol.md §6.14).
        Each target's copies are keyed by its ``client_msg_id``, so the request is sent again
        after a reconnect without copying twice. This device gets the copies by catching up."""
        fut = await self._submit(
            lambda rid: Forward(rid=rid, conv_id=conv_id, seqs=list(seqs), targets=list(targets)),
            reply_type=ForwardOut,
            retry=True,
            on_reply=self._on_forwarded,
        )
        result: ForwardOut = await fut
        return result

    async def edit(self, conv_id: str, seq: int, text: str, *, mentions: Sequence[str] | None = None) -> EditOut:
        """Replace the text of one's own text message (protocol.md §6.9a). Every device gets
        the ``edit`` entry; this one by catching up. Not sent again after a reconnect (a
        second edit would be a second entry): on a lost connection, look at history."""
        fut = await self._submit(
            lambda rid: Edit(
                rid=rid, conv_id=conv_id, seq=seq, text=text, mentions=list(mentions) if mentions else None
            ),
            reply_type=EditOut,
            retry=False,
            on_reply=self._catch_up,
        )
        result: EditOut = await fut
        return result

    async def message_versions(self, conv_id: str, seq: int) -> VersionsOut:
        """The earlier versions of an edited message, oldest first."""
        fut = await self._submit(
            lambda rid: MessageVersions(rid=rid, conv_id=conv_id, seq=seq), reply_type=VersionsOut, retry=True
        )
        result: VersionsOut = await fut
        return result

    async def hide(self, conv_id: str, seqs: Sequence[int]) -> HideOut:
        """Delete for me (protocol.md §6.9b): hide entries from this user's devices only; the
        other devices get a ``hidden`` event, this one by catching up. Idempotent."""
        fut = await self._submit(
            lambda rid: Hide(rid=rid, conv_id=conv_id, seqs=list(seqs)),
            reply_type=HideOut,
            retry=True,
            on_reply=self._catch_up,
        )
        result: HideOut = await fut
        return result

    async def mark_read(self, conv_id: str, seq: int) -> ReadResult:
        """Mark a conversation read up to ``seq``; the other devices get a ``read`` event."""
        fut = await self._submit(
            lambda rid: Read(rid=rid, conv_id=conv_id, seq=seq),
            reply_type=ReadResult,
            retry=True,
            on_reply=self._on_read_reply,
        )
        result: ReadResult = await fut
        return result

    async def history(
        self, conv_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """One page of a conversation: ascending after ``after``, else descending from ``before``."""
        fut = await self._submit(
            lambda rid: History(rid=rid, conv_id=conv_id, before=before, after=after, limit=limit),
            reply_type=HistoryPage,
            retry=True,
        )
        result: HistoryPage = await fut
        return result

    async def iter_history(self, conv_id: str, *, after: int = 0, page: int = 200) -> AsyncIterator[MessageOut]:
        """Every message of a conversation after seq ``after``, oldest first."""
        while True:
            result = await self.history(conv_id, after=after, limit=page)
            for m in result.messages:
                yield m
            if not result.has_more or not result.messages:
                return
            after = result.messages[-1].seq

    async def conversations(self, *, limit: int = 50, before: str | None = None) -> ConversationPage:
        """One page of the conversation list, most recent first, with unread counts
        (``before``: the previous page's ``next_before``)."""
        fut = await self._submit(
            lambda rid: Conversations(rid=rid, limit=limit, before=before),
            reply_type=ConversationPage,
            retry=True,
        )
        result: ConversationPage = await fut
        return result

    async def conversation(self, conv_id: str) -> ConversationOut:
        """One conversation as it appears in the list (unread count, the peer's read marker)."""
        fut = await self._submit(
            lambda rid: Conversation(rid=rid, conv_id=conv_id), reply_type=ConversationOut, retry=True
        )
        result: ConversationOut = await fut
        return result

    async def shop_search(self, q: str, *, offset: int = 0, limit: int = 20) -> ShopPage:
        """Shops a customer can write to whose name contains ``q`` (protocol.md §17.2):
        names starting with it first; ``next_offset`` pages on."""
        fut = await self._submit(
            lambda rid: ShopSearch(rid=rid, q=q, offset=offset, limit=limit), reply_type=ShopPage, retry=True
        )
        result: ShopPage = await fut
        return result

    async def react(self, conv_id: str, seq: int, emoji: str, *, remove: bool = False) -> ReactOut:
        """Add (or take back) an emoji reaction. Safe to repeat: a reaction one has is not
        added twice. This connection is not pushed its own ``reaction`` event: the client
        syncs it (the reply names its inbox seq), so every device's stream carries it."""
        fut = await self._submit(
            lambda rid: React(rid=rid, conv_id=conv_id, seq=seq, emoji=emoji, remove=remove),
            reply_type=ReactOut,
            retry=True,
            on_reply=self._catch_up,
            wait_connected=True,
        )
        result: ReactOut = await fut
        return result

    async def pin(self, conv_id: str, seq: int, *, unpin: bool = False) -> PinOut:
        """Pin (or unpin) a message; its system entry reaches the stream like any entry."""
        op = Unpin if unpin else Pin
        fut = await self._submit(
            lambda rid: op(rid=rid, conv_id=conv_id, seq=seq),
            reply_type=PinOut,
            retry=True,
            on_reply=self._catch_up,
            wait_connected=True,
        )
        result: PinOut = await fut
        return result

    async def push_settings(self) -> PushSettingsOut:
        """The user's push settings (protocol.md §20.2): ``preview``, ``time_zone``, ``dnd``
        and ``mutes``, the conversations whose mute was set (a conversation not listed has its
        default: ``off``, or ``mentions`` in a read-fan-out group)."""
        fut = await self._submit(
            lambda rid: PushSettingsGet(rid=rid), reply_type=PushSettingsOut, retry=True, wait_connected=True
        )
        result: PushSettingsOut = await fut
        return result

    async def set_push_settings(
        self, *, preview: bool | None = None, time_zone: str | None = None, dnd: str | None = None
    ) -> PushSettingsOut:
        """Change the push settings of every device of the user; what is left None stays.
        ``dnd`` is quiet hours ``"HH:MM-HH:MM"`` in ``time_zone`` (an IANA name), ``""`` for
        none; a bad one raises ``ApiError`` ``bad_request``. Returns the settings after."""
        fut = await self._submit(
            lambda rid: PushSettingsSet(rid=rid, preview=preview, time_zone=time_zone, dnd=dnd),
            reply_type=PushSettingsOut,
            retry=True,
            wait_connected=True,
        )
        result: PushSettingsOut = await fut
        return result

    async def push_mute(self, conv_id: str, mute: PushMuteMode) -> PushSettingsOut:
        """Which messages of a conversation wake this user's devices: ``off`` all of them,
        ``mentions`` only those mentioning the user, ``all`` none. ``off`` is how a member
        turns on a read-fan-out group, which pushes mentions only by default. Returns the
        settings after; a conversation the user is not in raises ``ApiError`` ``not_member``."""
        fut = await self._submit(
            lambda rid: PushMute(rid=rid, conv_id=conv_id, mute=mute),
            reply_type=PushSettingsOut,
            retry=True,
            wait_connected=True,
        )
        result: PushSettingsOut = await fut
        return result

    async def call(
        self, op: str, *, reply_type: Any = Any, retry: bool = False, catch_up: bool = True, **fields: Any
    ) -> Any:
        """Any request by op name (for ops this SDK has no method for yet).

        With ``retry`` the request is sent again after a reconnect (only for idempotent
        ops). With ``catch_up``, a reply naming an ``inbox_seq`` above the cursor (an event
        this device is not pushed, e.g. its own recall) makes the client sync at once;
        otherwise the hole is found on the next push.
        """
        fut = await self._submit(
            lambda rid: {"op": op, "rid": rid, **fields},
            reply_type=reply_type,
            retry=retry,
            on_reply=self._catch_up if catch_up else None,
            wait_connected=True,
        )
        return await fut

    async def sync_now(self) -> None:
        """Sync from the cursor now and wait until caught up."""
        self._synced.clear()
        self._need_sync.set()
        await self.wait_synced()

    # -- HTTP conveniences on this device's session -----------------------------------------------------
    def http(self) -> HttpApi:
        """An :class:`HttpApi` on this client's token and HTTP session (endpoint in use first)."""
        order = self.endpoints[self._endpoint_index :] + self.endpoints[: self._endpoint_index]
        return HttpApi([e.http for e in order], self.token, session=self._http_session)

    async def devices(self) -> list[DeviceOut]:
        return await self.http().devices()

    async def revoke_device(self, device_id: str) -> None:
        await self.http().revoke_device(device_id)

    async def logout(self) -> None:
        """End this device's session on the server, then close the client."""
        try:
            await self.http().logout()
        finally:
            await self.close()

    # -- requests ----------------------------------------------------------------------------
    def _encode(self, obj: Any) -> bytes:
        encoded: bytes = self._encoder.encode(obj)
        return encoded

    def _decode(self, raw: Raw, type_: Any) -> Any:
        if type_ is Any:
            return self._mod.decode(raw) if raw else None
        dec = self._decoders.get(type_)
        if dec is None:
            dec = self._decoders[type_] = self._mod.Decoder(type_)
        return dec.decode(raw)

    async def _submit(
        self,
        build: Callable[[int], Request | dict[str, Any]],
        *,
        reply_type: Any,
        retry: bool,
        on_reply: Callable[[Any], None] | None = None,
        wait_connected: bool = False,
    ) -> asyncio.Future[Any]:
        """Register a request and write it now if connected; return its reply future.

        Registration and the write happen without an await in between, so requests leave
        in the order they were made. ``retry`` requests made while offline wait for the
        next connection; others wait for it only with ``wait_connected``.
        """
        self._check_alive()
        if not retry and not self._ready:
            if not wait_connected:
                raise ConnectionLost("not connected")
            while not self._ready:
                await self._wait_for(self._connected)
        rid = next(self._rids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = _Pending(rid, self._encode(build(rid)), fut, retry=retry, reply_type=reply_type, on_reply=on_reply)
        self._waiters[rid] = pending
        ws = self._ws
        if self._ready and ws is not None:
            pending.gen = self._gen
            pending.written_at = asyncio.get_running_loop().time()
            try:
                await self._write(ws, pending.payload)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                if not retry:
                    self._waiters.pop(rid, None)
                    raise ConnectionLost(str(exc)) from None
                # a retried request goes out again on the next connection
        return fut

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, payload: bytes) -> None:
        await ws.send_frame(payload, self._opcode)

    def _check_alive(self) -> None:
        if self.ended is not None:
            raise self.ended
        if self._closed:
            raise ClientClosed("client closed")

    def _fire(self, ws: aiohttp.ClientWebSocketResponse, payload: bytes) -> None:
        """Write a frame whose reply nobody waits for (acks)."""

        async def write() -> None:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self._write(ws, payload)

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the connection loop ---------------------------------------------------------------------
    async def _run(self) -> None:
        # Every failure, and every lost connection, moves on to the next endpoint: the node
        # just left may be hung, and any node of a cluster serves any device. ``failures``
        # counts attempts since the last authenticated connection; the back-off doubles
        # with each full round of the list that failed.
        failures = 0
        try:
            while not self._closed and self.ended is None:
                endpoint = self.endpoint
                assert self._http_session is not None
                try:
                    async with asyncio.timeout(self._handshake_timeout):
                        ws = await self._http_session.ws_connect(
                            endpoint.ws,
                            params={"format": "msgpack"} if self._binary else None,
                            autoping=True,
                            max_msg_size=64 * 1024 * 1024,
                            timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                        )
                except TimeoutError:
                    self.timeouts += 1
                    log.info("connecting to %s timed out after %.1fs", endpoint.ws, self._handshake_timeout)
                    failures += 1
                except (aiohttp.ClientError, OSError) as exc:
                    log.info("connecting to %s failed: %s", endpoint.ws, exc)
                    failures += 1
                else:
                    try:
                        if await self._serve(ws):
                            failures = 0
                        else:
                            failures += 1
                    except SessionEnded as exc:
                        self.ended = exc
                    except (ConnectionError, aiohttp.ClientError, TimeoutError, ConnectionLost) as exc:
                        # the connection failed before it was in use
                        log.info("connection to %s lost: %s", endpoint.ws, exc)
                        failures += 1
                if self._closed or self.ended is not None:
                    break
                self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
                await self._backoff(failures // len(self.endpoints))
        finally:
            self._finish(self.ended or ClientClosed("client closed"))

    async def _backoff(self, rounds: int) -> None:
        """Jittered exponential back-off: a random delay in [d/2, d], d = initial * 2**rounds,
        ``rounds`` being the number of full rounds of the endpoint list that failed."""
        delay = min(self._backoff_max, self._backoff_initial * (2**rounds))
        delay *= random.uniform(0.5, 1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    def _finish(self, why: YimClientError) -> None:
        """Stop for good: fail every pending request and end the event stream."""
        for pending in list(self._waiters.values()):
            if not pending.future.done():
                pending.future.set_exception(why)
                pending.future.exception()  # retrieved: nobody may be waiting any more
        self._waiters.clear()
        if not self._ended.is_set():
            self._ended.set()
            self._queue.put_nowait(None)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Run one connection until it ends. Returns whether it got authenticated."""
        self._gen += 1
        gen = self._gen
        self._ws = ws
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_loop(ws, gen), name="yim-client-reader")
        tasks: set[asyncio.Task[Any]] = {reader}
        authenticated = False
        hung = False  # left because the node stopped answering
        self._last_frame = loop.time()
        try:
            try:
                auth = await self._authenticate(ws, reader)
            except TimeoutError:
                self.timeouts += 1
                hung = True
                raise ConnectionLost(f"no auth reply within {self._auth_timeout}s") from None
            authenticated = True
            self.auth = auth
            self.user_id = auth.user_id
            self.device_id = auth.device_id
            self.connects += 1
            before = self.cursor
            self._core.authenticated(auth)
            if self.cursor != before:  # started from the head: nothing below it to acknowledge
                self._acked = self.cursor
            await self._resend_backlog(ws, gen)
            self._ready = True
            self._connected.set()
            self._need_sync.set()
            tasks.add(loop.create_task(self._syncer(), name="yim-client-syncer"))
            # ping as asked, but often enough to notice a hung node soon, and always well
            # within the idle timeout
            heartbeat = self._heartbeat_override or min(
                auth.heartbeat_s, auth.idle_timeout_s * 0.4, DEFAULT_PING_INTERVAL_S
            )
            heartbeat_task = loop.create_task(self._heartbeat(heartbeat), name="yim-client-heartbeat")
            tasks.add(heartbeat_task)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not reader and not task.cancelled() and task.exception() is not None:
                    log.info("connection abandoned: %s", task.exception())
                    hung = hung or task is heartbeat_task
        finally:
            self._ready = False
            self._ws = None
            self._connected.clear()
            self._synced.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if hung:
                _abort(ws)  # a close handshake would only wait for it
            if not ws.closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                        await ws.close()
            self._connection_lost(gen)
            self.last_close = code, reason = _close_of(reader, ws)
        if self.ended is None and code in FATAL_CLOSE_CODES:
            self.ended = SessionEnded(code, reason)
        if code == CLOSE_SLOW:  # most likely a sync page too big for the send buffer
            self._core.sync_limit = max(1, self._core.sync_limit // 2)
        return authenticated

    async def _authenticate(
        self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[tuple[int | None, str]]
    ) -> AuthOk:
        rid = next(self._rids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = _Pending(
            rid, self._encode(Auth(rid=rid, token=self.token)), fut, retry=False, reply_type=AuthOk, on_reply=None
        )
        pending.gen = self._gen
        self._waiters[rid] = pending
        try:
            async with asyncio.timeout(self._auth_timeout):  # the write too: a hung node may not read
                await self._write(ws, pending.payload)
                await asyncio.wait({fut, reader}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._waiters.pop(rid, None)
            raise
        if not fut.done():
            self._waiters.pop(rid, None)
            code, reason = _close_of(reader, ws)
            if code in FATAL_CLOSE_CODES:
                raise SessionEnded(code, reason)
            raise ConnectionLost(f"connection closed before the auth reply ({code})")
        try:
            auth: AuthOk = fut.result()
            return auth
        except ApiError as exc:
            if exc.code == "unauthorized":
                raise SessionEnded(CLOSE_AUTH_FAILED, exc.message) from None
            raise ConnectionLost(f"auth failed: {exc}") from None

    async def _resend_backlog(self, ws: aiohttp.ClientWebSocketResponse, gen: int) -> None:
        """Write every retried request not yet written on this connection, oldest first.
        Requests made during the awaits land behind them and are picked up by the next round."""
        while True:
            todo = [p for p in self._waiters.values() if p.retry and p.gen != gen]
            if not todo:
                return
            for pending in todo:
                if pending.rid in self._waiters and pending.gen != gen:
                    if pending.gen != 0:
                        self.resent += 1
                    pending.gen = gen
                    pending.written_at = asyncio.get_running_loop().time()
                    await self._write(ws, pending.payload)

    def _connection_lost(self, gen: int) -> None:
        """Fail the one-shot requests of a dead connection; retried ones wait for the next.
        A catch-up round in progress is dropped: the next connection starts one afresh."""
        self._core.abort_sync()
        for rid, pending in list(self._waiters.items()):
            if pending.gen == gen and not pending.retry:
                del self._waiters[rid]
                if not pending.future.done():
                    pending.future.set_exception(ConnectionLost("connection lost before the reply"))
                    pending.future.exception()
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse, gen: int) -> tuple[int | None, str]:
        """Dispatch frames until the connection ends; return its close code and reason."""
        loop = asyncio.get_running_loop()
        while True:
            msg = await ws.receive()
            self._last_frame = loop.time()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._dispatch(msg.data, gen)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                # the code the server sent (ws.close_code may say 1006 if the server had
                # already dropped the transport when aiohttp answered the close)
                return msg.data, msg.extra or ""
            elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, str(msg.data or "")

    def _dispatch(self, data: bytes | str, gen: int) -> None:
        try:
            frame = self._frame_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("unreadable frame from the server: %s", exc)
            return
        if frame.t == "event":
            self._core.receive_event(self._item(frame.seq, frame.type, frame.data))
            self._after_core()
            return
        if frame.t == "notice":
            if frame.type == "group_message":
                try:
                    entry = self._decode(frame.data, MessageOut)
                except msgspec.ValidationError as exc:
                    log.warning("group_message notice does not match this SDK's struct: %s", exc)
                else:
                    self._core.receive_group_entry(entry)
                    self._after_core()
                return
            # A profile notice carries a User: typed, as the replies that carry one.
            shape: Any = UserOut if frame.type == "profile" else Any
            try:
                data = self._decode(frame.data, shape)
            except msgspec.ValidationError as exc:
                log.warning("%s notice does not match this SDK's struct: %s", frame.type, exc)
                return
            self._queue.put_nowait(Notice(type=frame.type, data=data))
            return
        if not isinstance(frame.rid, int):
            if frame.t == "err":
                log.warning("server error without a request: %s %s", frame.code, frame.message)
            return
        pending = self._waiters.get(frame.rid)
        if pending is None or pending.gen != gen:
            return  # e.g. the reply to an ack
        del self._waiters[frame.rid]
        fut = pending.future
        if frame.t == "err":
            if not fut.done():
                fut.set_exception(ApiError(frame.code, frame.message, retry_after=frame.retry_after))
            return
        try:
            result = self._decode(frame.data, pending.reply_type) if pending.reply_type is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if not fut.done():
                fut.set_exception(YimClientError(f"malformed reply: {exc}"))
            return
        if pending.on_reply is not None:
            pending.on_reply(result)
            self._after_core()
        if not fut.done():
            fut.set_result(result)

    # -- feeding the core ----------------------------------------------------------------------
    def _item(self, seq: int, type_: str, raw: Raw) -> InboxItem:
        try:
            data = self._decode(raw, _EVENT_TYPES.get(type_, Any))
        except msgspec.ValidationError as exc:  # a newer server's shape: still deliver it, as plain data
            log.warning("event %d (%s) does not match this SDK's struct: %s", seq, type_, exc)
            data = self._decode(raw, Any)
        return InboxItem(seq=seq, type=type_, data=data)

    def _after_core(self) -> None:
        """Carry out what the core decided after its last inputs: hand the application what
        it released (in order), start a catch-up, time a hole, acknowledge the cursor."""
        out = self._core.poll()
        for item in out.deliver:
            self._queue.put_nowait(item)
        if out.sync:
            self._need_sync.set()
        if out.unsettled:
            self._synced.clear()
        if out.hole:
            self._arm_gap_timer()
        self._schedule_ack()

    def _on_send_ack(
        self, ack: SendAck, kind: str, body: Any, client_msg_id: str, mentions: list[str], mention_all: bool
    ) -> None:
        # Our own message is not pushed to this connection: the reply stands for its event.
        self._core.sent(
            ack, kind=kind, body=body, client_msg_id=client_msg_id, mentions=mentions, mention_all=mention_all
        )

    def _on_forwarded(self, result: ForwardOut) -> None:
        # The copies are not pushed to this connection: catch up if any is news here.
        for target in result.results:
            for ack in target.sent:
                self._catch_up(ack)

    def _on_read_reply(self, result: ReadResult) -> None:
        # Our own "read" event is not pushed to this connection: the reply stands for it.
        self._core.read_replied(result)

    def _catch_up(self, result: Any) -> None:
        if isinstance(result, Struct):
            result = msgspec.to_builtins(result)
        self._core.other_reply(result if isinstance(result, dict) else {})

    def _gap_check(self) -> None:
        self._gap_handle = None
        if self._core.gap_expired():
            self.gaps += 1
            self._after_core()

    def _arm_gap_timer(self) -> None:
        if self._gap_handle is None:
            self._gap_handle = asyncio.get_running_loop().call_later(self._gap_grace, self._gap_check)

    async def _syncer(self) -> None:
        while True:
            await self._need_sync.wait()
            self._need_sync.clear()
            await self._catch_up_round()
            if self._core.holding:  # entries above a head this round saw: they commit shortly
                self._arm_gap_timer()
            if not self._core.holding and not self._need_sync.is_set():
                self._synced.set()
            self._schedule_ack()

    async def _catch_up_round(self) -> None:
        """Carry out the requests of one catch-up round of the core (§12.1, §12.3): sync
        pages from the cursor until the head with no hole left, then the group pulls."""
        self._core.begin_sync()
        while (request := self._core.next_request()) is not None:
            self._after_core()
            if isinstance(request, SyncInbox):
                if request.delay_s > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(request.delay_s):
                            await self._stopping.wait()
                fut = await self._submit(
                    functools.partial(Sync, since=request.since, limit=request.limit),
                    reply_type=_SyncPageIn,
                    retry=False,
                )
                page: _SyncPageIn = await fut
                self.syncs += 1
                events = [self._item(ev.seq, ev.type, ev.data) for ev in page.events]
                self._core.sync_page(events, has_more=page.has_more, groups=page.groups)
            else:
                fut = await self._submit(
                    functools.partial(History, conv_id=request.conv_id, after=request.after, limit=request.limit),
                    reply_type=HistoryPage,
                    retry=False,
                )
                try:
                    history: HistoryPage = await fut
                except ApiError as exc:  # e.g. removed in between: the next round forgets it
                    log.warning("pulling group %s failed: %s", request.conv_id, exc)
                    self._core.pull_failed(request.conv_id)
                    continue
                self.group_pulls += 1
                self._core.group_page(request.conv_id, history.messages, has_more=history.has_more)
            self._after_core()
        self._after_core()

    # -- acks and heartbeats ------------------------------------------------------------------------
    def _schedule_ack(self) -> None:
        if self._ack_handle is None and self._ready and self.cursor > self._acked:
            self._ack_handle = asyncio.get_running_loop().call_later(self._ack_delay, self._send_ack)

    def _send_ack(self) -> None:
        """One ``ack`` for everything up to the cursor (batched: at most one per ``ack_delay_s``)."""
        self._ack_handle = None
        ws = self._ws
        if ws is None or not self._ready or self.cursor <= self._acked:
            return
        self._acked = self.cursor
        self.acks_sent += 1
        self._fire(ws, self._encode(Ack(rid=next(self._rids), seq=self.cursor)))

    def _reply_overdue(self, now: float) -> bool:
        """A request has waited ``OVERDUE_REPLY_S`` for its reply, and nothing at all arrived
        meanwhile: a healthy node, even a busy one, answers or sends something by then."""
        oldest = next(iter(self._waiters.values()), None)
        return (
            oldest is not None
            and oldest.written_at != 0.0
            and now - oldest.written_at >= OVERDUE_REPLY_S
            and now - self._last_frame >= OVERDUE_REPLY_S
        )

    async def _until_ping_due(self, interval: float) -> None:
        """Wait ``interval``, or less if a reply becomes overdue meanwhile (probe at once)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while (now := loop.time()) < due and not self._reply_overdue(now):
            await asyncio.sleep(min(due - now, _PROBE_CHECK_S))

    async def _heartbeat(self, interval: float) -> None:
        """Ping every ``interval``, or at once when a reply is overdue. The connection is dead
        when it stays silent after a ping — no pong, no frame at all — for ``ping_timeout_s``,
        or for ``PROBE_TIMEOUT_S`` while a reply is overdue, even if its socket looks open
        (a hung node, or a pseudo-online link). Silence is counted from the ping or the
        last frame, whichever is later: a busy node may queue the pong behind a large sync
        page, and it is alive as long as frames arrive."""
        loop = asyncio.get_running_loop()
        while True:
            await self._until_ping_due(interval)
            sent_at = loop.time()
            try:
                # the write is bounded too: a hung node stops reading, and the send buffer fills
                async with asyncio.timeout(self._ping_timeout):
                    fut = await self._submit(lambda rid: Ping(rid=rid), reply_type=None, retry=False)
            except TimeoutError:
                self.timeouts += 1
                raise ConnectionLost(f"a ping could not be written within {self._ping_timeout}s") from None
            while not fut.done():
                now = loop.time()
                allowed = min(PROBE_TIMEOUT_S, self._ping_timeout) if self._reply_overdue(now) else self._ping_timeout
                left = max(sent_at, self._last_frame) + allowed - now
                if left <= 0:
                    fut.cancel()
                    self.timeouts += 1
                    raise ConnectionLost(f"nothing received for {allowed}s after a ping")
                await asyncio.wait({fut}, timeout=min(left, _PROBE_CHECK_S))
            if not fut.cancelled():
                fut.exception()  # a pong, or the connection's end (the reader reports that)
