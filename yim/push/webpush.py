"""Web Push (RFC 8030) with VAPID (RFC 8292) and an aes128gcm payload (RFC 8291), sent over aiohttp.

pywebpush 2.5.0 has an async path (`webpush_async`, aiohttp), but it is not used: it reads the whole
answer with `resp.text()`, unbounded, from an endpoint the *client* chose, and it brings `requests`
as a runtime dependency. What it does is done here with the libraries it is built on: py-vapid
signs the JWT and http_ece encrypts; the request and the bounded read are ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from urllib.parse import urlsplit

import aiohttp
import http_ece
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import VapidException

from yim.push._common import Gate, clip, read_bounded, ssl_context, status_outcome
from yim.push.types import Failed, Notification, PushConfigError, PushOutcome, PushSettings, WebPushTarget
from yim.push.vapid import VapidKey, b64url

#: 404 and 410: the subscription expired or the user revoked it (RFC 8030 §7.3)
GONE = frozenset({404, 410})
#: how long one VAPID JWT is valid; RFC 8292 caps it at 24 hours
JWT_LIFETIME = 12 * 3600
#: a cached JWT is signed again once it has less than this left (it is reused per origin till then)
JWT_RENEW = 3600
#: origins whose JWT is kept; the endpoints are the browsers' push services, a handful, but they
#: come from clients, so the cache is cleared when full rather than grown
MAX_CACHED_ORIGINS = 1024
#: RFC 8030 §5.4: a Topic is at most 32 base64url characters
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def topic_for(collapse_key: str) -> str:
    """A collapse key as a valid Topic: itself if it fits, else a stable 32-character digest of it."""
    if TOPIC.match(collapse_key):
        return collapse_key
    return b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def payload(n: Notification) -> bytes:
    """The JSON the service worker receives once the browser decrypts the push."""
    body: dict[str, object] = {"conv_id": n.conv_id, "msg_id": n.msg_id, "badge": n.badge}
    if n.title is not None:
        body["title"] = clip(n.title)
    if n.body is not None:
        body["body"] = clip(n.body)
    if n.data:
        body["data"] = n.data
    return msgspec.json.encode(body)


class WebPushProvider:
    def __init__(self, settings: PushSettings, vapid: VapidKey) -> None:
        self.settings = settings
        self.vapid = vapid
        try:
            # py-vapid's own rule for `sub`, checked at start rather than on the first push
            vapid.authorization("https://push.invalid", settings.vapid_subject, int(time.time()) + 60)
        except VapidException as e:
            raise PushConfigError(f"vapid_subject {settings.vapid_subject!r}: {e}") from e
        self.gate = Gate("web push", settings)
        self.jwts: dict[str, tuple[str, int]] = {}  # origin -> (Authorization, expiry)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_connections, ssl=ssl_context(settings)),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        )

    async def close(self) -> None:
        await self.session.close()

    def authorization(self, origin: str) -> str:
        """The VAPID header for one push service; its JWT's audience is that origin, good there only."""
        now = int(time.time())
        cached = self.jwts.get(origin)
        if cached and cached[1] - now > JWT_RENEW:
            return cached[0]
        expires = now + JWT_LIFETIME
        header = self.vapid.authorization(origin, self.settings.vapid_subject, expires)
        if len(self.jwts) >= MAX_CACHED_ORIGINS:
            self.jwts.clear()
        self.jwts[origin] = (header, expires)
        return header

    async def send(self, target: WebPushTarget, notification: Notification) -> PushOutcome:
        url = urlsplit(target.endpoint)
        allowed = ("https", "http") if self.settings.webpush_allow_http else ("https",)
        if url.scheme not in allowed or not url.hostname or url.username is not None:
            return Failed(f"web push endpoint must be an {' or '.join(allowed)} URL without credentials")
        try:
            receiver = _unb64url(target.p256dh)
            auth = _unb64url(target.auth)
        except (binascii.Error, ValueError):
            return Failed("web push subscription keys are not base64url")
        if len(receiver) != 65 or receiver[0] != 4 or len(auth) != 16:
            return Failed("web push subscription keys are not a P-256 point and a 16-byte secret")
        try:
            # an ephemeral sender key per message, as RFC 8291 requires
            body = http_ece.encrypt(
                payload(notification),
                private_key=ec.generate_private_key(ec.SECP256R1()),
                dh=receiver,
                auth_secret=auth,
                version="aes128gcm",
            )
        except (ValueError, http_ece.ECEException) as e:
            return Failed(f"web push subscription key unusable: {e}")
        try:
            authorization = self.authorization(f"{url.scheme}://{url.netloc}")
        except VapidException as e:  # py-vapid takes a host name or IPv4 address only
            return Failed(f"web push endpoint origin cannot be signed for: {e}")
        headers = {
            "Authorization": authorization,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.settings.ttl),
            "Urgency": "high",
        }
        if notification.collapse_key:
            headers["Topic"] = topic_for(notification.collapse_key)

        async def call() -> PushOutcome:
            async with self.session.post(target.endpoint, data=body, headers=headers, allow_redirects=False) as resp:
                await read_bounded(resp.content.iter_any(), self.settings.max_response_bytes)
                return status_outcome(resp.status, resp.headers.get("Retry-After"), "web push service", GONE)

        return await self.gate.run(call, (aiohttp.ClientError, OSError))
