"""An FCM HTTP v1 stand-in with its OAuth token endpoint.

/token checks the service account's JWT assertion as Google's endpoint does (RS256 with the
account's key, `kid`, `iss`, `aud` = this endpoint, the messaging scope, at most an hour) and hands
out opaque access tokens; messages:send checks the bearer token, the project and the v1 `message`
schema (unknown fields refused, `data` values strings only), and answers with FCM's error bodies.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import jwt
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.push_standins.common import BUSY_RETRY_AFTER, DOWN_RETRY_AFTER, Modes

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class _Notification(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    title: str | None = None
    body: str | None = None
    image: str | None = None


class _AndroidNotification(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    title: str | None = None
    body: str | None = None
    notification_count: int | None = None
    tag: str | None = None


class _Android(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    collapse_key: str | None = None
    priority: Literal["NORMAL", "HIGH"] | None = None
    ttl: str | None = None
    data: dict[str, str] | None = None
    notification: _AndroidNotification | None = None


class _Apns(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    headers: dict[str, str] | None = None
    payload: dict[str, object] | None = None


class _Message(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    token: str | None = None
    topic: str | None = None
    condition: str | None = None
    name: str | None = None
    data: dict[str, str] | None = None
    notification: _Notification | None = None
    android: _Android | None = None
    apns: _Apns | None = None
    webpush: dict[str, object] | None = None


class _Send(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    message: _Message
    validate_only: bool = False


def _error(status: int, name: str, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    details = [{"@type": FCM_ERROR, "errorCode": code}] if code else []
    body = {"error": {"code": status, "message": name, "status": name, "details": details}}
    return web.json_response(body, status=status, headers=headers)


class FcmStandin:
    def __init__(self, *, project_id: str, client_email: str, key_id: str, public_key: rsa.RSAPublicKey) -> None:
        self.project_id = project_id
        self.client_email = client_email
        self.key_id = key_id
        self.public_key = public_key
        self.m = Modes()
        self.origin = ""
        self.issued: dict[str, float] = {}  # access token -> expiry
        self.exchanges = 0
        self.app = web.Application()
        self.app.router.add_post("/token", self.token)
        self.app.router.add_post("/v1/projects/{project}/messages:send", self.send)

    @property
    def token_url(self) -> str:
        return f"{self.origin}/token"

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": self.m.refuse("unsupported_grant_type")}, status=400)
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return web.json_response({"error": self.m.refuse("invalid_request")}, status=400)
        try:
            if jwt.get_unverified_header(assertion).get("kid") != self.key_id:
                raise jwt.InvalidTokenError("kid is not the service account's key id")
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_url,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
            if SCOPE not in str(claims["scope"]).split():
                raise jwt.InvalidTokenError("scope lacks firebase.messaging")
            if claims["exp"] - claims["iat"] > 3600:
                raise jwt.InvalidTokenError("assertion valid for more than an hour")
        except jwt.PyJWTError as e:
            return web.json_response(
                {"error": "invalid_grant", "error_description": self.m.refuse(f"invalid_grant: {e}")}, status=400
            )
        self.exchanges += 1
        access = os.urandom(24).hex()
        self.issued[access] = time.time() + 3599
        return web.json_response({"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        scheme, _, access = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or self.issued.get(access, 0) < time.time():
            self.m.refuse("UNAUTHENTICATED")
            return _error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")
        if request.match_info["project"] != self.project_id:
            self.m.refuse("PERMISSION_DENIED")
            return _error(403, "PERMISSION_DENIED")
        try:
            send = msgspec.json.decode(await request.read(), type=_Send)
        except msgspec.DecodeError as e:
            self.m.refuse(f"INVALID_ARGUMENT: {e}")
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        msg = send.message
        targets = [t for t in (msg.token, msg.topic, msg.condition) if t is not None]
        if len(targets) != 1 or not msg.token:
            self.m.refuse("INVALID_ARGUMENT: not exactly one token")
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        if msg.android and msg.android.ttl and not (msg.android.ttl.endswith("s") and msg.android.ttl[:-1].isdigit()):
            self.m.refuse("INVALID_ARGUMENT: android.ttl is not a duration")
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        mode = self.m.mode(msg.token)
        if mode == "gone":
            return _error(404, "NOT_FOUND", "UNREGISTERED")
        if mode == "busy":
            return _error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {"Retry-After": BUSY_RETRY_AFTER})
        if mode == "down":
            return _error(503, "UNAVAILABLE", "UNAVAILABLE", {"Retry-After": DOWN_RETRY_AFTER})
        if mode == "error":
            return _error(500, "INTERNAL", "INTERNAL")
        if mode == "slow":
            await self.m.stall()
        self.m.accepted.append({"token": msg.token, "message": msgspec.to_builtins(msg)})
        return web.json_response({"name": f"projects/{self.project_id}/messages/{len(self.m.accepted)}"})
