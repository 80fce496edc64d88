"""Stable error codes shared by the HTTP API and the WebSocket gateway.

A code never changes meaning once published (docs/protocol.md lists them all); the
human-readable message may. Each code maps to one HTTP status so that the same domain
error reads the same over both transports.
"""

from __future__ import annotations

from typing import Final

#: code -> HTTP status
ERROR_STATUS: Final[dict[str, int]] = {
    "bad_frame": 400,  # not decodable JSON / MessagePack, or not an object
    "bad_request": 400,  # decodable, but a field is missing, of the wrong type or out of range
    "unknown_op": 400,
    "method_not_allowed": 405,  # HTTP only: the path exists, the method does not (see the Allow header)
    "frame_too_large": 413,
    "invalid_kind": 400,
    "invalid_body": 400,
    "body_too_large": 413,
    "invalid_username": 400,
    "weak_password": 400,
    "unauthorized": 401,  # no, bad, expired or revoked credentials
    "auth_required": 401,  # a WebSocket request before `auth`
    "already_authenticated": 409,
    "forbidden": 403,
    "account_disabled": 403,  # login to (or a session of) an account an admin disabled
    "wrong_password": 403,  # a password change whose old password is not the account's
    "not_member": 403,
    "not_found": 404,
    "username_taken": 409,
    "muted": 403,  # the sender is muted in this group (or the whole group is)
    "recall_expired": 403,  # past the recall time limit
    "already_recalled": 409,
    "edit_window_passed": 403,  # past the edit window (or editing is off: edit_window_s = 0)
    "group_full": 409,  # the group is at its member limit
    "too_many_reactions": 409,  # the user has the most different reactions allowed on this message
    "too_many_pins": 409,  # the conversation has the most pinned messages allowed
    "group_dissolved": 410,
    "blocked": 403,  # the other user blocked you (or you blocked them: unblock first)
    "friends_only": 403,  # the recipient accepts direct messages from friends only
    "already_friends": 409,
    "media_too_large": 413,  # an upload over its kind's size limit, or an image over the pixel limit
    "media_type_mismatch": 415,  # the bytes are not what the upload or its name says (an .exe named photo.jpg)
    "media_type_not_allowed": 415,  # a type refused for the kind (svg as an image) or at all (executables)
    "invalid_media": 400,  # an empty upload, or an image that does not decode
    "media_not_found": 404,  # no such media, or not uploaded by / visible to the requester
    "media_kind_mismatch": 400,  # an image message naming a media that is not an image, etc.
    "range_not_satisfiable": 416,  # a media download's Range lies outside the content
    "content_blocked": 422,  # the text holds a word of a sensitive-word list whose action is reject
    "invalid_pusher": 400,  # a pusher's fields do not fit its kind (a webpush without keys, an http: endpoint ...)
    "push_unavailable": 409,  # this server sends no pushes of the pusher's kind (not configured by its operator)
    "rejected_by_policy": 422,  # the operator's before_send webhook refused the message; the message is its reason
    "already_resolved": 409,  # a report an admin resolved already (admin_resolve)
    "shop_closed": 410,  # the shop was closed (its owner erased with no other admin to run it)
    "rate_limited": 429,
    "export_busy": 503,  # this node runs as many data exports as it may (export_max_concurrent); retry later
    "unavailable": 503,  # the node is shutting down or its store is failing
    "internal": 500,
}


class YimError(Exception):
    """A request failed for a reason the client can act on."""

    __slots__ = ("code", "message", "retry_after")

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        if code not in ERROR_STATUS:  # a typo here would publish an undocumented code
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]
