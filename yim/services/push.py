"""Push: the pusher ops, and the worker that wakes devices that are not connected.

Design (docs/architecture.md, "Push"): the send path writes nothing for push. Each pusher
carries a cursor, ``pushed_seq``, in its user's inbox; the pushers whose user's inbox head
moved past it are the work. Every node's worker claims a bounded batch of that work with a
lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two nodes never take the same pusher),
reads the device's new entries, decides (yim/push/rules.py), sends through the providers,
and then advances the cursor and sets the collapse hold in one write. So a push is done
once per entry per device unless the node dies between a provider's answer and that write:
then the lease expires and the burst is sent again (the same collapse key, so the device
shows one notification).

Read-fan-out groups write no inbox entries, so each pusher also has a cursor per such group
(yim/storage/push.py): the claim takes a pusher whose groups have something due (the head,
or for a group muted to "mentions" — the default of these groups — the user's latest
mention), and the worker reads the group's latest entries past the cursor, collapses them
with the inbox entries, and moves every cursor in the same one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import msgspec

from yim.protocol import frames as f
from yim.protocol.errors import YimError
from yim.protocol.ids import parse_id
from yim.push.rules import (
    DEFAULT_MUTE,
    READ_FANOUT_MUTE,
    Entry,
    collapse,
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
from yim.push.types import Delivered, Failed, Gone, Retry
from yim.services.context import Context, Device
from yim.storage.push import GroupWork, PusherRec, PushPrefsRec, PushWork
from yim.storage.records import InboxEvent, MessageRec, SessionRec

if TYPE_CHECKING:  # the providers load httpx and h2: only a node with push enabled imports them
    from yim.push.providers import PushProviders

log = logging.getLogger("yim.push")

#: the most inbox entries one round reads for one device; a longer backlog takes more rounds.
#: Also the most entries of one read-fan-out group read per round: its latest ones, so the
#: count of a longer burst there says only these.
ENTRIES_PER_ROUND = 500


def _now_ms() -> int:
    return int(time.time() * 1000)


def pusher_out(p: PusherRec) -> f.PusherOut:
    target = target_from_json(p.kind, p.target)
    out = f.PusherOut(device_id=p.device_id, kind=p.kind, created_at=p.created_at)
    match p.kind:
        case "webpush":
            out.endpoint = getattr(target, "endpoint", None)
        case "apns":
            out.token = getattr(target, "device_token", None)
            out.sandbox = bool(getattr(target, "sandbox", False))
        case "fcm":
            out.token = getattr(target, "token", None)
        case "gateway":
            out.app_id = getattr(target, "app_id", None)
            out.pushkey = getattr(target, "pushkey", None)
    return out


async def pusher_set(node: Context, session: SessionRec, req: f.PusherSet, origin: Device | None = None) -> f.PusherOut:
    target = pusher_target(req, allow_http=node.push.allow_http)
    if not node.push.accepts(req.kind):
        raise YimError("push_unavailable", f"this server sends no {req.kind} pushes")
    rec = await node.store.push.set_pusher(session.user_id, session.device_id, req.kind, target_json(target), _now_ms())
    return pusher_out(rec)


async def pushers(node: Context, session: SessionRec, req: f.Pushers, origin: Device | None = None) -> f.PushersOut:
    return f.PushersOut(pushers=[pusher_out(p) for p in await node.store.push.pushers(session.user_id)])


async def pusher_remove(
    node: Context, session: SessionRec, req: f.PusherRemove, origin: Device | None = None
) -> f.PusherRemoved:
    device_id = req.device_id if req.device_id is not None else session.device_id
    return f.PusherRemoved(removed=await node.store.push.remove_pusher(session.user_id, device_id))


async def push_key(node: Context, session: SessionRec, req: f.PushKey, origin: Device | None = None) -> f.PushKeyOut:
    key = node.push.vapid_public_key
    if key is None:
        raise YimError("push_unavailable", "this server sends no Web Push")
    return f.PushKeyOut(vapid_public_key=key)


async def push_settings_get(
    node: Context, session: SessionRec, req: f.PushSettingsGet, origin: Device | None = None
) -> f.PushSettingsOut:
    return _settings_out(await node.store.push.prefs(session.user_id))


async def push_settings_set(
    node: Context, session: SessionRec, req: f.PushSettingsSet, origin: Device | None = None
) -> f.PushSettingsOut:
    now = await node.store.push.prefs(session.user_id)
    preview = req.preview if req.preview is not None else now.preview
    time_zone = req.time_zone if req.time_zone is not None else now.time_zone
    zone(time_zone)  # a name the worker could not use is refused here, not met later
    dnd = parse_dnd(req.dnd) if req.dnd is not None else now.dnd
    await node.store.push.set_prefs(session.user_id, preview, time_zone, dnd)
    return _settings_out(await node.store.push.prefs(session.user_id))


async def push_mute(
    node: Context, session: SessionRec, req: f.PushMute, origin: Device | None = None
) -> f.PushSettingsOut:
    conv_id = parse_id(req.conv_id, "conversation")
    if session.user_id not in await node.rosters.members(conv_id):
        raise YimError("not_member", f"you are not a member of conversation {conv_id}")
    await node.store.push.set_mute(session.user_id, conv_id, req.mute)
    return _settings_out(await node.store.push.prefs(session.user_id))


def _settings_out(p: PushPrefsRec) -> f.PushSettingsOut:
    return f.PushSettingsOut(
        preview=p.preview,
        time_zone=p.time_zone,
        dnd=format_dnd(p.dnd),
        mutes=[f.PushMuteOut(conv_id=str(c), mute=m) for c, m in sorted(p.mutes.items())],
    )


class _Body(msgspec.Struct):
    text: str | None = None
    emoji: str | None = None
    name: str | None = None


class _WireMessage(msgspec.Struct):
    """What a store may hand over instead of a MessageRec: the message's wire payload."""

    msg_id: str
    sender_id: str
    kind: str
    body: msgspec.Raw
    recalled: bool = False
    mentions: list[str | int] = []
    mention_all: bool = False


