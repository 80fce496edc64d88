"""Typed frames of the WebSocket protocol and bodies of the HTTP API (docs/protocol.md).

Every request a client sends over the WebSocket is one object with an ``op`` tag and a
request id ``rid``; the server answers each with exactly one ``ok`` or ``err`` frame
carrying the same ``rid``. Server-initiated frames are ``event`` frames (durable inbox
events, numbered by the user's gap-free inbox ``seq``) and ``notice`` frames (ephemeral,
unnumbered). The same structs describe the HTTP bodies, so both transports validate
identically.

64-bit ids (users, conversations, messages) travel as decimal strings: JavaScript numbers
lose precision above 2**53 and a Snowflake id is ~2**60. Sequence numbers stay integers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Raw, Struct

# --- field types ---------------------------------------------------------------------

Rid = int | str
IdStr = Annotated[str, Meta(pattern=r"^[0-9]{1,20}$", description="a 64-bit id as a decimal string")]
Seq = Annotated[int, Meta(ge=0, le=2**62)]
PageLimit = Annotated[int, Meta(ge=1, le=1000)]
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64)]
Username = Annotated[str, Meta(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
DisplayName = Annotated[str, Meta(max_length=64)]
DeviceId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Platform = Literal["android", "ios", "web", "desktop"]
MessageKind = Literal["text", "emoji", "image", "video", "file"]

# --- WebSocket requests (client -> server) ---------------------------------------------


class Request(Struct, tag_field="op", forbid_unknown_fields=True, frozen=True):
    rid: Rid


class Auth(Request, tag="auth"):
    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class Ping(Request, tag="ping"):
    pass


class Send(Request, tag="send"):
    kind: str
    body: Raw
    client_msg_id: ClientMsgId
    to: IdStr | None = None
    conv_id: IdStr | None = None


class Sync(Request, tag="sync"):
    since: Seq = 0
    limit: PageLimit = 200


class Ack(Request, tag="ack"):
    seq: Seq


class Read(Request, tag="read"):
    conv_id: IdStr
    seq: Seq


class History(Request, tag="history"):
    conv_id: IdStr
    before: Seq | None = None
    after: Seq | None = None
    limit: PageLimit = 50


class Conversations(Request, tag="conversations"):
    limit: PageLimit = 50
    before: Annotated[int, Meta(ge=0)] | None = None


AnyRequest = Auth | Ping | Send | Sync | Ack | Read | History | Conversations


class RidOnly(Struct):
    """Lenient view of a frame that failed validation, to echo its rid in the error."""

    rid: Any = None
    op: Any = None


# --- message bodies, one per kind --------------------------------------------------------


class TextBody(Struct, forbid_unknown_fields=True):
    text: str


class EmojiBody(Struct, forbid_unknown_fields=True):
    emoji: Annotated[str, Meta(min_length=1, max_length=32)]


# --- server -> client ----------------------------------------------------------------------


class Ok(Struct, tag_field="t", tag="ok", omit_defaults=True):
    rid: Rid | None
    data: Any = None


class Err(Struct, tag_field="t", tag="err", omit_defaults=True):
    rid: Rid | None
    code: str
    message: str
    retry_after: float | None = None


class Event(Struct, tag_field="t", tag="event"):
    """A durable inbox event; ``seq`` is the user's inbox sequence (gap-free)."""

    seq: int
    type: str
    data: Raw | Any


class Notice(Struct, tag_field="t", tag="notice"):
    """An ephemeral push (never stored, never numbered)."""

    type: str
    data: Any


# --- shared payloads ----------------------------------------------------------------------


class MessageOut(Struct, omit_defaults=True):
    msg_id: str
    conv_id: str
    seq: int
    sender_id: str
    sender_device: str
    kind: str
    body: Raw | Any
    client_msg_id: str
    created_at: int
    recalled: bool = False


class SendAck(Struct):
    msg_id: str
    conv_id: str
    seq: int
    inbox_seq: int
    created_at: int
    duplicate: bool = False


class ReadMarker(Struct):
    conv_id: str
    read_seq: int


class ReadResult(Struct):
    conv_id: str
    read_seq: int
    unread: int
    total_unread: int


class UserOut(Struct):
    user_id: str
    username: str
    display_name: str
    created_at: int


class ConversationOut(Struct):
    conv_id: str
    type: str
    peer: UserOut | None
    last_seq: int
    read_seq: int
    unread: int
    updated_at: int
    last_message: MessageOut | None


class ConversationPage(Struct):
    conversations: list[ConversationOut]
    total_unread: int
    next_before: int | None


class SyncPage(Struct):
    events: list[Event]
    next_since: int
    head: int
    has_more: bool


class HistoryPage(Struct):
    messages: list[MessageOut]
    has_more: bool


class AuthOk(Struct):
    user_id: str
    device_id: str
    platform: str
    inbox_seq: int
    heartbeat_s: float
    idle_timeout_s: float
    max_frame_bytes: int
    server_time: int


# --- HTTP bodies -----------------------------------------------------------------------------


class RegisterBody(Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    display_name: DisplayName = ""


class LoginBody(Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=32)]
    password: Annotated[str, Meta(min_length=1, max_length=256)]
    device_id: DeviceId
    platform: Platform
    device_name: DisplayName = ""


class LoginOut(Struct):
    token: str
    user_id: str
    device_id: str
    platform: str
    expires_at: int


class SendBody(Struct, forbid_unknown_fields=True):
    kind: str
    body: Raw
    client_msg_id: ClientMsgId
    to: IdStr | None = None
    conv_id: IdStr | None = None


class ReadBody(Struct, forbid_unknown_fields=True):
    seq: Seq


class DeviceOut(Struct):
    device_id: str
    platform: str
    name: str
    created_at: int
    last_seen_at: int
    online: bool
    current: bool


class Health(Struct):
    status: str
    node_id: int
    version: str
    uptime_s: float
    connections: int


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


# --- HTTP query strings ----------------------------------------------------------------------


class SyncQuery(Struct, forbid_unknown_fields=True):
    since: Seq = 0
    limit: PageLimit = 200


class ConversationsQuery(Struct, forbid_unknown_fields=True):
    limit: PageLimit = 50
    before: Annotated[int, Meta(ge=0)] | None = None


class HistoryQuery(Struct, forbid_unknown_fields=True):
    before: Seq | None = None
    after: Seq | None = None
    limit: PageLimit = 50


class UserQuery(Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=32)]
