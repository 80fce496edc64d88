"""The push decisions (yim/push/rules.py), table by table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from yim.protocol import frames as f
from yim.protocol.errors import YimError
from yim.push.rules import (
    DEFAULT_MUTE,
    PREVIEW_CHARS,
    READ_FANOUT_MUTE,
    Burst,
    Entry,
    collapse,
    describe,
    format_dnd,
    notification,
    notifies,
    parse_dnd,
    passes_mute,
    pusher_target,
    quiet_until,
    retry_delay,
    target_from_json,
    target_json,
    zone,
)
from yim.push.types import ApnsTarget, FcmTarget, GatewayTarget, WebPushTarget

ME, OTHER = 1, 2


def msg(seq: int, conv: int = 10, sender: int = OTHER, kind: str = "text", text: str = "hi", **kw: Any) -> Entry:
    return Entry(seq=seq, type="message", conv_id=conv, msg_id=100 + seq, sender_id=sender, kind=kind, text=text, **kw)


@pytest.mark.parametrize(
    ("entry", "wakes"),
    [
        (msg(1), True),  # someone else's message
        (msg(1, kind="image", text=None), True),
        (msg(1, mentioned=True), True),
        (msg(1, sender=ME), False),  # my own, sent from another of my devices
        (msg(1, kind="system"), False),  # a group change
        (msg(1, kind="recall"), False),
        (msg(1, recalled=True), False),  # recalled before it was pushed
        (Entry(seq=1, type="read", conv_id=10), False),
        (Entry(seq=1, type="receipt", conv_id=10), False),
        (Entry(seq=1, type="relation", conv_id=0), False),
        (Entry(seq=1, type="service", conv_id=0), True),  # a customer-service event
    ],
)
def test_notifies(entry: Entry, wakes: bool) -> None:
    assert notifies(entry, ME) is wakes


@pytest.mark.parametrize(
    ("entries", "want"),
    [
        ([], []),
        ([msg(1)], [(10, 1, 1, False)]),
        ([msg(1), msg(2), msg(3)], [(10, 3, 3, False)]),  # a burst: the latest, and how many
        ([msg(1, conv=10), msg(2, conv=20), msg(3, conv=10)], [(20, 2, 1, False), (10, 3, 2, False)]),
        ([msg(1, mentioned=True), msg(2)], [(10, 2, 2, True)]),  # a mention anywhere in the burst counts
    ],
)
def test_collapse(entries: list[Entry], want: list[tuple[int, int, int, bool]]) -> None:
    got = [(b.latest.conv_id, b.latest.seq, b.count, b.mentioned) for b in collapse(entries)]
    assert got == want


@pytest.mark.parametrize(
    ("kind", "text", "line"),
    [
        ("text", "hello", "hello"),
        ("emoji", "👍", "👍"),
        ("image", None, "Photo"),
        ("video", None, "Video"),
        ("file", "report.pdf", "File: report.pdf"),
        ("file", None, "File"),
        ("text", "x" * (PREVIEW_CHARS + 50), "x" * (PREVIEW_CHARS - 1) + "…"),
    ],
)
def test_describe(kind: str, text: str | None, line: str) -> None:
    assert describe(kind, text) == line


@pytest.mark.parametrize(
    ("burst", "preview", "title", "body"),
    [
        (Burst(latest=msg(1), count=1, mentioned=False), True, "Ada", "hi"),
        (Burst(latest=msg(3), count=3, mentioned=False), True, "Ada", "hi (3 new messages)"),
        (Burst(latest=msg(1), count=1, mentioned=False), False, None, "New message from Ada"),
        (Burst(latest=msg(3), count=3, mentioned=False), False, None, "3 new messages from Ada"),
        (
            Burst(latest=Entry(seq=1, type="service", conv_id=0), count=1, mentioned=False),
            True,
            "Customer service",
            "New customer-service activity",
        ),
    ],
)
def test_notification_words(burst: Burst, preview: bool, title: str | None, body: str) -> None:
    n = notification(burst, "Ada", 7, preview=preview)
    assert (n.title, n.body, n.badge) == (title, body, 7)
    assert n.collapse_key == f"c{burst.latest.conv_id}"  # a later burst replaces it on the device
    assert n.data["count"] == str(burst.count)


def pusher(kind: str, **fields: Any) -> f.PusherSet:
    return f.PusherSet(rid=1, kind=kind, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("req", "allow_http", "target"),
    [
        (
            pusher("webpush", endpoint="https://push.example/a", p256dh="BPk-_x", auth="q1w2"),
            False,
            WebPushTarget(endpoint="https://push.example/a", p256dh="BPk-_x", auth="q1w2"),
        ),
        (
            pusher("webpush", endpoint="http://127.0.0.1:9/a", p256dh="AA", auth="BB"),
            True,
            WebPushTarget(endpoint="http://127.0.0.1:9/a", p256dh="AA", auth="BB"),
        ),
        (pusher("apns", token="AB" * 32), False, ApnsTarget(device_token="ab" * 32)),
        (pusher("apns", token="ab" * 32, sandbox=True), False, ApnsTarget(device_token="ab" * 32, sandbox=True)),
        (pusher("fcm", token="fcm:tok-1"), False, FcmTarget(token="fcm:tok-1")),
        (
            pusher("gateway", app_id="org.yim.ios", pushkey="pk"),
            False,
            GatewayTarget(app_id="org.yim.ios", pushkey="pk"),
        ),
    ],
)
def test_pusher_target(req: f.PusherSet, allow_http: bool, target: object) -> None:
    got = pusher_target(req, allow_http=allow_http)
    assert got == target
    assert target_from_json(req.kind, target_json(got)) == got


@pytest.mark.parametrize(
    ("req", "says"),
    [
        (pusher("webpush", endpoint="https://p.example/a"), "needs auth, p256dh"),
        (pusher("webpush", endpoint="http://p.example/a", p256dh="AA", auth="BB"), "https:"),
        (pusher("webpush", endpoint="https://p.example/a", p256dh="A+/A", auth="BB"), "base64url"),
        (pusher("webpush", endpoint="https://p.example/a", p256dh="AA", auth="BB", token="t"), "takes no token"),
        (pusher("apns"), "needs token"),
        (pusher("apns", token="not-hex"), "hex"),
        (pusher("fcm", token="t", sandbox=True), "takes no sandbox"),
        (pusher("gateway", app_id="a"), "needs pushkey"),
        (pusher("gateway", pushkey="k", endpoint="https://x"), "takes no endpoint"),
    ],
)
def test_pusher_target_refused(req: f.PusherSet, says: str) -> None:
    with pytest.raises(YimError) as e:
        pusher_target(req)
    assert e.value.code == "invalid_pusher" and says in e.value.message


@pytest.mark.parametrize(
    ("failures", "after", "delay"),
    [
        (0, None, 5.0),
        (1, None, 10.0),
        (3, None, 40.0),
        (10, None, 600.0),  # capped
        (2, 7.0, 7.0),  # the provider's Retry-After wins
        (0, 99_999.0, 600.0),  # ... within the cap
        (0, -3.0, 0.0),
    ],
)
def test_retry_delay(failures: int, after: float | None, delay: float) -> None:
    assert retry_delay(failures, after, 5.0, 600.0) == delay


@pytest.mark.parametrize(
    ("mute", "mentioned", "passes"),
    [
        ("off", False, True),
        ("off", True, True),
        ("mentions", False, False),  # muted, but mentions still come through
        ("mentions", True, True),
        ("all", False, False),
        ("all", True, False),  # muted entirely: not even mentions
    ],
)
def test_passes_mute(mute: str, mentioned: bool, passes: bool) -> None:
    assert passes_mute(msg(1, mentioned=mentioned), mute) is passes


def test_defaults_wake_for_everything_but_a_big_group_only_when_mentioned() -> None:
    assert passes_mute(msg(1), DEFAULT_MUTE) and passes_mute(msg(1, mentioned=True), DEFAULT_MUTE)
    assert not passes_mute(msg(1), READ_FANOUT_MUTE)
    assert passes_mute(msg(1, mentioned=True), READ_FANOUT_MUTE)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    ("now", "tz", "window", "ends"),
    [
        ("2026-01-15T23:30:00+00:00", "UTC", "22:00-07:00", "2026-01-16T07:00:00+00:00"),  # past midnight
        ("2026-01-16T06:59:30+00:00", "UTC", "22:00-07:00", "2026-01-16T07:00:00+00:00"),
        ("2026-01-16T07:00:00+00:00", "UTC", "22:00-07:00", None),  # the end is not inside
        ("2026-01-15T21:59:59+00:00", "UTC", "22:00-07:00", None),
        ("2026-01-15T22:00:00+00:00", "UTC", "22:00-07:00", "2026-01-16T07:00:00+00:00"),
        ("2026-01-15T23:30:00+00:00", "Asia/Tokyo", "22:00-07:00", None),  # 08:30 there
        ("2026-01-15T23:30:00+00:00", "Asia/Tokyo", "08:00-09:00", "2026-01-16T00:00:00+00:00"),
        ("2026-01-15T23:30:00+00:00", "America/New_York", "18:00-19:00", "2026-01-16T00:00:00+00:00"),  # 18:30
        ("2026-07-15T23:30:00+00:00", "America/New_York", "18:00-19:00", None),  # 19:30 in summer time
        ("2026-01-15T12:00:00+00:00", "UTC", "", None),  # no quiet hours
    ],
)
def test_quiet_until(now: str, tz: str, window: str, ends: str | None) -> None:
    assert quiet_until(ms(now), tz, parse_dnd(window)) == (ms(ends) if ends else None)


@pytest.mark.parametrize(
    ("text", "window"),
    [("22:00-07:00", (1320, 420)), ("00:00-23:59", (0, 1439)), ("09:30-17:05", (570, 1025)), ("", None)],
)
def test_parse_dnd(text: str, window: tuple[int, int] | None) -> None:
    assert parse_dnd(text) == window
    assert format_dnd(window) == text


@pytest.mark.parametrize("text", ["22-07", "24:00-07:00", "22:00-07:60", "7:00-9:00", "22:00-22:00", "22:00 - 07:00"])
def test_parse_dnd_refused(text: str) -> None:
    with pytest.raises(YimError) as e:
        parse_dnd(text)
    assert e.value.code == "bad_request"


@pytest.mark.parametrize(
    ("name", "ok"), [("Europe/Berlin", True), ("UTC", True), ("Mars/Olympus", False), ("../etc", False)]
)
def test_zone(name: str, ok: bool) -> None:
    if ok:
        assert zone(name).key == name
    else:
        with pytest.raises(YimError) as e:
            zone(name)
        assert e.value.code == "bad_request"
