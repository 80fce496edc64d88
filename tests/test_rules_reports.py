"""The report rules both stores apply (yim.storage.rules.reports), table by table, without a node."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from yim.protocol.errors import YimError
from yim.storage.rules import reports as rules
from yim.storage.rules import timeline as timeline_rules
from yim.storage.rules.reports import ReportedMessage

HOUR = rules.REPORT_WINDOW_MS


def code_of(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except YimError as exc:
        return exc.code
    return None


def msg(sender_id: int = 2, kind: str = "text", recalled: bool = False) -> ReportedMessage:
    return ReportedMessage(sender_id, kind, recalled)


@pytest.mark.parametrize(
    ("seq", "window", "target", "want"),
    [
        (5, (0, 10), msg(), None),  # a member sees it
        (5, (0, 5), msg(), None),  # the last entry a past member saw
        (5, None, msg(), "not_member"),  # never a member
        (5, (5, 10), msg(), "not_found"),  # sent before the reporter joined
        (6, (0, 5), msg(), "not_found"),  # sent after the reporter left
        (5, (0, 10), None, "not_found"),  # no such entry
        (5, (0, 10), msg(kind="system"), "bad_request"),
        (5, (0, 10), msg(kind="recall"), "bad_request"),
        (5, (0, 10), msg(kind="edit"), "bad_request"),
        (5, (0, 10), msg(recalled=True), "already_recalled"),  # nothing left to see
        (5, (0, 10), msg(sender_id=1), "bad_request"),  # one's own message
    ],
)
def test_check_message(
    seq: int, window: tuple[int, int] | None, target: ReportedMessage | None, want: str | None
) -> None:
    assert code_of(lambda: rules.check_message(7, seq, 1, window, target)) == want


@pytest.mark.parametrize(
    ("user_id", "exists", "want"),
    [(2, True, None), (2, False, "not_found"), (1, True, "bad_request")],
)
def test_check_user(user_id: int, exists: bool, want: str | None) -> None:
    assert code_of(lambda: rules.check_user(user_id, 1, exists)) == want


NOW = 10 * HOUR


@pytest.mark.parametrize(
    ("recent", "limit", "want", "retry_s"),
    [
        ([], 3, None, None),
        ([NOW - 10, NOW - 5], 3, None, None),
        ([NOW - HOUR + 1000, NOW - 10, NOW - 5], 3, "rate_limited", 1.0),  # the oldest leaves the window in 1 s
        ([NOW - HOUR + 500, NOW - HOUR + 1000, NOW - 10, NOW - 5], 3, "rate_limited", 1.0),  # when the 3rd newest goes
        ([NOW - 5] * 50, 0, None, None),  # 0: no limit
    ],
)
def test_check_limit(recent: list[int], limit: int, want: str | None, retry_s: float | None) -> None:
    try:
        rules.check_limit(recent, NOW, limit)
    except YimError as exc:
        assert (exc.code, exc.retry_after) == (want, retry_s)
    else:
        assert want is None


@pytest.mark.parametrize(
    ("status", "action", "is_message", "want"),
    [
        ("open", "dismiss", True, None),
        ("open", "recall", True, None),
        ("open", "disable", False, None),
        ("open", "recall", False, "bad_request"),  # a user report has no message to recall
        ("resolved", "dismiss", True, "already_resolved"),
        (None, "dismiss", True, "not_found"),
    ],
)
def test_check_resolve(status: str | None, action: str, is_message: bool, want: str | None) -> None:
    assert code_of(lambda: rules.check_resolve(9, status, action, is_message)) == want


@pytest.mark.parametrize(
    ("actor", "conv_type", "server_admin", "want"),
    [
        (None, "direct", True, None),  # a server admin resolving a report: member or not
        (None, "group", True, None),
        (None, "group", False, "not_member"),
        (("member", 0), "group", False, "forbidden"),
        (("admin", 0), "group", False, None),
        (("member", 0), "direct", True, None),  # any time, any sender
    ],
)
def test_recall_by_a_server_admin(
    actor: tuple[str, int] | None, conv_type: str, server_admin: bool, want: str | None
) -> None:
    target = timeline_rules.RecallTarget(sender_id=2, created_at=0, recalled=False, kind="text", msg_id=1)
    check = timeline_rules.check_recall
    assert code_of(lambda: check(7, 5, 1, actor, target, conv_type, 10**9, 1000, server_admin)) == want


@pytest.mark.parametrize(
    ("snap_kind", "carried", "want"),
    [
        ("image", 5, None),  # the reported image itself
        ("file", 5, None),
        ("video", 5, None),
        ("image", 6, "media_not_found"),  # another file than the reported one
        ("text", None, "media_not_found"),  # a text carries no file
        ("custom", 5, "media_not_found"),  # a custom body naming an id is no media message
        (None, None, "media_not_found"),  # a report of a user
    ],
)
def test_reported_media(snap_kind: str | None, carried: int | None, want: str | None) -> None:
    assert code_of(lambda: rules.require_reported_media(snap_kind, carried, 5)) == want


@pytest.mark.parametrize(
    ("resolution", "told"),
    [(None, None), ("dismiss", "no_action"), ("recall", "action_taken"), ("disable", "action_taken")],
)
def test_what_a_reporter_is_told(resolution: str | None, told: str | None) -> None:
    assert rules.outcome(resolution) == told