_body = msgspec.json.Decoder(_Body)
_wire = msgspec.json.Decoder(_WireMessage)


def _preview(body: bytes) -> str | None:
    try:
        b = _body.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return b.text if b.text is not None else b.emoji if b.emoji is not None else b.name


def message_entry(seq: int, m: MessageRec, user_id: int) -> Entry:
    """A message as the push rules see it (``seq``: its inbox seq, or its timeline seq in a
    read-fan-out group)."""
    return Entry(
        seq=seq,
        type="message",
        conv_id=m.conv_id,
        msg_id=m.msg_id,
        sender_id=m.sender_id,
        kind=m.kind,
        text=_preview(m.body),
        mentioned=m.mention_all or user_id in m.mentions,
        recalled=m.recalled,
    )


def entry_of(ev: InboxEvent, user_id: int) -> Entry:
    """The entry as the push rules see it, from a MessageRec or the wire payload of one."""
    m = ev.message
    if m is not None:
        return msgspec.structs.replace(message_entry(ev.seq, m, user_id), type=ev.type, conv_id=ev.conv_id)
    if ev.type == "message" and ev.data is not None:
        w = _wire.decode(ev.data)
        return Entry(
            seq=ev.seq,
            type=ev.type,
            conv_id=ev.conv_id,
            msg_id=int(w.msg_id),
            sender_id=int(w.sender_id),
            kind=w.kind,
            text=_preview(bytes(w.body)),
            mentioned=w.mention_all or user_id in {int(x) for x in w.mentions},
            recalled=w.recalled,
        )
    return Entry(seq=ev.seq, type=ev.type, conv_id=ev.conv_id)


