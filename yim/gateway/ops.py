"""The request ops served the same way over WebSocket and HTTP: op struct -> action.

Every action has the signature ``(node, session, request, origin_connection) -> result``
(``Action``: the node as the services' ``Context``, the origin as a ``Device``);
the WebSocket loop and the HTTP routes are thin adapters over this table. ``send``,
``ack``, ``ping`` and ``auth`` are handled by the WebSocket loop itself (pipelining,
connection state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from yim.protocol import frames as f
from yim.services import (
    admin,
    conversations,
    erase,
    groups,
    messages,
    presence,
    push,
    reactions,
    relations,
    reports,
    service,
    sync,
    typing,
    users,
)
from yim.services import search as search_service
from yim.services.context import Context, Device
from yim.storage.records import SessionRec

#: (node, session, request struct, origin connection or None for HTTP) -> the reply struct
Action = Callable[[Context, SessionRec, Any, Device | None], Awaitable[Any]]


async def _sync(node: Context, session: SessionRec, req: f.Sync, origin: Device | None = None) -> f.SyncPage:
    return await sync.sync(node, session, req.since, req.limit)


async def _read(node: Context, session: SessionRec, req: f.Read, origin: Device | None = None) -> f.ReadResult:
    return await conversations.mark_read(node, session, req.conv_id, req.seq, origin)


async def _history(node: Context, session: SessionRec, req: f.History, origin: Device | None = None) -> f.HistoryPage:
    return await conversations.history(node, session, req.conv_id, req.before, req.after, req.limit)


async def _conversations(
    node: Context, session: SessionRec, req: f.Conversations, origin: Device | None = None
) -> f.ConversationPage:
    return await conversations.list_conversations(node, session, req.before, req.limit)


OPS: dict[type, Action] = {
    f.Sync: _sync,
    f.Read: _read,
    f.History: _history,
    f.Conversations: _conversations,
    f.Conversation: conversations.conversation,
    f.Users: users.users,
    f.ShopInfo: service.shop_info,
    f.Recall: messages.recall,
    f.Edit: messages.edit,
    f.MessageVersions: messages.versions,
    f.Hide: messages.hide,
    f.Forward: messages.forward,
    f.Receipts: conversations.receipts,
    f.Typing: typing.typing,
    f.GroupCreate: groups.create_group,
    f.GroupInfo: groups.info,
    f.GroupMembers: groups.members,
    f.GroupInvite: groups.invite,
    f.GroupJoin: groups.join,
    f.GroupLeave: groups.leave,
    f.GroupRemove: groups.remove,
    f.GroupRole: groups.set_role,
    f.GroupMute: groups.mute,
    f.GroupUpdate: groups.update,
    f.GroupDissolve: groups.dissolve,
    f.React: reactions.react,
    f.Reactions: reactions.reactions,
    f.Reactors: reactions.reactors,
    f.Pin: reactions.pin,
    f.Unpin: reactions.unpin,
    f.FriendRequest: relations.friend_request,
    f.FriendAccept: relations.friend_accept,
    f.FriendReject: relations.friend_reject,
    f.FriendCancel: relations.friend_cancel,
    f.FriendDelete: relations.friend_delete,
    f.FriendUpdate: relations.friend_update,
    f.Friends: relations.friends,
    f.FriendRequests: relations.friend_requests,
    f.Follow: relations.follow,
    f.Unfollow: relations.unfollow,
    f.Followers: relations.followers,
    f.Following: relations.following,
    f.Block: relations.block,
    f.Unblock: relations.unblock,
    f.Blocks: relations.blocks,
    f.Relation: relations.relation,
    f.RelationCountsReq: relations.counts,
    f.PrivacyGet: relations.privacy_get,
    f.PrivacySet: relations.privacy_set,
    f.PresenceSet: presence.presence_set,
    f.PresenceQuery: presence.presence_query,
    f.PusherSet: push.pusher_set,
    f.Pushers: push.pushers,
    f.PusherRemove: push.pusher_remove,
    f.PushKey: push.push_key,
    f.PushSettingsGet: push.push_settings_get,
    f.PushSettingsSet: push.push_settings_set,
    f.PushMute: push.push_mute,
    f.ShopCreate: service.shop_create,
    f.Shops: service.shops,
    f.ShopAgentSet: service.agent_set,
    f.ShopAgentRemove: service.agent_remove,
    f.ShopAgents: service.agents,
    f.AgentStatus: service.agent_status,
    f.ServiceSessions: service.sessions,
    f.ServiceStatus: service.status,
    f.ServiceTransfer: service.transfer,
    f.ServiceClose: service.close,
    f.ServiceRate: service.rate,
    f.ShopDashboard: service.dashboard,
    f.Search: search_service.search,
    f.AdminUsers: admin.users,
    f.AdminUser: admin.user,
    f.AdminDisable: admin.disable,
    f.AdminEnable: admin.enable,
    f.AdminResetPassword: admin.reset_password,
    f.AdminRevoke: admin.revoke,
    f.AdminSetRole: admin.set_role,
    f.AdminAudit: admin.audit,
    f.AdminGroups: admin.groups,
    f.AdminGroup: admin.group,
    f.AdminGroupDissolve: admin.group_dissolve,
    f.AdminGroupTransfer: admin.group_transfer,
    f.AdminShopCreate: admin.shop_create,
    f.AdminShopAgentSet: admin.shop_agent_set,
    f.PasswordChange: admin.password_change,
    f.ProfileSet: admin.profile_set,
    f.AdminErase: erase.admin_erase,
    f.AccountDelete: erase.account_delete,
    f.AccountDeletion: erase.account_deletion,
    f.Report: reports.report,
    f.MyReports: reports.my_reports,
    f.AdminReports: reports.reports,
    f.AdminReport: reports.report_detail,
    f.AdminResolve: reports.resolve,
    f.ShopSearch: service.shop_search,
}
