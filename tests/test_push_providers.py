"""The push providers against local stand-ins of each service (tests/push_standins), on loopback.

Every stand-in checks what its real service checks (the VAPID JWT and the aes128gcm payload
decrypted with the subscription's key; the APNs ES256 provider token and headers over TLS HTTP/2
only; the FCM service-account assertion at a token endpoint and the v1 message schema; the push
gateway's notify schema), so a push counts as delivered only if it would pass the real service.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.push_standins.apns import ApnsStandin
from tests.push_standins.common import BUSY_RETRY_AFTER, DOWN_RETRY_AFTER, unb64url
from tests.push_standins.fcm import FcmStandin
from tests.push_standins.gateway import GatewayStandin
from tests.push_standins.tls import make_certs
from tests.push_standins.webpush import WebPushStandin
from yim.push import vapid
from yim.push._common import MAX_RETRY_AFTER, parse_retry_after
from yim.push.apns import ApnsProvider
from yim.push.fcm import FcmProvider
from yim.push.gateway import GatewayProvider
from yim.push.providers import PushProviders
from yim.push.types import (
    ApnsTarget,
    Delivered,
    Failed,
    FcmTarget,
    GatewayTarget,
    Gone,
    Notification,
    PushConfigError,
    PushOutcome,
    PushSettings,
    Retry,
    WebPushTarget,
)
from yim.push.webpush import WebPushProvider

NOTE = Notification(
    conv_id="c_42",
    msg_id="m_7",
    title="Ada",
    body="lunch at noon? 午饭",
    badge=3,
    collapse_key="c_42",
    data={"kind": "dm"},
)
QUIET = Notification(conv_id="c_42", msg_id="m_8", badge=4)  # previews off
BASE = PushSettings(timeout=5.0, vapid_subject="mailto:ops@example.com", webpush_allow_http=True)
Serve = Callable[[web.Application], Awaitable[str]]
#: a bound on any one send in these tests: far above every timeout set here, so only a hang trips it
HANG = 20.0


async def send(provider: Any, target: object, n: Notification = NOTE) -> PushOutcome:
    outcome: PushOutcome = await asyncio.wait_for(provider.send(target, n), HANG)
    return outcome


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


# ---------------------------------------------------------------- Retry-After and VAPID keys


def test_retry_after_seconds_and_dates() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("99999999") == MAX_RETRY_AFTER
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_vapid_key_made_once_0600_then_loaded(tmp_path: Path) -> None:
    first = vapid.load_or_create(tmp_path)
    path = tmp_path / vapid.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = first.public_key
    decoded = unb64url(public)
    assert len(decoded) == 65 and decoded[0] == 4  # an uncompressed P-256 point, as applicationServerKey wants
    again = vapid.load_or_create(tmp_path)
    assert again.public_key == public
    assert [p.name for p in tmp_path.iterdir()] == [vapid.KEY_FILE]  # no temporary file left behind


def test_vapid_key_not_ec_is_a_config_error(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    (tmp_path / vapid.KEY_FILE).write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(PushConfigError):
        vapid.load_or_create(tmp_path)


# ---------------------------------------------------------------- Web Push


@pytest_asyncio.fixture
async def webpush(serve: Serve, tmp_path: Path) -> AsyncIterator[tuple[WebPushStandin, WebPushProvider]]:
    key = vapid.load_or_create(tmp_path)
    standin = WebPushStandin(key.public_key)
    standin.origin = await serve(standin.app)
    provider = WebPushProvider(msgspec.structs.replace(BASE, timeout=0.5), key)
    yield standin, provider
    standin.m.release.set()
    await provider.close()


def webpush_target(standin: WebPushStandin, name: str) -> WebPushTarget:
    sub = standin.subscribe(name)
    return WebPushTarget(endpoint=sub.endpoint, p256dh=sub.p256dh, auth=sub.auth_b64)


async def test_webpush_delivered_and_decrypted(webpush: tuple[WebPushStandin, WebPushProvider]) -> None:
    standin, provider = webpush
    assert await send(provider, webpush_target(standin, "a")) == Delivered()
    assert await send(provider, webpush_target(standin, "b"), QUIET) == Delivered()
    assert standin.m.refused == []
    loud, quiet = standin.m.accepted
    assert loud["payload"] == {
        "conv_id": "c_42",
        "msg_id": "m_7",
        "badge": 3,
        "title": "Ada",
        "body": "lunch at noon? 午饭",
        "data": {"kind": "dm"},
    }
    assert loud["topic"] == "c_42" and loud["urgency"] == "high" and loud["ttl"] == BASE.ttl
    assert quiet["payload"] == {"conv_id": "c_42", "msg_id": "m_8", "badge": 4}
    assert (
        quiet["authorization"] == loud["authorization"]
    )  # one signed JWT per push service origin, reused  # no preview text leaves the server


async def test_webpush_signed_with_another_key_is_refused(
    webpush: tuple[WebPushStandin, WebPushProvider], tmp_path: Path
) -> None:
    standin, _ = webpush
    (tmp_path / "other").mkdir()
    other = WebPushProvider(BASE, vapid.load_or_create(tmp_path / "other"))
    try:
        outcome = await send(other, webpush_target(standin, "a"))
    finally:
        await other.close()
    assert isinstance(outcome, Failed) and "403" in outcome.reason
    assert standin.m.refused == ["VAPID key is not the one the subscription was made with"]
    assert standin.m.accepted == []


async def test_webpush_wrong_subscription_keys_do_not_decrypt(webpush: tuple[WebPushStandin, WebPushProvider]) -> None:
    standin, provider = webpush
    a, b = webpush_target(standin, "a"), webpush_target(standin, "b")
    crossed = WebPushTarget(endpoint=a.endpoint, p256dh=b.p256dh, auth=b.auth)  # encrypted for b, sent to a
    outcome = await send(provider, crossed)
    assert isinstance(outcome, Failed) and "400" in outcome.reason
    assert standin.m.refused[0].startswith("payload does not decrypt")


async def test_webpush_gone_busy_down_error(webpush: tuple[WebPushStandin, WebPushProvider]) -> None:
    standin, provider = webpush
    targets = {mode: webpush_target(standin, mode) for mode in ("gone", "busy", "down", "error")}
    standin.m.modes.update({k: k for k in targets})
    assert isinstance(await send(provider, targets["gone"]), Gone)
    assert await send(provider, targets["busy"]) == Retry("web push service answered 429", float(BUSY_RETRY_AFTER))
    assert await send(provider, targets["down"]) == Retry("web push service answered 503", float(DOWN_RETRY_AFTER))
    assert await send(provider, targets["error"]) == Retry("web push service answered 500", None)
    unknown = WebPushTarget(
        endpoint=f"{standin.origin}/push/nobody", p256dh=targets["gone"].p256dh, auth=targets["gone"].auth
    )
    assert isinstance(await send(provider, unknown), Gone)


async def test_webpush_slow_service_times_out_into_retry(webpush: tuple[WebPushStandin, WebPushProvider]) -> None:
    standin, provider = webpush
    target = webpush_target(standin, "slow")
    standin.m.modes["slow"] = "slow"
    outcome = await send(provider, target)
    assert isinstance(outcome, Retry) and "no answer within" in outcome.reason
    assert standin.m.accepted == []


async def test_webpush_endpoint_checked(tmp_path: Path) -> None:
    provider = WebPushProvider(msgspec.structs.replace(BASE, webpush_allow_http=False), vapid.load_or_create(tmp_path))
    sub = WebPushStandin("").subscribe("x")
    try:
        outcomes = [
            await send(provider, WebPushTarget(endpoint=endpoint, p256dh=sub.p256dh, auth=sub.auth_b64))
            for endpoint in ("http://127.0.0.1:9/push/x", "https://u:p@push.example/x", "https://[::1]:9/push/x")
        ]
        bad_keys = await send(provider, WebPushTarget(endpoint="https://push.example/x", p256dh="AAAA", auth="AAAA"))
    finally:
        await provider.close()
    assert outcomes[:2] == [Failed("web push endpoint must be an https URL without credentials")] * 2
    assert isinstance(outcomes[2], Failed) and outcomes[2].reason.startswith(
        "web push endpoint origin cannot be signed"
    )
    assert bad_keys == Failed("web push subscription keys are not a P-256 point and a 16-byte secret")


def test_webpush_bad_subject_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PushConfigError):
        WebPushProvider(msgspec.structs.replace(BASE, vapid_subject="ops"), vapid.load_or_create(tmp_path))


# ---------------------------------------------------------------- APNs

TEAM, KID, TOPIC = "TEAM123456", "KEY7654321", "org.yim.app"


def write_p8(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


@pytest_asyncio.fixture
async def apns(tmp_path: Path) -> AsyncIterator[tuple[ApnsStandin, ApnsStandin, PushSettings]]:
    ca, cert, key = make_certs(tmp_path)
    team_key = ec.generate_private_key(ec.SECP256R1())
    prod, sandbox = (
        ApnsStandin(team_id=TEAM, key_id=KID, public_key=team_key.public_key(), topic=TOPIC, cert=cert, key=key)
        for _ in range(2)
    )
    await prod.start()
    await sandbox.start()
    settings = msgspec.structs.replace(
        BASE,
        timeout=0.5,
        ca_file=str(ca),
        apns_base_url=prod.base_url,
        apns_sandbox_base_url=sandbox.base_url,
        apns_key_file=write_p8(tmp_path / "AuthKey.p8", team_key),
        apns_key_id=KID,
        apns_team_id=TEAM,
        apns_topic=TOPIC,
    )
    yield prod, sandbox, settings
    await prod.stop()
    await sandbox.stop()


@pytest_asyncio.fixture
async def apns_provider(apns: tuple[ApnsStandin, ApnsStandin, PushSettings]) -> AsyncIterator[ApnsProvider]:
    provider = ApnsProvider(apns[2])
    yield provider
    await provider.close()


async def test_apns_delivered_over_h2_with_verified_token(
    apns: tuple[ApnsStandin, ApnsStandin, PushSettings], apns_provider: ApnsProvider
) -> None:
    prod, sandbox, _ = apns
    token = prod.register("ab" * 32)
    assert await send(apns_provider, ApnsTarget(device_token=token)) == Delivered()
    assert await send(apns_provider, ApnsTarget(device_token=token), QUIET) == Delivered()
    long_key = msgspec.structs.replace(NOTE, collapse_key="群聊" * 40)
    assert await send(apns_provider, ApnsTarget(device_token=token), long_key) == Delivered()
    assert prod.m.refused == [] and sandbox.m.accepted == []
    loud, quiet, long = prod.m.accepted
    assert len(long["headers"]["apns-collapse-id"]) == 64
    headers = loud["headers"]
    assert isinstance(headers, dict)
    assert headers[":scheme"] == "https" and headers["apns-topic"] == TOPIC and headers["apns-push-type"] == "alert"
    assert headers["apns-collapse-id"] == "c_42" and headers["apns-priority"] == "10"
    assert loud["payload"] == {
        "aps": {
            "alert": {"title": "Ada", "body": "lunch at noon? 午饭"},
            "badge": 3,
            "sound": "default",
            "mutable-content": 1,
        },
        "conv_id": "c_42",
        "msg_id": "m_7",
        "kind": "dm",
    }
    assert quiet["payload"]["aps"]["alert"] == {"loc-key": "NEW_MESSAGE"}


async def test_apns_sandbox_tokens_go_to_the_sandbox_host(
    apns: tuple[ApnsStandin, ApnsStandin, PushSettings], apns_provider: ApnsProvider
) -> None:
    prod, sandbox, _ = apns
    token = sandbox.register("cd" * 32)
    assert await send(apns_provider, ApnsTarget(device_token=token, sandbox=True)) == Delivered()
    outcome = await send(apns_provider, ApnsTarget(device_token=token))  # production does not know it
    assert outcome == Gone("APNs answered 400 BadDeviceToken")
    assert len(sandbox.m.accepted) == 1 and prod.m.accepted == []


async def test_apns_token_signed_with_another_key_is_refused(
    apns: tuple[ApnsStandin, ApnsStandin, PushSettings], tmp_path: Path
) -> None:
    prod, _, settings = apns
    token = prod.register("ef" * 32)
    wrong = write_p8(tmp_path / "Other.p8", ec.generate_private_key(ec.SECP256R1()))
    provider = ApnsProvider(msgspec.structs.replace(settings, apns_key_file=wrong))
    try:
        outcome = await send(provider, ApnsTarget(device_token=token))
    finally:
        await provider.close()
    assert outcome == Failed("APNs answered 403 InvalidProviderToken")
    assert prod.m.refused == ["InvalidProviderToken"] and prod.m.accepted == []


async def test_apns_wrong_topic_refused(apns: tuple[ApnsStandin, ApnsStandin, PushSettings]) -> None:
    prod, _, settings = apns
    token = prod.register("12" * 32)
    provider = ApnsProvider(msgspec.structs.replace(settings, apns_topic="org.other.app"))
    try:
        outcome = await send(provider, ApnsTarget(device_token=token))
    finally:
        await provider.close()
    assert outcome == Failed("APNs answered 400 TopicDisallowed")


async def test_apns_gone_busy_down_error_slow(
    apns: tuple[ApnsStandin, ApnsStandin, PushSettings], apns_provider: ApnsProvider
) -> None:
    prod, _, _ = apns
    tokens = {mode: prod.register(f"{i:02x}" * 32) for i, mode in enumerate(("gone", "busy", "down", "error", "slow"))}
    prod.m.modes.update({t: m for m, t in tokens.items()})
    assert await send(apns_provider, ApnsTarget(device_token=tokens["gone"])) == Gone("APNs answered 410 Unregistered")
    assert await send(apns_provider, ApnsTarget(device_token=tokens["busy"])) == Retry(
        "APNs answered 429 TooManyRequests", float(BUSY_RETRY_AFTER)
    )
    assert await send(apns_provider, ApnsTarget(device_token=tokens["down"])) == Retry(
        "APNs answered 503 ServiceUnavailable", float(DOWN_RETRY_AFTER)
    )
    assert await send(apns_provider, ApnsTarget(device_token=tokens["error"])) == Retry(
        "APNs answered 500 InternalServerError", None
    )
    outcome = await send(apns_provider, ApnsTarget(device_token=tokens["slow"]))
    assert isinstance(outcome, Retry) and "no answer within" in outcome.reason
    # the timed-out stream was reset, not the connection: the next push on it still goes through
    ok = prod.register("99" * 32)
    assert await send(apns_provider, ApnsTarget(device_token=ok)) == Delivered()


async def test_apns_answer_dripping_past_the_deadline_is_cut(
    apns: tuple[ApnsStandin, ApnsStandin, PushSettings], apns_provider: ApnsProvider
) -> None:
    """Each byte comes within httpx's per-read timeout; only the whole call's deadline ends it."""
    prod, _, _ = apns
    token = prod.register("dd" * 32)
    prod.m.modes[token] = "drip"
    outcome = await send(apns_provider, ApnsTarget(device_token=token))
    assert outcome == Retry("APNs: no answer within 0.5 s")
    ok = prod.register("98" * 32)
    assert await send(apns_provider, ApnsTarget(device_token=ok)) == Delivered()


async def test_apns_refuses_http1(apns: tuple[ApnsStandin, ApnsStandin, PushSettings]) -> None:
    """The stand-in is HTTP/2 only, like APNs: an HTTP/1.1 client does not get through."""
    import ssl

    import aiohttp

    prod, _, settings = apns
    ctx = ssl.create_default_context(cafile=settings.ca_file)
    async with ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.post(f"{prod.base_url}/3/device/{'ab' * 32}", ssl=ctx, data=b"{}") as r:
                await r.read()
    assert "client did not negotiate h2" in prod.m.refused


# ---------------------------------------------------------------- FCM HTTP v1

PROJECT, EMAIL, SA_KID = "yim-test", "push@yim-test.iam.gserviceaccount.com", "0f1e2d3c4b5a"


def write_service_account(path: Path, key: rsa.RSAPrivateKey) -> str:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": SA_KID,
                "private_key": pem.decode(),
                "client_email": EMAIL,
                "client_id": "1234567890",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def sa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest_asyncio.fixture
async def fcm(
    serve: Serve, tmp_path: Path, sa_key: rsa.RSAPrivateKey
) -> AsyncIterator[tuple[FcmStandin, PushSettings]]:
    standin = FcmStandin(project_id=PROJECT, client_email=EMAIL, key_id=SA_KID, public_key=sa_key.public_key())
    standin.origin = await serve(standin.app)
    settings = msgspec.structs.replace(
        BASE,
        timeout=0.5,
        fcm_base_url=standin.origin,
        fcm_token_url=standin.token_url,
        fcm_credentials_file=write_service_account(tmp_path / "sa.json", sa_key),
    )
    yield standin, settings
    standin.m.release.set()


@pytest_asyncio.fixture
async def fcm_provider(fcm: tuple[FcmStandin, PushSettings]) -> AsyncIterator[FcmProvider]:
    provider = FcmProvider(fcm[1])
    yield provider
    await provider.close()


async def test_fcm_delivered_with_exchanged_token(
    fcm: tuple[FcmStandin, PushSettings], fcm_provider: FcmProvider
) -> None:
    standin, _ = fcm
    assert await send(fcm_provider, FcmTarget(token="tok-a")) == Delivered()
    assert await send(fcm_provider, FcmTarget(token="tok-b"), QUIET) == Delivered()
    assert standin.m.refused == []
    assert standin.exchanges == 1  # the access token is reused until near its expiry
    loud, quiet = (a["message"] for a in standin.m.accepted)
    assert loud == {
        "token": "tok-a",
        "data": {"kind": "dm", "conv_id": "c_42", "msg_id": "m_7", "badge": "3"},
        "notification": {"title": "Ada", "body": "lunch at noon? 午饭"},
        "android": {
            "collapse_key": "c_42",
            "priority": "HIGH",
            "ttl": f"{BASE.ttl}s",
            "notification": {"notification_count": 3},
        },
        "apns": {"payload": {"aps": {"badge": 3}}},
    }
    assert "notification" not in quiet


async def test_fcm_assertion_signed_with_another_key_is_refused(
    fcm: tuple[FcmStandin, PushSettings], tmp_path: Path
) -> None:
    standin, settings = fcm
    wrong = write_service_account(tmp_path / "other.json", rsa.generate_private_key(65537, 2048))
    provider = FcmProvider(msgspec.structs.replace(settings, fcm_credentials_file=wrong))
    try:
        outcome = await send(provider, FcmTarget(token="tok-a"))
    finally:
        await provider.close()
    assert outcome == Failed("FCM token endpoint answered 400")
    assert standin.exchanges == 0 and standin.m.accepted == []
    assert standin.m.refused[0].startswith("invalid_grant: Signature verification failed")


async def test_fcm_expired_access_token_is_exchanged_again(
    fcm: tuple[FcmStandin, PushSettings], fcm_provider: FcmProvider
) -> None:
    standin, _ = fcm
    assert await send(fcm_provider, FcmTarget(token="tok-a")) == Delivered()
    standin.issued.clear()  # the service forgets the token before its announced expiry
    outcome = await send(fcm_provider, FcmTarget(token="tok-a"))
    assert outcome == Retry("FCM answered 401 UNAUTHENTICATED THIRD_PARTY_AUTH_ERROR")
    assert await send(fcm_provider, FcmTarget(token="tok-a")) == Delivered()
    assert standin.exchanges == 2


async def test_fcm_gone_busy_down_error_slow(fcm: tuple[FcmStandin, PushSettings], fcm_provider: FcmProvider) -> None:
    standin, _ = fcm
    standin.m.modes.update({m: m for m in ("gone", "busy", "down", "error", "slow")})
    assert await send(fcm_provider, FcmTarget(token="gone")) == Gone("FCM answered 404 NOT_FOUND UNREGISTERED")
    assert await send(fcm_provider, FcmTarget(token="busy")) == Retry(
        "FCM answered 429 RESOURCE_EXHAUSTED QUOTA_EXCEEDED", float(BUSY_RETRY_AFTER)
    )
    assert await send(fcm_provider, FcmTarget(token="down")) == Retry(
        "FCM answered 503 UNAVAILABLE UNAVAILABLE", float(DOWN_RETRY_AFTER)
    )
    assert await send(fcm_provider, FcmTarget(token="error")) == Retry("FCM answered 500 INTERNAL INTERNAL", None)
    outcome = await send(fcm_provider, FcmTarget(token="slow"))
    assert isinstance(outcome, Retry) and "no answer within" in outcome.reason


def test_fcm_credentials_checked_at_start(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text('{"project_id": "p"}')
    with pytest.raises(PushConfigError):
        FcmProvider(msgspec.structs.replace(BASE, fcm_credentials_file=str(tmp_path / "sa.json")))


# ---------------------------------------------------------------- Matrix push gateway


@pytest_asyncio.fixture
async def gateway(serve: Serve) -> AsyncIterator[tuple[GatewayStandin, GatewayProvider]]:
    standin = GatewayStandin()
    url = await serve(standin.app)
    provider = GatewayProvider(msgspec.structs.replace(BASE, timeout=0.5, gateway_url=url, max_in_flight=2))
    yield standin, provider
    standin.m.release.set()
    await provider.close()


def pusher(pushkey: str) -> GatewayTarget:
    return GatewayTarget(app_id="org.yim.app.ios", pushkey=pushkey, pushkey_ts=1700000000, data={"format": "full"})


async def test_gateway_delivered_in_spec_schema(gateway: tuple[GatewayStandin, GatewayProvider]) -> None:
    standin, provider = gateway
    assert await send(provider, pusher("pk-a")) == Delivered()
    assert await send(provider, pusher("pk-a"), QUIET) == Delivered()
    assert standin.m.refused == []
    loud, quiet = (a["notification"] for a in standin.m.accepted)
    assert loud == {
        "devices": [
            {
                "app_id": "org.yim.app.ios",
                "pushkey": "pk-a",
                "pushkey_ts": 1700000000,
                "data": {"format": "full"},
                "tweaks": {},
            }
        ],
        "event_id": "m_7",
        "room_id": "c_42",
        "type": "m.room.message",
        "room_name": "Ada",
        "prio": "high",
        "content": {"msgtype": "m.text", "body": "lunch at noon? 午饭"},
        "counts": {"unread": 3},
    }
    assert "content" not in quiet and "room_name" not in quiet


async def test_gateway_standin_checks_the_schema(gateway: tuple[GatewayStandin, GatewayProvider]) -> None:
    """A body off the spec is refused, so the schema check in the delivered test is real."""
    standin, provider = gateway
    async with ClientSession() as s:
        bad = {"notification": {"devices": [{"app_id": "a", "pushkey": 5}], "prio": "high"}}
        async with s.post(provider.url, json=bad) as r:
            assert r.status == 400
        misspelt = {"notification": {"devices": [{"app_id": "a", "pushkey": "k"}], "count": {"unread": 1}}}
        async with s.post(provider.url, json=misspelt) as r:
            assert r.status == 400
    assert len(standin.m.refused) == 2 and standin.m.accepted == []


async def test_gateway_rejected_busy_down_error_slow(gateway: tuple[GatewayStandin, GatewayProvider]) -> None:
    standin, provider = gateway
    standin.m.modes.update({m: m for m in ("gone", "busy", "down", "error", "slow")})
    assert await send(provider, pusher("gone")) == Gone("push gateway rejected the pushkey")
    assert await send(provider, pusher("busy")) == Retry("push gateway answered 429", float(BUSY_RETRY_AFTER))
    assert await send(provider, pusher("down")) == Retry("push gateway answered 503", float(DOWN_RETRY_AFTER))
    assert await send(provider, pusher("error")) == Retry("push gateway answered 500", None)
    outcome = await send(provider, pusher("slow"))
    assert isinstance(outcome, Retry) and "no answer within" in outcome.reason


async def test_in_flight_bound_answers_retry_instead_of_queueing(
    gateway: tuple[GatewayStandin, GatewayProvider],
) -> None:
    standin, provider = gateway  # max_in_flight=2
    standin.m.modes["slow"] = "slow"
    stuck = [asyncio.create_task(send(provider, pusher("slow"))) for _ in range(2)]
    deadline = time.monotonic() + HANG
    while standin.m.waiting < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert provider.gate.in_flight == 2
    assert await send(provider, pusher("pk-a")) == Retry("push gateway: 2 pushes already in flight")
    for outcome in await asyncio.gather(*stuck):
        assert isinstance(outcome, Retry) and "no answer within" in outcome.reason
    assert provider.gate.in_flight == 0
    assert await send(provider, pusher("pk-a")) == Delivered()


async def test_gateway_answer_too_long_is_not_held(serve: Serve) -> None:
    app = web.Application()

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 65536)
        return resp

    app.router.add_post("/_matrix/push/v1/notify", flood)
    url = await serve(app)
    provider = GatewayProvider(msgspec.structs.replace(BASE, gateway_url=url, max_response_bytes=4096))
    try:
        outcome = await send(provider, pusher("pk-a"))
    finally:
        await provider.close()
    assert outcome == Failed("push gateway: answer longer than 4096 bytes")


# ---------------------------------------------------------------- the dispatcher


async def test_providers_route_by_target_and_make_the_vapid_key(
    tmp_path: Path, gateway: tuple[GatewayStandin, GatewayProvider]
) -> None:
    standin, provider = gateway
    providers = PushProviders(
        msgspec.structs.replace(BASE, vapid_dir=str(tmp_path), gateway_url=provider.settings.gateway_url)
    )
    try:
        assert providers.vapid is not None and (tmp_path / vapid.KEY_FILE).exists()
        assert await send(providers, pusher("pk-a")) == Delivered()
        assert await send(providers, FcmTarget(token="t")) == Failed("no Fcm provider is configured")
    finally:
        await providers.close()
    assert len(standin.m.accepted) == 1
