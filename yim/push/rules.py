"""When and what to push: pure decisions, table-tested (tests/test_rules_push.py).

The push worker (yim/services/push.py) reads a device's new inbox entries, keeps those that
should wake it (:func:`notifies`), collapses them into one notification per conversation
(:func:`collapse`), and words each one (:func:`notification`). Nothing here does I/O.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime

import msgspec

from yim.protocol import frames as f
from yim.protocol.errors import YimError
from yim.push.types import ApnsTarget, FcmTarget, GatewayTarget, Notification, PushTarget, WebPushTarget

#: the longest message text a notification carries (providers cap the payload at 4 KiB)
PREVIEW_CHARS = 200
_HEX = re.compile(r"^[0-9A-Fa-f]{16,200}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+=*$")
_FIELDS = {
    "webpush": {"endpoint", "p256dh", "auth"},
    "apns": {"token", "sandbox"},
    "fcm": {"token"},
    "gateway": {"app_id", "pushkey"},
}


def _bad(message: str) -> YimError:
    return YimError("invalid_pusher", message)


def pusher_target(req: f.PusherSet, *, allow_http: bool = False) -> PushTarget:
    """The provider target a ``pusher_set`` describes, or ``invalid_pusher`` saying what is
    wrong: a field of another kind, a missing one, or one a provider cannot take."""
    given = {
        name for name in ("endpoint", "p256dh", "auth", "token", "app_id", "pushkey") if getattr(req, name) is not None
    } | ({"sandbox"} if req.sandbox else set())
    foreign = sorted(given - _FIELDS[req.kind])
    if foreign:
        raise _bad(f"a {req.kind} pusher takes no {', '.join(foreign)}")
    missing = sorted(_FIELDS[req.kind] - {"sandbox"} - given)
    if missing:
        raise _bad(f"a {req.kind} pusher needs {', '.join(missing)}")
    if req.kind == "webpush":
        assert req.endpoint and req.p256dh and req.auth
        schemes = ("https://", "http://") if allow_http else ("https://",)
        if not req.endpoint.startswith(schemes):
            raise _bad("endpoint must be an https: URL (the browser's PushSubscription.endpoint)")
        if not (_B64URL.match(req.p256dh) and _B64URL.match(req.auth)):
            raise _bad("p256dh and auth are the subscription's keys, base64url")
        return WebPushTarget(endpoint=req.endpoint, p256dh=req.p256dh, auth=req.auth)
    if req.kind == "apns":
        assert req.token
        if not _HEX.match(req.token):
            raise _bad("token must be the APNs device token in hex")
        return ApnsTarget(device_token=req.token.lower(), sandbox=req.sandbox)
    if req.kind == "fcm":
        assert req.token
        return FcmTarget(token=req.token)
    assert req.app_id and req.pushkey
    return GatewayTarget(app_id=req.app_id, pushkey=req.pushkey)


def target_json(target: PushTarget) -> str:
    return msgspec.json.encode(target).decode()


def target_from_json(kind: str, raw: str) -> PushTarget:
    types: dict[str, type[PushTarget]] = {
        "webpush": WebPushTarget,
        "apns": ApnsTarget,
        "fcm": FcmTarget,
        "gateway": GatewayTarget,
    }
    return msgspec.json.decode(raw, type=types[kind])


class Entry(msgspec.Struct, frozen=True):
    """One inbox entry of the device's user, as far as pushing cares."""

    seq: int  # inbox seq
    type: str  # the inbox entry type ("message", "read", "service", ...)
    conv_id: int
    msg_id: int = 0
    sender_id: int = 0
    kind: str = ""  # the message kind ("text", "image", "system", "recall", ...)
    text: str | None = None  # what a preview shows: the text, the emoji, the file's name
    mentioned: bool = False  # the recipient is mentioned by name, or everyone is
    recalled: bool = False


#: message kinds a person sends; the server's own entries (system, recall) wake nobody
PERSON_KINDS = frozenset({"text", "emoji", "image", "video", "file"})


def notifies(entry: Entry, user_id: int) -> bool:
    """Should this entry wake a device of ``user_id`` that is not connected? A message of
    someone else's (a mention is one) or a customer-service event; not the user's own
    message (sent from another device), nor a read marker, receipt, recall or group change."""
    if entry.type == "service":
        return True
    return entry.type == "message" and entry.kind in PERSON_KINDS and entry.sender_id != user_id and not entry.recalled


class Burst(msgspec.Struct, frozen=True):
    """What one notification says for one conversation: its latest entry and how many came."""

    latest: Entry
    count: int
    mentioned: bool  # any entry of the burst mentions the user


