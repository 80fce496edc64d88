"""Report rules: what a user may report, how often, and what resolves a report."""

from __future__ import annotations

import msgspec

from yim.protocol.errors import YimError

#: the window of the per-user report limit
REPORT_WINDOW_MS = 3_600_000


class ReportedMessage(msgspec.Struct, frozen=True):
    """The message a report names, as stored."""

    sender_id: int
    kind: str
    recalled: bool


def check_message(
    conv_id: int, seq: int, reporter_id: int, window: tuple[int, int] | None, target: ReportedMessage | None
) -> ReportedMessage:
    """May the reporter report message ``seq``? Only one they can see: ``window`` is their
    ``(joined_seq, last visible seq)`` in the conversation (None: never a member), so a past
    member still may, inside their window. Not their own, not a system entry, not a
    recalled one (nothing is left to see)."""
    if window is None:
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    joined, head = window
    if target is None or not joined < seq <= head:
        raise YimError("not_found", f"no message {seq} in conversation {conv_id}")
    if target.kind in ("system", "recall", "edit"):
        raise YimError("bad_request", "system entries cannot be reported")
    if target.recalled:
        raise YimError("already_recalled", "this message was recalled")
    if target.sender_id == reporter_id:
        raise YimError("bad_request", "you cannot report your own message")
    return target


def check_user(user_id: int, reporter_id: int, exists: bool) -> None:
    """Any other existing account may be reported: an id is all it takes to look a user up
    or write to them, so an id is all it takes to report them."""
    if not exists:
        raise YimError("not_found", f"no user {user_id}")
    if user_id == reporter_id:
        raise YimError("bad_request", "you cannot report yourself")


def check_limit(recent: list[int], now: int, limit: int) -> None:
    """At most ``limit`` new reports per reporter in any hour (0: no limit); ``recent``: the
    creation times of their reports in the last hour. The refusal says when the oldest of
    them leaves the window."""
    if limit <= 0 or len(recent) < limit:
        return
    oldest = sorted(recent)[len(recent) - limit]
    retry_ms = max(oldest + REPORT_WINDOW_MS - now, 1)
    raise YimError(
        "rate_limited",
        f"at most {limit} reports an hour: try again in {retry_ms // 1000 + 1} s",
        retry_after=retry_ms / 1000,
    )


def check_resolve(report_id: int, status: str | None, action: str, is_message: bool) -> None:
    """A report is resolved once; ``recall`` is for a report of a message."""
    if status is None:
        raise YimError("not_found", f"no report {report_id}")
    if status != "open":
        raise YimError("already_resolved", f"report {report_id} is resolved already")
    if action == "recall" and not is_message:
        raise YimError("bad_request", "only a reported message can be recalled")


def must_exist(report_id: int, found: bool) -> None:
    if not found:
        raise YimError("not_found", f"no report {report_id}")


def require_reported_media(snap_kind: str | None, carried: int | None, media_id: int) -> None:
    """An admin reads a media file through a report only if the reported message, as the
    snapshot keeps it, carries that file (``carried``: the id its body names); any other id
    is answered as a missing one, as a download by someone who cannot see it is."""
    if snap_kind not in ("image", "video", "file") or carried is None or carried != media_id:
        raise YimError("media_not_found", f"report shows no media {media_id}")


#: what the reporter learns of a resolution: whether the admins acted, not how
OUTCOMES = {"dismiss": "no_action", "recall": "action_taken", "disable": "action_taken"}


def outcome(resolution: str | None) -> str | None:
    """The outcome a reporter is told (None while open): the admins took action, or none.
    Which action, who resolved it and their note stay with the admins."""
    return None if resolution is None else OUTCOMES[resolution]
