"""The inputs and the answer every push provider shares."""

from __future__ import annotations

from typing import Protocol, TypeVar

import msgspec


class PushConfigError(Exception):
    """A provider's settings or credentials are missing or unusable: raised at start, never per push."""


class PushSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the providers need from the operator; every base URL is a setting (tests, proxies)."""

    #: the whole of one call (connect, TLS, request, response): past it the push is retried later
    timeout: float = 10.0
    #: connections per provider pool (APNs multiplexes its streams over them)
    max_connections: int = 16
    #: calls in progress per provider; one more answers "retry" at once instead of queueing
    max_in_flight: int = 256
    #: the most of a provider's answer that is read; a longer one is not the provider we know
    max_response_bytes: int = 64 * 1024
    #: a CA bundle to trust instead of the system's (a TLS-intercepting proxy, a test stand-in)
    ca_file: str | None = None
    #: seconds a provider keeps an undelivered push for an offline device (Web Push TTL, APNs expiry, FCM)
    ttl: int = 86_400

    # Web Push: the endpoint comes from the browser's subscription, so only its scheme is checked
    vapid_dir: str | None = None  # the folder holding vapid_private.pem (made on first use)
    vapid_subject: str = ""  # mailto: or https: contact for the push services (RFC 8292)
    webpush_allow_http: bool = False  # plain-http endpoints (loopback test receivers only)

    # APNs token-based auth (a .p8 key from the Apple developer account)
    apns_base_url: str = "https://api.push.apple.com"
    apns_sandbox_base_url: str = "https://api.sandbox.push.apple.com"
    apns_key_file: str | None = None
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""  # the app's bundle id

    # FCM HTTP v1 with a service account's JSON key
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    fcm_credentials_file: str | None = None

    # a Matrix push gateway (Sygnal or any other speaking /_matrix/push/v1/notify)
    gateway_url: str | None = None


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One push: what the device shows (title/body None when previews are off) and where it leads."""

    conv_id: str
    msg_id: str
    title: str | None = None
    body: str | None = None
    badge: int = 0
    collapse_key: str | None = None  # pushes with the same key replace each other on the device
    data: dict[str, str] = {}


class WebPushTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A browser's PushSubscription: endpoint and keys.p256dh / keys.auth (base64url)."""

    endpoint: str
    p256dh: str
    auth: str


class ApnsTarget(msgspec.Struct, frozen=True, kw_only=True):
    device_token: str  # hex
    sandbox: bool = False  # a development build's token: only the sandbox host knows it


class FcmTarget(msgspec.Struct, frozen=True, kw_only=True):
    token: str  # the app instance's registration token


class GatewayTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A pusher registered for a Matrix push gateway: the app it belongs to and its pushkey."""

    app_id: str
    pushkey: str
    pushkey_ts: int = 0
    data: dict[str, str] = {}  # the pusher's data, passed through to the gateway


PushTarget = WebPushTarget | ApnsTarget | FcmTarget | GatewayTarget


class Delivered(msgspec.Struct, frozen=True):
    """The provider accepted the push."""


class Gone(msgspec.Struct, frozen=True):
    """The provider does not know the target any more: remove the pusher."""

    reason: str


class Retry(msgspec.Struct, frozen=True):
    """Try again later: after `after` seconds if the provider said (Retry-After), else on the caller's backoff."""

    reason: str
    after: float | None = None


class Failed(msgspec.Struct, frozen=True):
    """A permanent failure of this push (a refused payload, refused credentials); retrying will not help."""

    reason: str


PushOutcome = Delivered | Gone | Retry | Failed

T_contra = TypeVar("T_contra", contravariant=True)


class Provider(Protocol[T_contra]):
    async def send(self, target: T_contra, notification: Notification) -> PushOutcome: ...

    async def close(self) -> None: ...
