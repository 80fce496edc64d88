"""APNs with token-based auth (an ES256 JWT from a .p8 key) over HTTP/2, with httpx.

aioapns 4.0 is not used: its hosts and port are class constants of its protocol classes
(`APNS_SERVER`, `APNS_PORT`), so the base URL cannot be a setting without patching the library.
httpx (with h2) takes a base URL, a CA bundle, pool limits and timeouts as plain arguments, and
`http1=False` makes it speak HTTP/2 only, as APNs does.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from yim.push._common import Gate, clip, parse_retry_after, read_bounded, ssl_context
from yim.push.types import (
    ApnsTarget,
    Delivered,
    Failed,
    Gone,
    Notification,
    PushConfigError,
    PushOutcome,
    PushSettings,
    Retry,
)

#: APNs refuses a provider token older than an hour and one renewed more than every 20 minutes
TOKEN_LIFETIME = 40 * 60
#: the reasons saying the token will never reach a device of this app again
GONE_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
#: the provider token is too old (a clock off, a long pause): a new one for the next push fixes it;
#: InvalidProviderToken (a wrong key, key id or team id) is a Failed that only the operator can fix
EXPIRED_REASON = "ExpiredProviderToken"
#: what the app shows when previews are off; the app's Localizable.strings holds the text
NO_PREVIEW_LOC_KEY = "NEW_MESSAGE"


class _Reason(msgspec.Struct):
    reason: str = ""


def collapse_id(key: str) -> str:
    """The key itself if APNs takes it (at most 64 bytes; ASCII, as it is a header), else a stable digest of it."""
    if key.isascii() and key.isprintable() and len(key) <= 64:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def payload(n: Notification) -> bytes:
    alert: dict[str, str] = {}
    if n.title is not None:
        alert["title"] = clip(n.title) or ""
    if n.body is not None:
        alert["body"] = clip(n.body) or ""
    if not alert:
        alert["loc-key"] = NO_PREVIEW_LOC_KEY
    aps = {"alert": alert, "badge": n.badge, "sound": "default", "mutable-content": 1}
    return msgspec.json.encode({**n.data, "aps": aps, "conv_id": n.conv_id, "msg_id": n.msg_id})


class ApnsProvider:
    def __init__(self, settings: PushSettings) -> None:
        if not (settings.apns_key_file and settings.apns_key_id and settings.apns_team_id and settings.apns_topic):
            raise PushConfigError("APNs needs apns_key_file, apns_key_id, apns_team_id and apns_topic")
        try:
            with open(settings.apns_key_file, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except (OSError, ValueError) as e:
            raise PushConfigError(f"apns_key_file {settings.apns_key_file}: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise PushConfigError(f"apns_key_file {settings.apns_key_file}: not an EC P-256 key (.p8)")
        self.key = key
        self.settings = settings
        self.gate = Gate("APNs", settings)
        self.token = ""
        self.token_at = 0.0
        self.client = httpx.AsyncClient(
            http1=False,
            http2=True,
            verify=ssl_context(settings),
            limits=httpx.Limits(max_connections=settings.max_connections),
            timeout=httpx.Timeout(settings.timeout),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.client.aclose()

    def bearer(self) -> str:
        now = time.time()
        if not self.token or now - self.token_at > TOKEN_LIFETIME:
            self.token = jwt.encode(
                {"iss": self.settings.apns_team_id, "iat": int(now)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.settings.apns_key_id},
            )
            self.token_at = now
        return self.token

    async def send(self, target: ApnsTarget, notification: Notification) -> PushOutcome:
        token = target.device_token
        if not token or len(token) > 200 or any(c not in "0123456789abcdefABCDEF" for c in token):
            return Gone("APNs device token is not hex")
        base = self.settings.apns_sandbox_base_url if target.sandbox else self.settings.apns_base_url
        headers = {
            "authorization": f"bearer {self.bearer()}",
            "apns-topic": self.settings.apns_topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-expiration": str(int(time.time()) + self.settings.ttl),
        }
        if notification.collapse_key:
            headers["apns-collapse-id"] = collapse_id(notification.collapse_key)
        body = payload(notification)

        async def call() -> PushOutcome:
            url = f"{base.rstrip('/')}/3/device/{token}"
            async with self.client.stream("POST", url, content=body, headers=headers) as resp:
                raw = await read_bounded(resp.aiter_raw(), self.settings.max_response_bytes)
                return self.outcome(resp.status_code, resp.headers.get("retry-after"), raw)

        return await self.gate.run(call, (httpx.TransportError, OSError))

    def outcome(self, status: int, retry_after: str | None, raw: bytes) -> PushOutcome:
        if status == 200:
            return Delivered()
        try:
            reason = msgspec.json.decode(raw, type=_Reason).reason if raw else ""
        except msgspec.DecodeError:
            reason = ""
        what = f"APNs answered {status} {reason}".rstrip()
        if status == 410 or reason in GONE_REASONS:
            return Gone(what)
        if reason == EXPIRED_REASON:
            self.token = ""
            return Retry(what)
        if status == 429 or status >= 500:
            return Retry(what, parse_retry_after(retry_after))
        return Failed(what)