class PushWorker:
    """One per node: claims push work in bounded rounds and sends it. Memory: at most
    ``push_batch`` claimed pushers, each with at most ENTRIES_PER_ROUND entries, per round."""

    def __init__(self, node: Context, providers: PushProviders | None) -> None:
        self._node = node
        self.providers = providers
        s = node.settings
        self._allow_http = s.push_webpush_allow_http
        self._task: asyncio.Task[None] | None = None

    @property
    def vapid_public_key(self) -> str | None:
        vapid = self.providers.vapid if self.providers is not None else None
        return vapid.public_key if vapid is not None else None

    @property
    def allow_http(self) -> bool:
        return self._allow_http

    def accepts(self, kind: str) -> bool:
        p = self.providers
        if p is None:
            return False
        return {"webpush": p.webpush, "apns": p.apns, "fcm": p.fcm, "gateway": p.gateway}.get(kind) is not None

    def start(self) -> None:
        if self.providers is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.providers is not None:
            await self.providers.close()

    async def _run(self) -> None:
        s = self._node.settings
        while True:
            try:
                claimed = await self.round()
            except Exception:
                # the store is away (a restart, a failover): the leases hold the work meanwhile
                log.warning("push round failed; trying again in %.1f s", s.push_poll_s, exc_info=True)
                claimed = 0
            if claimed < s.push_batch:  # a full batch means more is waiting: go on at once
                await asyncio.sleep(s.push_poll_s)

    async def round(self) -> int:
        """Claim one batch and serve it; the number claimed."""
        s = self._node.settings
        work = await self._node.store.push.claim(_now_ms(), int(s.push_lease_s * 1000), s.push_batch, READ_FANOUT_MUTE)
        if work:
            await asyncio.gather(*(self._serve(w) for w in work), return_exceptions=True)
        return len(work)

    async def _connected(self, p: PusherRec) -> bool:
        """Is the device connected, here or (cluster mode) to another node? Then it gets its
        entries live and needs no push."""
        node = self._node
        if p.device_id in node.hub.devices_of(p.user_id):
            return True
        cluster = node.cluster
        if cluster is None:
            return False
        try:
            return await cluster.device_present(p.user_id, p.device_id)
        except Exception as exc:
            # Redis away: push. A connected device woken needlessly costs one notification;
            # a device not woken could miss its messages for hours.
            cluster.unavailable(exc)
            return False

    async def _group_entries(self, user_id: int, g: GroupWork) -> list[Entry]:
        """The latest entries (at most ENTRIES_PER_ROUND) of a read-fan-out group past the
        device's cursor, up to the head the claim saw, that would wake the device."""
        after = max(g.pushed_seq, g.head - ENTRIES_PER_ROUND)
        try:
            page, _more = await self._node.store.history(user_id, g.conv_id, None, after, g.head - after)
        except YimError:
            return []  # left the group since the claim: nothing to push, the cursor moves on
        entries = (message_entry(m.seq, m, user_id) for m in page if m.seq <= g.head)
        return [e for e in entries if notifies(e, user_id) and passes_mute(e, g.mute)]

    async def _serve(self, w: PushWork) -> None:
        node, s, p = self._node, self._node.settings, w.pusher
        store = node.store.push
        groups_done = [(g.conv_id, g.head) for g in w.groups]
        try:
            if await self._connected(p):
                await store.advance(p.user_id, p.device_id, p.created_at, w.head, 0, groups_done)
                return
            events: list[InboxEvent] = []
            if w.head > p.pushed_seq:
                limit = min(w.head - p.pushed_seq, ENTRIES_PER_ROUND)
                events, _head = await node.store.sync(p.user_id, p.pushed_seq, limit)
            upto = events[-1].seq if events else w.head
            prefs = await store.prefs(p.user_id)
            wanted = [
                e
                for e in (entry_of(ev, p.user_id) for ev in events)
                if notifies(e, p.user_id) and passes_mute(e, prefs.mutes.get(e.conv_id, DEFAULT_MUTE))
            ]
            for g in w.groups:
                wanted += await self._group_entries(p.user_id, g)
            if not wanted:
                await store.advance(p.user_id, p.device_id, p.created_at, upto, 0, groups_done)
                return
            now = _now_ms()
            quiet = quiet_until(now, prefs.time_zone, prefs.dnd)
            if quiet is not None:
                # Held, not dropped: pushed together when the quiet hours end. Looked at
                # again meanwhile, so that a change of the settings takes effect.
                hold = min(quiet, now + int(s.push_dnd_recheck_s * 1000))
                await store.advance(p.user_id, p.device_id, p.created_at, p.pushed_seq, hold)
                return
            bursts = collapse(wanted)
            _rows, badge = await node.store.conversations(p.user_id, None, 1)
            users = await node.store.users_by_ids(sorted({b.latest.sender_id for b in bursts}))
            target = target_from_json(p.kind, p.target)
            assert self.providers is not None
            for b in bursts:
                sender = users.get(b.latest.sender_id)
                name = (sender.display_name or sender.username) if sender is not None else "Someone"
                outcome = await self.providers.send(
                    target, notification(b, name, badge, preview=s.push_preview and prefs.preview)
                )
                match outcome:
                    case Gone(reason=reason):
                        log.info("pusher of device %s of user %d is gone: %s", p.device_id, p.user_id, reason)
                        await store.remove_pusher(p.user_id, p.device_id, p.target)
                        node.metrics.pushes.labels(p.kind, "gone").inc()
                        return
                    case Retry(after=after):
                        delay = retry_delay(p.failures, after, s.push_retry_s, s.push_retry_max_s)
                        await store.back_off(p.user_id, p.device_id, p.created_at, _now_ms() + int(delay * 1000))
                        node.metrics.pushes.labels(p.kind, "retry").inc()
                        return
                    case Failed(reason=reason):
                        # permanent for this push: retrying cannot help, so it is dropped
                        log.warning("push to device %s of user %d failed: %s", p.device_id, p.user_id, reason)
                        node.metrics.pushes.labels(p.kind, "failed").inc()
                    case Delivered():
                        node.metrics.pushes.labels(p.kind, "delivered").inc()
            hold = _now_ms() + int(s.push_collapse_s * 1000)
            await store.advance(p.user_id, p.device_id, p.created_at, upto, hold, groups_done)
        except Exception:
            # the lease expires and the work is taken again
            log.warning("push to device %s of user %d failed", p.device_id, p.user_id, exc_info=True)
