"""FCM HTTP v1: a service account's signed JWT exchanged for an OAuth token, then messages:send.

No Google library: the exchange is one RS256 JWT (PyJWT, already a dependency) posted to the token
endpoint (a setting, like the FCM base URL), and both calls go over one bounded aiohttp pool.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from yim.push._common import Gate, clip, parse_retry_after, read_bounded, ssl_context, status_outcome
from yim.push.types import (
    Delivered,
    Failed,
    FcmTarget,
    Gone,
    Notification,
    PushConfigError,
    PushOutcome,
    PushSettings,
    Retry,
)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: Google accepts an assertion valid for an hour at most
ASSERTION_LIFETIME = 3600
#: an access token is renewed this long before it expires, so none expires in flight
TOKEN_MARGIN = 300
#: FCM's errorCode values saying the registration token will never work for this project again
GONE_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class ServiceAccount(msgspec.Struct):
    """The fields of a service account's JSON key that the exchange uses."""

    project_id: str
    client_email: str
    private_key: str
    private_key_id: str = ""


class _Token(msgspec.Struct):
    access_token: str
    expires_in: int = 3600


class _Detail(msgspec.Struct):
    type: str = msgspec.field(default="", name="@type")
    errorCode: str = ""


class _Error(msgspec.Struct):
    status: str = ""
    message: str = ""
    details: list[_Detail] = []


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


class _TokenRefused(Exception):
    def __init__(self, outcome: PushOutcome) -> None:
        self.outcome = outcome


def message(target: FcmTarget, n: Notification, ttl: int) -> dict[str, object]:
    """The v1 `message` object; `data` values must all be strings (FCM refuses anything else)."""
    data = {**n.data, "conv_id": n.conv_id, "msg_id": n.msg_id, "badge": str(n.badge)}
    msg: dict[str, object] = {"token": target.token, "data": data}
    android: dict[str, object] = {"priority": "HIGH", "ttl": f"{ttl}s"}
    notification: dict[str, str] = {}
    if n.title is not None:
        notification["title"] = clip(n.title) or ""
    if n.body is not None:
        notification["body"] = clip(n.body) or ""
    if notification:
        msg["notification"] = notification
        android["notification"] = {"notification_count": n.badge}
    if n.collapse_key:
        android["collapse_key"] = n.collapse_key
    msg["android"] = android
    msg["apns"] = {"payload": {"aps": {"badge": n.badge}}}
    return msg


class FcmProvider:
    def __init__(self, settings: PushSettings) -> None:
        if not settings.fcm_credentials_file:
            raise PushConfigError("FCM needs fcm_credentials_file (a service account's JSON key)")
        try:
            with open(settings.fcm_credentials_file, "rb") as f:
                account = msgspec.json.decode(f.read(), type=ServiceAccount)
            key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
        except (OSError, ValueError, msgspec.DecodeError) as e:
            raise PushConfigError(f"fcm_credentials_file {settings.fcm_credentials_file}: {e}") from e
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PushConfigError(f"fcm_credentials_file {settings.fcm_credentials_file}: not an RSA key")
        self.account = account
        self.key = key
        self.settings = settings
        self.gate = Gate("FCM", settings)
        self.send_url = f"{settings.fcm_base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self.access_token = ""
        self.token_expires = 0.0
        # one exchange at a time; its waiters are bounded by the gate
        self.token_lock = asyncio.Lock()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_connections, ssl=ssl_context(settings)),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        )

    async def close(self) -> None:
        await self.session.close()

    def assertion(self, now: int) -> str:
        claims = {
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.settings.fcm_token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.account.private_key_id} if self.account.private_key_id else None
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)

    async def token(self) -> str:
        async with self.token_lock:
            now = time.time()
            if self.access_token and now < self.token_expires:
                return self.access_token
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": self.assertion(int(now))}
            async with self.session.post(self.settings.fcm_token_url, data=form, allow_redirects=False) as resp:
                raw = await read_bounded(resp.content.iter_any(), self.settings.max_response_bytes)
                if resp.status != 200:
                    outcome = status_outcome(
                        resp.status, resp.headers.get("Retry-After"), "FCM token endpoint", frozenset()
                    )
                    raise _TokenRefused(outcome)
            try:
                got = msgspec.json.decode(raw, type=_Token)
            except msgspec.DecodeError as e:
                raise _TokenRefused(Failed(f"FCM token endpoint answered no token: {e}")) from e
            self.access_token = got.access_token
            self.token_expires = now + got.expires_in - TOKEN_MARGIN
            return self.access_token

    async def send(self, target: FcmTarget, notification: Notification) -> PushOutcome:
        if not target.token:
            return Gone("FCM registration token is empty")
        body = msgspec.json.encode({"message": message(target, notification, self.settings.ttl)})

        async def call() -> PushOutcome:
            try:
                token = await self.token()
            except _TokenRefused as e:
                return e.outcome
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            async with self.session.post(self.send_url, data=body, headers=headers, allow_redirects=False) as resp:
                raw = await read_bounded(resp.content.iter_any(), self.settings.max_response_bytes)
                return self.outcome(resp.status, resp.headers.get("Retry-After"), raw)

        return await self.gate.run(call, (aiohttp.ClientError, OSError))

    def outcome(self, status: int, retry_after: str | None, raw: bytes) -> PushOutcome:
        if status == 200:
            return Delivered()
        try:
            error = msgspec.json.decode(raw, type=_ErrorBody).error if raw else _Error()
        except msgspec.DecodeError:
            error = _Error()
        codes = {d.errorCode for d in error.details if d.type == FCM_ERROR_TYPE and d.errorCode}
        what = f"FCM answered {status} {error.status} {' '.join(sorted(codes))}".rstrip()
        if codes & GONE_CODES:
            return Gone(what)
        if status == 401:
            # our access token was refused before its time: exchange a new one for the next push
            self.access_token = ""
            return Retry(what)
        if status == 429 or status >= 500:
            return Retry(what, parse_retry_after(retry_after))
        return Failed(what)
