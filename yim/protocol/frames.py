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
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

# --- field types ---------------------------------------------------------------------

RID_MIN = -(2**63)
RID_MAX = 2**63 - 1
#: a client's request id; integers are bounded to int64 so every codec can echo them
Rid = Annotated[int, Meta(ge=RID_MIN, le=RID_MAX)] | str
IdStr = Annotated[str, Meta(pattern=r"^[0-9]{1,20}$", description="a 64-bit id as a decimal string")]
Seq = Annotated[int, Meta(ge=0, le=2**62)]
PageLimit = Annotated[int, Meta(ge=1, le=1000)]
# "system:", "recall:" and "edit:" keys are the server's own (for entries it writes); clients use any other.
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^(?!system:|recall:|edit:)")]
Username = Annotated[str, Meta(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
#: Text people read (names, notes, reasons): no C0 control characters but tab, newline and
#: carriage return, and no DEL. They have no place in such text, and PostgreSQL cannot store
#: a NUL at all, so refusing them here keeps both stores answering alike (bad_request).
READABLE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
DisplayName = Annotated[str, Meta(max_length=64, pattern=READABLE)]
Tag = Annotated[str, Meta(min_length=1, max_length=32, pattern=READABLE)]
DeviceId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Platform = Literal["android", "ios", "web", "desktop"]
MessageKind = Literal["text", "emoji", "image", "video", "file", "custom"]

# --- WebSocket requests (client -> server) ---------------------------------------------


class Request(Struct, tag_field="op", forbid_unknown_fields=True, frozen=True):
    rid: Rid


class Auth(Request, tag="auth", frozen=True):
    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class Ping(Request, tag="ping", frozen=True):
    pass


Mentions = Annotated[list[IdStr], Meta(max_length=100)]
GroupName = Annotated[str, Meta(min_length=1, max_length=64, pattern=READABLE)]
ShopName = Annotated[str, Meta(min_length=1, max_length=64, pattern=READABLE)]
Announcement = Annotated[str, Meta(max_length=2000, pattern=READABLE)]
MediaRef = Annotated[str, Meta(max_length=128)]
JoinPolicy = Literal["open", "members_invite", "admins_invite"]
UserIds = Annotated[list[IdStr], Meta(min_length=1, max_length=10_000)]


Category = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]


class Send(Request, tag="send", frozen=True):
    kind: str
    body: Raw
    client_msg_id: ClientMsgId
    to: IdStr | None = None
    conv_id: IdStr | None = None
    mentions: Mentions | None = None
    mention_all: bool = False
    shop_id: IdStr | None = None  # a customer's message to a shop (customer service)
    category: Category | None = None  # the customer's choice; else the shop's rules decide
    reply_to: Seq | None = None  # the seq of the message of the same conversation this one replies to


class Sync(Request, tag="sync", frozen=True):
    since: Seq = 0
    limit: PageLimit = 200


class Ack(Request, tag="ack", frozen=True):
    seq: Seq


class Read(Request, tag="read", frozen=True):
    conv_id: IdStr
    seq: Seq


class History(Request, tag="history", frozen=True):
    conv_id: IdStr
    before: Seq | None = None
    after: Seq | None = None
    limit: PageLimit = 50


class Conversations(Request, tag="conversations", frozen=True):
    limit: PageLimit = 50
    before: IdStr | None = None  # the previous page's next_before


class Users(Request, tag="users", frozen=True):
    user_ids: Annotated[list[IdStr], Meta(min_length=1, max_length=500)]


class ShopInfo(Request, tag="shop_info", frozen=True):
    shop_id: IdStr


class Conversation(Request, tag="conversation", frozen=True):
    conv_id: IdStr


class Recall(Request, tag="recall", frozen=True):
    conv_id: IdStr
    seq: Seq


class Edit(Request, tag="edit", frozen=True):
    """Replace the text of one's own text message (docs/protocol.md "Edit")."""

    conv_id: IdStr
    seq: Seq
    text: str
    #: who the message mentions after the edit (replaces the list); those not mentioned before are notified
    mentions: Mentions | None = None


class MessageVersions(Request, tag="message_versions", frozen=True):
    conv_id: IdStr
    seq: Seq


#: at most this many entries hidden by one ``hide`` request
MAX_HIDE_SEQS = 100


class Hide(Request, tag="hide", frozen=True):
    """Delete for me: hide entries from one's own devices (docs/protocol.md "hide")."""

    conv_id: IdStr
    seqs: Annotated[list[Seq], Meta(min_length=1, max_length=MAX_HIDE_SEQS)]


#: at most this many messages forwarded by one ``forward`` request, to at most MAX_FORWARD_TARGETS targets
MAX_FORWARD_MESSAGES = 20
MAX_FORWARD_TARGETS = 10


class ForwardTarget(Struct, forbid_unknown_fields=True, frozen=True):
    """Where a ``forward`` copies the messages: exactly one of ``to`` (a user) / ``conv_id``.
    ``client_msg_id`` keys the copies for idempotency: the i-th copy (from 0) is sent with
    ``client_msg_id`` + ``"."`` + i."""

    client_msg_id: Annotated[str, Meta(min_length=1, max_length=60, pattern=r"^(?!system:|recall:|edit:)")]
    to: IdStr | None = None
    conv_id: IdStr | None = None


class Forward(Request, tag="forward", frozen=True):
    conv_id: IdStr  # the source conversation
    seqs: Annotated[list[Seq], Meta(min_length=1, max_length=MAX_FORWARD_MESSAGES)]
    targets: Annotated[list[ForwardTarget], Meta(min_length=1, max_length=MAX_FORWARD_TARGETS)]


class Receipts(Request, tag="receipts", frozen=True):
    conv_id: IdStr
    seq: Seq


class Typing(Request, tag="typing", frozen=True):
    conv_id: IdStr


class GroupCreate(Request, tag="group_create", frozen=True):
    name: GroupName
    members: Annotated[list[IdStr], Meta(max_length=10_000)] = []
    announcement: Announcement = ""
    avatar: MediaRef = ""
    join_policy: JoinPolicy = "members_invite"
    max_members: Annotated[int, Meta(ge=2)] | None = None


class GroupInfo(Request, tag="group_info", frozen=True):
    conv_id: IdStr


class GroupMembers(Request, tag="group_members", frozen=True):
    conv_id: IdStr
    after: IdStr | None = None
    limit: PageLimit = 200


class GroupInvite(Request, tag="group_invite", frozen=True):
    conv_id: IdStr
    user_ids: UserIds


class GroupJoin(Request, tag="group_join", frozen=True):
    conv_id: IdStr


class GroupLeave(Request, tag="group_leave", frozen=True):
    conv_id: IdStr


class GroupRemove(Request, tag="group_remove", frozen=True):
    conv_id: IdStr
    user_id: IdStr


class GroupRole(Request, tag="group_role", frozen=True):
    conv_id: IdStr
    user_id: IdStr
    role: Literal["owner", "admin", "member"]


class GroupMute(Request, tag="group_mute", frozen=True):
    conv_id: IdStr
    user_id: IdStr
    duration_s: Annotated[int, Meta(ge=0, le=366 * 24 * 3600)]


class GroupUpdate(Request, tag="group_update", frozen=True):
    conv_id: IdStr
    name: GroupName | None = None
    avatar: MediaRef | None = None
    announcement: Announcement | None = None
    join_policy: JoinPolicy | None = None
    mute_all: bool | None = None
    max_members: Annotated[int, Meta(ge=2)] | None = None
    pin_policy: PinPolicy | None = None


class GroupDissolve(Request, tag="group_dissolve", frozen=True):
    conv_id: IdStr


#: a reaction: one emoji (or a sticker code), as the client shows it
Emoji = Annotated[str, Meta(min_length=1, max_length=32)]
PinPolicy = Literal["admins", "members"]


class React(Request, tag="react", frozen=True):
    """Add (or, with ``remove``, take back) one emoji reaction to message ``seq``."""

    conv_id: IdStr
    seq: Seq
    emoji: Emoji
    remove: bool = False


class Reactions(Request, tag="reactions", frozen=True):
    """The messages of a conversation whose reactions changed after version ``after_ver``."""

    conv_id: IdStr
    after_ver: Seq = 0
    limit: PageLimit = 200


class Reactors(Request, tag="reactors", frozen=True):
    """Who reacted to message ``seq`` with ``emoji``, by user id."""

    conv_id: IdStr
    seq: Seq
    emoji: Emoji
    after: IdStr | None = None  # the previous page's next_after
    limit: PageLimit = 100


class Pin(Request, tag="pin", frozen=True):
    conv_id: IdStr
    seq: Seq


class Unpin(Request, tag="unpin", frozen=True):
    conv_id: IdStr
    seq: Seq


class Search(Request, tag="search", frozen=True):
    """Full-text search of the messages the user can see (one conversation, or all of theirs)."""

    q: Annotated[str, Meta(min_length=1, max_length=100)]
    conv_id: IdStr | None = None
    before: IdStr | None = None  # a msg_id: only hits older than it (the previous page's next_before)
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


# relation chain, privacy and presence


class FriendRequest(Request, tag="friend_request", frozen=True):
    to: IdStr
    message: Annotated[str, Meta(max_length=200, pattern=READABLE)] = ""


class FriendAccept(Request, tag="friend_accept", frozen=True):
    request_id: IdStr


class FriendReject(Request, tag="friend_reject", frozen=True):
    request_id: IdStr


class FriendCancel(Request, tag="friend_cancel", frozen=True):
    request_id: IdStr


class FriendDelete(Request, tag="friend_delete", frozen=True):
    user_id: IdStr


class FriendUpdate(Request, tag="friend_update", frozen=True):
    user_id: IdStr
    remark: Annotated[str, Meta(max_length=64, pattern=READABLE)] | None = None
    tags: Annotated[list[Tag], Meta(max_length=20)] | None = None


class Friends(Request, tag="friends", frozen=True):
    after: IdStr | None = None
    limit: PageLimit = 200


class FriendRequests(Request, tag="friend_requests", frozen=True):
    direction: Literal["incoming", "outgoing"] = "incoming"
    before: IdStr | None = None
    limit: PageLimit = 100


class Follow(Request, tag="follow", frozen=True):
    user_id: IdStr


class Unfollow(Request, tag="unfollow", frozen=True):
    user_id: IdStr


class Followers(Request, tag="followers", frozen=True):
    user_id: IdStr | None = None  # default: me
    after: IdStr | None = None
    limit: PageLimit = 200


class Following(Request, tag="following", frozen=True):
    user_id: IdStr | None = None  # default: me
    after: IdStr | None = None
    limit: PageLimit = 200


class Block(Request, tag="block", frozen=True):
    user_id: IdStr


class Unblock(Request, tag="unblock", frozen=True):
    user_id: IdStr


class Blocks(Request, tag="blocks", frozen=True):
    after: IdStr | None = None
    limit: PageLimit = 200


class Relation(Request, tag="relation", frozen=True):
    user_id: IdStr


class RelationCountsReq(Request, tag="relation_counts", frozen=True):
    user_id: IdStr | None = None  # default: me


class PrivacyGet(Request, tag="privacy_get", frozen=True):
    pass


class PrivacySet(Request, tag="privacy_set", frozen=True):
    dm_policy: Literal["anyone", "friends"] | None = None
    presence: Literal["friends", "nobody"] | None = None


class PresenceSet(Request, tag="presence_set", frozen=True):
    status: Literal["online", "away"]


class PresenceQuery(Request, tag="presence_query", frozen=True):
    user_ids: Annotated[list[IdStr], Meta(min_length=1, max_length=500)]


# push: how a device that is not connected is woken (docs/protocol.md, "Pushers")
PusherKind = Literal["webpush", "apns", "fcm", "gateway"]


class PusherSet(Request, tag="pusher_set", frozen=True):
    """Register (or replace) the pusher of the device this session belongs to; the fields
    used depend on ``kind`` (webpush: endpoint, p256dh, auth; apns: token, sandbox; fcm:
    token; gateway: app_id, pushkey)."""

    kind: PusherKind
    endpoint: Annotated[str, Meta(min_length=1, max_length=2048)] | None = None
    p256dh: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    auth: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    token: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    sandbox: bool = False
    app_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    pushkey: Annotated[str, Meta(min_length=1, max_length=512)] | None = None


class Pushers(Request, tag="pushers", frozen=True):
    pass


class PusherRemove(Request, tag="pusher_remove", frozen=True):
    device_id: DeviceId | None = None  # default: the device of this session


class PushKey(Request, tag="push_key", frozen=True):
    pass


PushMuteMode = Literal["off", "mentions", "all"]


class PushSettingsGet(Request, tag="push_settings_get", frozen=True):
    pass


class PushSettingsSet(Request, tag="push_settings_set", frozen=True):
    """The user's push settings (every device of theirs); a field left null is unchanged."""

    preview: bool | None = None  # false: notifications say only "New message from <sender>"
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None  # IANA, for dnd
    dnd: Annotated[str, Meta(max_length=11)] | None = None  # quiet hours "HH:MM-HH:MM"; "" for none


class PushMute(Request, tag="push_mute", frozen=True):
    conv_id: IdStr
    mute: PushMuteMode


# customer service


class ShopCreate(Request, tag="shop_create", frozen=True):
    name: ShopName


class Shops(Request, tag="shops", frozen=True):
    pass


class ShopAgentSet(Request, tag="shop_agent_set", frozen=True):
    shop_id: IdStr
    user_id: IdStr
    role: Literal["agent", "admin"] = "agent"
    skills: Annotated[list[Category], Meta(max_length=16)] = msgspec.field(
        default_factory=lambda: ["pre_sale", "after_sale"]
    )
    capacity: Annotated[int, Meta(ge=0, le=1000)] = 10


class ShopAgentRemove(Request, tag="shop_agent_remove", frozen=True):
    shop_id: IdStr
    user_id: IdStr


class ShopAgents(Request, tag="shop_agents", frozen=True):
    shop_id: IdStr


class AgentStatus(Request, tag="agent_status", frozen=True):
    status: Literal["online", "busy", "away", "offline"]
    shop_id: IdStr | None = None  # default: every shop the agent serves


class ServiceSessions(Request, tag="service_sessions", frozen=True):
    shop_id: IdStr | None = None
    status: Literal["queued", "active", "closed"] | None = None
    limit: PageLimit = 200


class ServiceStatus(Request, tag="service_status", frozen=True):
    shop_id: IdStr


class ServiceTransfer(Request, tag="service_transfer", frozen=True):
    session_id: IdStr
    to_agent: IdStr | None = None
    to_category: Category | None = None


class ServiceClose(Request, tag="service_close", frozen=True):
    session_id: IdStr


class ServiceRate(Request, tag="service_rate", frozen=True):
    session_id: IdStr
    rating: Annotated[int, Meta(ge=1, le=5)]
    comment: Annotated[str, Meta(max_length=500, pattern=READABLE)] = ""


class ShopDashboard(Request, tag="shop_dashboard", frozen=True):
    shop_id: IdStr


# --- server administration and self-service (docs/protocol.md §19) --------------------------
# Every admin_* op is for server admins only (anyone else: forbidden); each action is
# written to the audit log in its own transaction.

AuditReason = Annotated[str, Meta(max_length=500, pattern=READABLE)]


class AdminUsers(Request, tag="admin_users", frozen=True):
    """Accounts by id; ``q`` matches an id exactly or a username / display name in part."""

    q: Annotated[str, Meta(max_length=64, pattern=READABLE)] = ""
    after: IdStr | None = None  # the previous page's next_after
    limit: PageLimit = 50


class AdminUser(Request, tag="admin_user", frozen=True):
    user_id: IdStr


class AdminDisable(Request, tag="admin_disable", frozen=True):
    user_id: IdStr
    reason: AuditReason = ""


class AdminEnable(Request, tag="admin_enable", frozen=True):
    user_id: IdStr
    reason: AuditReason = ""


class AdminResetPassword(Request, tag="admin_reset_password", frozen=True):
    user_id: IdStr
    password: Password
    reason: AuditReason = ""


class AdminRevoke(Request, tag="admin_revoke", frozen=True):
    """Sign out one device of a user, or every device (no ``device_id``)."""

    user_id: IdStr
    device_id: DeviceId | None = None
    reason: AuditReason = ""


class AdminSetRole(Request, tag="admin_set_role", frozen=True):
    user_id: IdStr
    admin: bool
    reason: AuditReason = ""


class AdminAudit(Request, tag="admin_audit", frozen=True):
    before: IdStr | None = None  # the previous page's next_before
    limit: PageLimit = 50


class AdminGroups(Request, tag="admin_groups", frozen=True):
    """Groups by id, dissolved ones too; ``q`` matches an id exactly or a name in part."""

    q: Annotated[str, Meta(max_length=64, pattern=READABLE)] = ""
    after: IdStr | None = None  # the previous page's next_after
    limit: PageLimit = 50


class AdminGroup(Request, tag="admin_group", frozen=True):
    conv_id: IdStr


class AdminGroupDissolve(Request, tag="admin_group_dissolve", frozen=True):
    conv_id: IdStr
    reason: AuditReason = ""


class AdminGroupTransfer(Request, tag="admin_group_transfer", frozen=True):
    """Make a current member the group's owner; the old owner becomes a group admin."""

    conv_id: IdStr
    user_id: IdStr
    reason: AuditReason = ""


class AdminShopCreate(Request, tag="admin_shop_create", frozen=True):
    """A shop for ``owner_id``, who becomes its first admin agent (as if they made it)."""

    owner_id: IdStr
    name: ShopName
    reason: AuditReason = ""


class AdminShopAgentSet(Request, tag="admin_shop_agent_set", frozen=True):
    """``shop_agent_set`` on any shop (the fields and defaults of §17)."""

    shop_id: IdStr
    user_id: IdStr
    role: Literal["agent", "admin"] = "agent"
    skills: Annotated[list[Category], Meta(max_length=16)] = msgspec.field(
        default_factory=lambda: ["pre_sale", "after_sale"]
    )
    capacity: Annotated[int, Meta(ge=0, le=1000)] = 10
    reason: AuditReason = ""


class PasswordChange(Request, tag="password_change", frozen=True):
    old_password: Annotated[str, Meta(min_length=1, max_length=256)]
    new_password: Password


#: a user's avatar in ``profile_set``: the media id of an image the user uploaded, or "" for none
AvatarRef = Annotated[str, Meta(pattern=r"^[0-9]{0,20}$", description="a media id, or empty for no avatar")]


class ProfileSet(Request, tag="profile_set", frozen=True):
    """Fields left out (or null) stay as they are."""

    display_name: DisplayName | None = None
    avatar: AvatarRef | None = None


class AdminErase(Request, tag="admin_erase", frozen=True):
    """Erase an account now (docs/protocol.md §19.8)."""

    user_id: IdStr
    reason: AuditReason = ""


class AccountDelete(Request, tag="account_delete", frozen=True):
    """Delete my own account after the grace period (a login in the meantime cancels it)."""

    password: Annotated[str, Meta(min_length=1, max_length=256)]


class AccountDeletion(Request, tag="account_deletion", frozen=True):
    """When my pending deletion runs, if there is one."""


# --- reports (docs/protocol.md §19.9) -------------------------------------------------------

ReportCategory = Literal["spam", "abuse", "illegal", "other"]


class Report(Request, tag="report", frozen=True):
    """Report a message (``conv_id`` and ``seq``) or a user (``user_id``) to the server's admins."""

    category: ReportCategory
    text: Annotated[str, Meta(max_length=1000, pattern=READABLE)] = ""
    conv_id: IdStr | None = None
    seq: Annotated[int, Meta(ge=1, le=2**62)] | None = None
    user_id: IdStr | None = None


class MyReports(Request, tag="my_reports", frozen=True):
    """The caller's own reports, newest first, and what became of each."""

    before: IdStr | None = None  # the previous page's next_before
    limit: Annotated[int, Meta(ge=1, le=100)] = 50


class AdminReports(Request, tag="admin_reports", frozen=True):
    """The report queue, newest first: open reports (the default), resolved ones, or all."""

    status: Literal["open", "resolved", "all"] = "open"
    before: IdStr | None = None  # the previous page's next_before
    limit: PageLimit = 50


class AdminReport(Request, tag="admin_report", frozen=True):
    report_id: IdStr


class AdminResolve(Request, tag="admin_resolve", frozen=True):
    """Resolve a report, and every open report of the same target, by one action."""

    report_id: IdStr
    action: Literal["dismiss", "recall", "disable"]
    note: AuditReason = ""


class ShopSearch(Request, tag="shop_search", frozen=True):
    """Shops that accept customers, by a part of their name (docs/protocol.md §17.2)."""

    q: Annotated[str, Meta(min_length=1, max_length=64, pattern=READABLE)]  # a shop's name is at most 64 characters
    offset: Annotated[int, Meta(ge=0, le=1000)] = 0  # the previous page's next_offset
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


ADMIN_OPS = (
    AdminUsers,
    AdminUser,
    AdminDisable,
    AdminEnable,
    AdminResetPassword,
    AdminRevoke,
    AdminSetRole,
    AdminAudit,
)


AnyRequest = (
    Auth
    | Ping
    | Send
    | Sync
    | Ack
    | Read
    | History
    | Conversations
    | Conversation
    | Users
    | ShopInfo
    | Recall
    | Edit
    | MessageVersions
    | Hide
    | Forward
    | Receipts
    | Typing
    | GroupCreate
    | GroupInfo
    | GroupMembers
    | GroupInvite
    | GroupJoin
    | GroupLeave
    | GroupRemove
    | GroupRole
    | GroupMute
    | GroupUpdate
    | GroupDissolve
    | React
    | Reactions
    | Reactors
    | Pin
    | Unpin
    | FriendRequest
    | FriendAccept
    | FriendReject
    | FriendCancel
    | FriendDelete
    | FriendUpdate
    | Friends
    | FriendRequests
    | Follow
    | Unfollow
    | Followers
    | Following
    | Block
    | Unblock
    | Blocks
    | Relation
    | RelationCountsReq
    | PrivacyGet
    | PrivacySet
    | PresenceSet
    | PresenceQuery
    | PusherSet
    | Pushers
    | PusherRemove
    | PushKey
    | PushSettingsGet
    | PushSettingsSet
    | PushMute
    | Search
    | ShopCreate
    | Shops
    | ShopAgentSet
    | ShopAgentRemove
    | ShopAgents
    | AgentStatus
    | ServiceSessions
    | ServiceStatus
    | ServiceTransfer
    | ServiceClose
    | ServiceRate
    | ShopDashboard
    | AdminUsers
    | AdminUser
    | AdminDisable
    | AdminEnable
    | AdminResetPassword
    | AdminRevoke
    | AdminSetRole
    | AdminAudit
    | AdminGroups
    | AdminGroup
    | AdminGroupDissolve
    | AdminGroupTransfer
    | AdminShopCreate
    | AdminShopAgentSet
    | PasswordChange
    | ProfileSet
    | AdminErase
    | AccountDelete
    | AccountDeletion
    | Report
    | MyReports
    | AdminReports
    | AdminReport
    | AdminResolve
    | ShopSearch
)


class RidOnly(Struct):
    """Lenient view of a frame that failed validation, to echo its rid in the error."""

    rid: Any = None
    op: Any = None


# --- message bodies, one per kind --------------------------------------------------------


class TextBody(Struct, forbid_unknown_fields=True):
    text: str


class EmojiBody(Struct, forbid_unknown_fields=True):
    emoji: Annotated[str, Meta(min_length=1, max_length=32)]


CustomType = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$")]


class CustomBody(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An app-defined message: ``type`` names it, ``data`` is any JSON object, ``text`` is the
    fallback clients without support show (and what search finds)."""

    type: CustomType
    data: dict[str, Any]
    text: str | None = None


class MediaRefBody(Struct, forbid_unknown_fields=True):
    """What a client sends for an ``image``, ``video`` or ``file`` message."""

    media_id: IdStr


class MediaMessageBody(Struct):
    """The canonical body of a media message: the server fills it in from the upload."""

    media_id: str
    mime: str  # detected from the bytes
    size: int
    name: str
    sha256: str
    width: int | None = None  # images
    height: int | None = None
    thumbnail: bool = False  # GET /api/v1/media/{media_id}/thumbnail exists


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


class ReactionOut(Struct):
    """One emoji on a message: how many reacted with it, and whether the viewer did."""

    emoji: str
    count: int
    me: bool = False


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
    mentions: list[str] = []
    mention_all: bool = False
    #: history only: the message's reactions, in the order they first appeared (omitted: none)
    reactions: list[ReactionOut] = []


class SendAck(Struct):
    msg_id: str
    conv_id: str
    seq: int
    inbox_seq: int
    created_at: int
    duplicate: bool = False
    #: only when the server stored another body than the one sent (sensitive words masked)
    body: Raw | UnsetType = UNSET


class ReadMarker(Struct):
    conv_id: str
    read_seq: int


class ReceiptMarker(Struct):
    """A one-to-one read receipt: ``user_id`` has read ``conv_id`` up to ``read_seq``."""

    conv_id: str
    user_id: str
    read_seq: int


class TypingNotice(Struct):
    conv_id: str
    user_id: str


class ReadResult(Struct):
    conv_id: str
    read_seq: int
    unread: int
    total_unread: int
    #: the requesting device's inbox seq for the "read" event it stands for (0: nothing moved)
    inbox_seq: int = 0


class UserOut(Struct):
    user_id: str
    username: str
    display_name: str
    created_at: int
    #: the media id of the user's avatar (an image; lists show its thumbnail), "" for none
    avatar: str = ""


class UsersPage(Struct):
    users: list[UserOut]


class PinnedOut(Struct):
    seq: int
    msg_id: str
    pinned_by: str
    pinned_at: int


class ConversationOut(Struct):
    conv_id: str
    type: str  # "direct" | "group"
    peer: UserOut | None  # direct conversations
    name: str  # groups
    member_count: int
    active: bool  # false once the user left or was removed from the group
    last_seq: int
    read_seq: int
    unread: int
    mentioned: bool  # a message after read_seq mentions the user (or everyone)
    updated_at: int
    last_message: MessageOut | None
    peer_read_seq: int = 0  # direct conversations: the other user has read up to here
    shop_id: str | None = None  # service conversations: the shop
    customer_id: str | None = None  # service conversations: the customer
    #: pinned messages, most recently pinned first (at most ``max_pins``)
    pinned: list[PinnedOut] = []
    #: the conversation's reaction version (see the ``reactions`` op)
    reaction_ver: int = 0


class ConversationPage(Struct):
    conversations: list[ConversationOut]
    total_unread: int
    next_before: str | None


class GroupHeadOut(Struct, omit_defaults=True):
    """A read-fan-out group: its timeline head, and the seq after which this member must
    pull its messages with ``history`` (earlier ones came through the inbox)."""

    conv_id: str
    last_seq: int
    from_seq: int
    #: the group's reaction version: pull ``reactions(after_ver=…)`` when it is ahead
    #: (omitted while 0, as before the group's first reaction)
    reaction_ver: int = 0


class SyncPage(Struct):
    events: list[Event]
    next_since: int
    head: int
    has_more: bool
    groups: list[GroupHeadOut] = []


class GroupOut(Struct):
    conv_id: str
    name: str
    avatar: str
    announcement: str
    owner_id: str
    join_policy: str
    mute_all: bool
    max_members: int
    member_count: int
    fanout: str  # "write" | "read"
    last_seq: int
    created_at: int
    dissolved: bool
    pin_policy: str = "admins"


class GroupChangeOut(Struct):
    group: GroupOut
    #: seq of the system entry the change appended (None when nothing changed)
    seq: int | None
    #: the actor's inbox seq for that entry (0 under read fan-out or when nothing changed)
    inbox_seq: int


class MemberOut(Struct):
    user_id: str
    role: str
    joined_seq: int
    muted_until: int


class MembersPage(Struct):
    members: list[MemberOut]
    next_after: str | None


class ReceiptsOut(Struct):
    conv_id: str
    seq: int
    read_count: int
    total: int
    #: who has read it; null for read-fan-out groups (counts only, see docs/protocol.md)
    readers: list[str] | None


class RecallOut(Struct):
    conv_id: str
    seq: int  # the recalled message
    recall_seq: int  # the "recall" entry appended to the timeline
    inbox_seq: int


class EditOut(Struct):
    conv_id: str
    seq: int  # the edited message
    edit_seq: int  # the "edit" entry appended to the timeline
    edited_at: int
    inbox_seq: int


class HideOut(Struct):
    conv_id: str
    seqs: list[int]  # the entries newly hidden, ascending ([] if all already were)
    unread: int
    total_unread: int
    #: the requesting device's inbox seq for the "hidden" event it stands for (0: nothing new)
    inbox_seq: int = 0


class HiddenMarker(Struct):
    """The ``data`` of a ``hidden`` event."""

    conv_id: str
    seqs: list[int]


class VersionOut(Struct):
    body: Raw | Any  # the body as it was
    created_at: int  # when this version was written (the send, or the edit that wrote it)


class VersionsOut(Struct):
    conv_id: str
    seq: int
    #: earlier versions, oldest first; the current one is the message itself
    versions: list[VersionOut]


class ErrorOut(Struct):
    code: str
    message: str


class ForwardResult(Struct, omit_defaults=True):
    """One target of a ``forward``: the copies sent, in order; ``error`` if it stopped early."""

    client_msg_id: str
    sent: list[SendAck]
    to: str | None = None
    conv_id: str | None = None
    error: ErrorOut | None = None


class ForwardOut(Struct):
    results: list[ForwardResult]


class ReactOut(Struct):
    conv_id: str
    seq: int
    msg_id: str
    #: false: nothing changed (the reaction was there already, or was not)
    changed: bool
    reactions: list[ReactionOut]
    #: the conversation's reaction version after the change
    ver: int
    #: the requesting user's inbox seq of the ``reaction`` event (0: none, read fan-out or no change)
    inbox_seq: int = 0


class ReactionCountOut(Struct):
    emoji: str
    count: int


class ReactionEvent(Struct):
    """``data`` of a ``reaction`` event or notice: who changed what, and all the message's
    counts after it (absolute, so the latest wins whatever was missed before)."""

    conv_id: str
    seq: int
    msg_id: str
    user_id: str
    emoji: str
    op: Literal["add", "remove"]
    counts: list[ReactionCountOut]
    ver: int


class MessageReactionsOut(Struct):
    seq: int
    msg_id: str
    reactions: list[ReactionOut]


class ReactionsPage(Struct):
    conv_id: str
    messages: list[MessageReactionsOut]
    #: pass as ``after_ver`` next time
    ver: int
    has_more: bool


class ReactorsPage(Struct):
    users: list[str]
    next_after: str | None


class PinOut(Struct):
    conv_id: str
    seq: int
    pinned: bool
    #: seq of the system entry appended (None: nothing changed)
    entry_seq: int | None
    #: the requesting user's inbox seq of that entry (0 under read fan-out or no change)
    inbox_seq: int


class HistoryPage(Struct):
    messages: list[MessageOut]
    has_more: bool


class MediaOut(Struct):
    """An upload (``POST /api/v1/media``)."""

    media_id: str
    kind: str  # "image" | "video" | "file"
    mime: str
    size: int
    name: str
    sha256: str
    width: int | None
    height: int | None
    thumbnail: bool
    created_at: int


class SearchHit(Struct):
    message: MessageOut
    #: the searched text of the message (a text's text, a file's name)
    text: str
    #: [start, end) code-point offsets in ``text`` of each match of the query's terms
    highlights: list[tuple[int, int]]
    #: the neighbouring entries of the conversation the user can see (None at an edge)
    previous: MessageOut | None
    next: MessageOut | None


class SearchPage(Struct):
    hits: list[SearchHit]
    #: pass as ``before`` for the next (older) page; None when there is none
    next_before: str | None


class AuthOk(Struct):
    user_id: str
    device_id: str
    platform: str
    inbox_seq: int
    heartbeat_s: float
    idle_timeout_s: float
    max_frame_bytes: int
    server_time: int
    recall_limit_s: int = 120
    typing_interval_s: float = 3.0
    edit_window_s: int = 86_400


class FriendRequestOut(Struct):
    request_id: str
    from_id: str
    to_id: str
    message: str
    status: str  # "pending" | "accepted" | "rejected" | "canceled"
    created_at: int
    updated_at: int


class FriendOut(Struct):
    user: UserOut
    remark: str
    tags: list[str]
    since: int


class FriendsPage(Struct):
    friends: list[FriendOut]
    next_after: str | None


class FriendRequestsPage(Struct):
    requests: list[FriendRequestOut]
    next_before: str | None


class EdgeOut(Struct):
    user: UserOut
    since: int


class EdgesPage(Struct):
    users: list[EdgeOut]
    next_after: str | None


class RelationOut(Struct):
    user_id: str
    friend: bool
    following: bool
    followed_by: bool
    blocked: bool
    blocked_by: bool
    pending_request_id: str | None


class CountsOut(Struct):
    user_id: str
    friends: int
    followers: int
    following: int


class PrivacyOut(Struct):
    dm_policy: str
    presence: str


class PusherOut(Struct):
    """One registered pusher. Secrets of a subscription (p256dh, auth) are never echoed."""

    device_id: str
    kind: str
    created_at: int
    endpoint: str | None = None  # webpush
    token: str | None = None  # apns, fcm
    sandbox: bool = False  # apns
    app_id: str | None = None  # gateway
    pushkey: str | None = None  # gateway


class PushersOut(Struct):
    pushers: list[PusherOut]


class PusherRemoved(Struct):
    removed: bool


class PushKeyOut(Struct):
    """What a browser subscribes with: ``applicationServerKey`` (base64url, uncompressed P-256)."""

    vapid_public_key: str


class PushMuteOut(Struct):
    conv_id: str
    mute: str  # "mentions" | "all"


class PushSettingsOut(Struct):
    preview: bool
    time_zone: str
    dnd: str  # "HH:MM-HH:MM", or "" for none
    mutes: list[PushMuteOut]  # conversations not "off"


class PresenceOut(Struct):
    user_id: str
    status: str  # "online" | "away" | "offline"
    platforms: list[str]  # platforms with a device online (or away)
    last_seen: int | None = None


class PresencePage(Struct):
    presence: list[PresenceOut]


class ShopOut(Struct):
    shop_id: str
    name: str
    owner_id: str
    created_at: int


class AgentOut(Struct):
    shop_id: str
    user_id: str
    role: str  # "agent" | "admin"
    skills: list[str]
    capacity: int
    status: str  # what the agent set: online | busy | away | offline
    online: bool  # connected right now
    open_sessions: int


class ServiceSessionOut(Struct):
    session_id: str
    shop_id: str
    customer_id: str
    conv_id: str
    category: str
    status: str  # "queued" | "active" | "closed"
    agent_id: str | None
    queued_at: int
    assigned_at: int | None
    closed_at: int | None
    rating: int | None
    comment: str | None
    position: int | None  # 1-based place in the queue while queued


class DashboardOut(Struct):
    shop_id: str
    queued: int
    queued_by_category: dict[str, int]
    longest_wait_ms: int
    active: int
    closed_today: int
    avg_rating: float | None
    agents: list[AgentOut]


class RelationEvent(Struct, omit_defaults=True):
    """Payload of a ``relation`` inbox event; ``user_id`` is the other party."""

    event: str
    user_id: str
    request_id: str | None = None
    message: str | None = None


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
    deletion_cancelled: bool = False  # this login cancelled the account's pending deletion


class SendBody(Struct, forbid_unknown_fields=True):
    kind: str
    body: Raw
    client_msg_id: ClientMsgId
    to: IdStr | None = None
    conv_id: IdStr | None = None
    mentions: Mentions | None = None
    mention_all: bool = False
    shop_id: IdStr | None = None
    category: Category | None = None
    reply_to: Seq | None = None


class DeviceOut(Struct):
    device_id: str
    platform: str
    name: str
    created_at: int
    last_seen_at: int
    online: bool
    current: bool


class Health(Struct, omit_defaults=True):
    """``GET /healthz``: ``status`` ok | stopping | fenced; ``reason`` only when fenced (503)."""

    status: str
    node_id: int
    version: str
    uptime_s: float
    connections: int
    reason: str | None = None


class Readiness(Struct):
    """``GET /readyz``: ``status`` ready (200) or not_ready (503), and what keeps the node from
    taking users, by part: ``{"node" | "store" | "redis": problem}``, empty when ready."""

    status: str
    node_id: int
    version: str
    uptime_s: float
    connections: int
    problems: dict[str, str]


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


# --- HTTP query strings ----------------------------------------------------------------------


class UserQuery(Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=32)]


class MediaUploadQuery(Struct, forbid_unknown_fields=True):
    """``POST /api/v1/media?kind=&name=`` (the body is the raw bytes)."""

    kind: Literal["image", "video", "file"] = "file"
    name: Annotated[str, Meta(max_length=1024)] = ""


# --- administration replies -----------------------------------------------------------------


class AdminUserOut(Struct):
    user_id: str
    username: str
    display_name: str
    created_at: int
    admin: bool  # a server admin
    disabled_at: int | None  # set while the account is disabled


class AdminUserPage(Struct):
    users: list[AdminUserOut]
    next_after: str | None  # more after this id; None: the last page


class AdminDeviceOut(Struct):
    device_id: str
    platform: str
    name: str
    created_at: int
    last_seen_at: int


class AdminGroupOut(Struct):
    conv_id: str
    name: str
    role: str  # "owner" | "admin" | "member"


class AdminUserDetail(Struct):
    user: AdminUserOut
    devices: list[AdminDeviceOut]  # devices with a live session, most recently seen first
    groups: list[AdminGroupOut]  # groups the user is a member of now
    counts: CountsOut
    message_count: int  # messages the user sent (system and recall entries not counted)


class RevokedOut(Struct):
    revoked: int  # sessions ended


class ErasedOut(Struct):
    user_id: str
    entries: int  # entries of the account cleared
    groups: int  # groups it left (an owner's handed on or dissolved)
    blobs: int  # stored files deleted (uploads no one else used)


class DeletionOut(Struct):
    due_at: int | None  # ms: when the pending deletion runs; None: none pending


class AuditOut(Struct):
    id: str
    at: int  # ms since the epoch
    actor_id: str | None  # None: an operator on the host (`yim admin` on the store)
    action: str  # the op's name without "admin_": disable, enable, reset_password, revoke, set_role, ...
    target: str  # "user:<id>"
    detail: dict[str, Any]
    source: str  # "http <ip>", "ws <ip>" or "cli"


class AdminGroupPage(Struct):
    groups: list[GroupOut]
    next_after: str | None  # more after this id; None: the last page


class AuditPage(Struct):
    entries: list[AuditOut]  # newest first
    next_before: str | None


# --- data export (docs/protocol.md §19.7): HTTP only, the reply is a zip archive ----------------


class AdminExportQuery(Struct, forbid_unknown_fields=True):
    """``GET /api/v1/admin/users/{user_id}/export?reason=`` (written to the audit log)."""

    reason: AuditReason = ""


class MyExportQuery(Struct, forbid_unknown_fields=True):
    """``GET /api/v1/me/export`` takes no parameters."""


# --- report replies ----------------------------------------------------------------------------


class ReportOut(Struct):
    """What the reporter learns of their report."""

    report_id: str
    status: str  # "open" | "resolved"
    created_at: int
    duplicate: bool  # true: an open report of the same target by the same user, returned again


class MyReportOut(Struct):
    """One of the reporter's own reports: what they reported and its outcome, never who
    resolved it nor the admin's note."""

    report_id: str
    target: str  # "message" | "user"
    user_id: str  # the reported user: the user, or the message's sender
    conv_id: str | None  # a reported message: its conversation and seq
    seq: int | None
    category: str
    text: str
    created_at: int
    status: str  # "open" | "resolved"
    resolved_at: int | None
    outcome: str | None  # None while open; "action_taken" (recalled or disabled) | "no_action" (dismissed)


class MyReportPage(Struct):
    reports: list[MyReportOut]  # newest first
    next_before: str | None  # more before this id; None: the last page


class ReportedMessageOut(Struct):
    """The reported message as it was when reported (a snapshot: later edits and recalls do
    not change it)."""

    kind: str
    body: Raw
    created_at: int


class AdminReportOut(Struct):
    report_id: str
    reporter_id: str
    target: str  # "message" | "user"
    user_id: str  # the reported user: the user, or the message's sender
    conv_id: str | None  # a reported message: its conversation, seq and msg_id
    seq: int | None
    msg_id: str | None
    message: ReportedMessageOut | None
    category: str
    text: str
    created_at: int
    status: str  # "open" | "resolved"
    resolved_at: int | None
    resolved_by: str | None  # the admin (None while open, or resolved by an operator on the host)
    resolution: str | None  # "dismiss" | "recall" | "disable"
    note: str


class AdminReportPage(Struct):
    reports: list[AdminReportOut]  # newest first
    next_before: str | None  # more before this id; None: the last page


class ReportContextOut(Struct):
    """An entry around the reported message, as stored now."""

    seq: int
    sender_id: str
    kind: str
    body: Raw
    created_at: int
    recalled: bool


class AdminReportDetail(Struct):
    report: AdminReportOut
    context: list[ReportContextOut]  # the conversation's entries up to 3 before and after the message


class AdminResolveOut(Struct):
    report: AdminReportOut
    closed: int  # open reports of the same target it resolved, this one included
    recall_seq: int | None  # the "recall" entry appended (recall; None if the message was recalled already)
    revoked: int  # sessions ended (disable)


class ShopPage(Struct):
    shops: list[ShopOut]
    next_offset: int | None  # the offset of the next page; None: the last page