def collapse(entries: list[Entry]) -> list[Burst]:
    """One burst per conversation, in the order of each conversation's latest entry."""
    by_conv: dict[int, Burst] = {}
    for e in entries:
        prev = by_conv.pop(e.conv_id, None)  # popped: re-inserted last, so the order follows the latest
        by_conv[e.conv_id] = Burst(
            latest=e,
            count=(prev.count if prev else 0) + 1,
            mentioned=(prev.mentioned if prev else False) or e.mentioned,
        )
    return list(by_conv.values())


def describe(kind: str, text: str | None) -> str:
    """The one line a preview shows for a message."""
    if kind in ("text", "emoji") and text:
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    label = {"image": "Photo", "video": "Video", "file": "File"}.get(kind, "Message")
    return f"{label}: {text}" if kind == "file" and text else label


def notification(burst: Burst, sender_name: str, badge: int, *, preview: bool) -> Notification:
    """The notification of one burst. With previews on: the sender as title and the latest
    message as body (and the count when there are several); off: only who wrote."""
    e = burst.latest
    conv = str(e.conv_id)
    data = {"conv_id": conv, "msg_id": str(e.msg_id), "count": str(burst.count)}
    if e.type == "service":
        title, body = "Customer service", "New customer-service activity"
    elif preview:
        title = sender_name
        line = describe(e.kind, e.text)
        body = line if burst.count == 1 else f"{line} ({burst.count} new messages)"
    else:
        title = None
        body = (
            f"New message from {sender_name}" if burst.count == 1 else f"{burst.count} new messages from {sender_name}"
        )
    return Notification(
        conv_id=conv,
        msg_id=str(e.msg_id),
        title=title,
        body=body,
        badge=badge,
        collapse_key=f"c{conv}",  # a later burst of the conversation replaces this one on the device
        data=data,
    )


#: a conversation's mute: "off" pushes everything, "mentions" only mentions of the user, "all" nothing
MUTES = ("off", "mentions", "all")
#: The mute of a conversation the user set none for, by its fan-out. A read-fan-out group is
#: one above ``group_write_fanout_max`` members: a member is woken only when mentioned
#: unless they turn its messages on (``push_mute`` "off"), since a big busy group would
#: otherwise wake every member's phone every few seconds (WeChat's 消息免打扰 default).
DEFAULT_MUTE = "off"
READ_FANOUT_MUTE = "mentions"
_DND = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")


def passes_mute(entry: Entry, mute: str) -> bool:
    """Does a conversation's mute let this entry wake a device?"""
    if mute == "all":
        return False
    if mute == "mentions":
        return entry.mentioned
    return True


def parse_dnd(text: str) -> tuple[int, int] | None:
    """``"22:00-07:00"`` -> (start, end) in minutes after midnight; ``""`` -> None (no quiet
    hours); anything else is ``bad_request``. A window may run past midnight; equal ends are
    refused (all day or never is what ``mute`` is for)."""
    if text == "":
        return None
    m = _DND.match(text)
    if m is None:
        raise YimError("bad_request", f"dnd {text!r} is not HH:MM-HH:MM (24-hour, e.g. 22:00-07:00)")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if start == end:
        raise YimError("bad_request", "dnd starts and ends at the same minute")
    return start, end


def format_dnd(window: tuple[int, int] | None) -> str:
    if window is None:
        return ""
    (a, b) = window
    return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"


def zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone, or ``bad_request``."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise YimError(
            "bad_request", f"time_zone {name!r} is not an IANA time zone name (e.g. Europe/Berlin)"
        ) from None


def quiet_until(now_ms: int, time_zone: str, window: tuple[int, int] | None) -> int | None:
    """If ``now_ms`` lies in the user's quiet hours (their wall clock in ``time_zone``), the
    moment they end (ms since the epoch); else None. Wall-clock minutes are used, so the
    window keeps its local hours across daylight-saving changes."""
    if window is None:
        return None
    start, end = window
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone(time_zone))
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else minute >= start or minute < end
    if not inside:
        return None
    # minutes left until `end` on the local clock, then the seconds of the current minute
    left = (end - minute) % (24 * 60)
    ends = local.replace(second=0, microsecond=0).timestamp() + left * 60
    return int(ends * 1000)


def retry_delay(failures: int, after: float | None, first: float, most: float) -> float:
    """Seconds until the next try: what the provider asked for, else doubling from
    ``first`` with each failure in a row, never more than ``most``."""
    if after is not None:
        return min(max(after, 0.0), most)
    return min(first * 2.0 ** min(failures, 30), most)
