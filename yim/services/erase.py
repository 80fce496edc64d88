"""Erasing accounts: an admin's ``admin_erase``, a user's own ``account_delete`` (run after
the grace period by :class:`ErasureSweeper` on whichever node claims it first), and the
steps both take (docs/protocol.md §19.8, docs/operations.md §8.5).

The store's first step erases the account itself in one transaction with its audit row
(yim/storage/erase.py); the steps here then clear what it left, each through the store's
own actions: leaving each group as a member leaves (an owner first hands the group to the
admin who joined first, else the member who joined first; alone, they dissolve it) after
taking back its reactions there, handing each shop it owns to the shop's admin agent added
first (none: the shop is closed), leaving the shops it serves as an agent, clearing its
entries conversation by conversation, and deleting its uploads no one else uses. Every step
may run again (a node that dies half-way leaves the erasure to be taken again), so none of
them counts on having run only once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from yim.protocol import frames as f
from yim.protocol.close import CLOSE_DISABLED
from yim.protocol.errors import YimError
from yim.services.admin import actor_and_user, audit_entry
from yim.services.context import REQUEST_SOURCE
from yim.services.groups import changed
from yim.services.reactions import publish_change
from yim.storage.erase import ErasureWork
from yim.storage.records import SessionRec
from yim.storage.rules import erase as rules

if TYPE_CHECKING:
    from yim.services.context import Context, Device

log = logging.getLogger(__name__)

#: members read per page when an owner's successor is chosen
_MEMBER_PAGE = 1000
#: a group step that loses a race (a member left meanwhile) is tried again, this often at most
_GROUP_ATTEMPTS = 3
#: a claimed erasure not finished after this long is taken again (its node died half-way)
STALE_CLAIM_MS = 10 * 60 * 1000
#: due deletions one sweep takes
_SWEEP_BATCH = 20


def _now() -> int:
    return int(time.time() * 1000)


async def _members(node: Context, conv_id: int, viewer: int) -> list[tuple[int, str, int]]:
    out: list[tuple[int, str, int]] = []
    after = 0
    while True:  # bounded: each page moves past its last member
        page = await node.store.group_members(conv_id, viewer, after, _MEMBER_PAGE)
        out += [(m.user_id, m.role, m.joined_seq) for m in page]
        if len(page) < _MEMBER_PAGE:
            return out
        after = page[-1].user_id


async def _leave(node: Context, user_id: int, conv_id: int) -> bool:
    """Take the erased user out of one group, as they would leave it themself."""
    for attempt in range(_GROUP_ATTEMPTS):
        try:
            group = await node.store.group_info(conv_id, user_id)
            if group.owner_id == user_id:
                heir = rules.successor(user_id, await _members(node, conv_id, user_id))
                if heir is None:
                    await changed(
                        node, await node.store.dissolve_group(conv_id, user_id, node.ids.next_id(), _now()), None
                    )
                    return True
                change = await node.store.set_role(conv_id, user_id, heir, "owner", node.ids.next_id(), _now())
                await changed(node, change, None)
            await changed(
                node, await node.store.remove_member(conv_id, user_id, user_id, node.ids.next_id(), _now()), None
            )
            return True
        except YimError as exc:
            if exc.code in ("not_found", "group_dissolved", "not_member"):
                return False  # gone already (a step run again, or the group ended meanwhile)
            if attempt == _GROUP_ATTEMPTS - 1:
                raise
    return False


async def _unreact(node: Context, user_id: int, conv_id: int) -> None:
    """Take back the user's reactions in one conversation, as they would (before leaving its
    group: a reaction is taken back by a member). One that cannot be (a group left before
    the erasure) stays, naming an id that no longer resolves."""
    for seq, emoji in await node.store.erase.reactions_by(user_id, conv_id):
        try:
            change = await node.store.reactions.react(
                conv_id, user_id, seq, emoji, False, _now(), node.settings.reactions_per_user_max
            )
        except YimError as exc:
            log.info("reaction %s on %d/%d of erased user %d stays: %s", emoji, conv_id, seq, user_id, exc.message)
            continue
        publish_change(node, conv_id, change, None)


async def _release_shops(node: Context, user_id: int) -> None:
    """Hand each shop the erased user owns to its longest-serving other admin agent, else
    close it (its customers' open sessions end, and their next message is refused with
    ``shop_closed`` rather than queued for no one)."""
    for shop_id in await node.store.erase.shops_owned(user_id):
        _owner, events = await node.store.erase.release_shop(user_id, shop_id, _now())
        node.service.publish(events, None)


async def _leave_shops(node: Context, user_id: int) -> None:
    """Take the erased user off every shop's agents, as the shop's owner would (their open
    service sessions go back to the queue or to another agent); shops they owned have been
    handed over (or closed, leaving no agents) by :func:`_release_shops` first."""
    for shop in await node.store.service.shops_of(user_id):
        if shop.owner_id == user_id:
            continue  # a shop closed meanwhile by another run: it has no agents left
        try:
            events = await node.store.service.remove_agent(shop.id, shop.owner_id, user_id, _now())
        except YimError as exc:
            if exc.code != "not_found":  # removed meanwhile (or by an earlier run of this step)
                raise
            continue
        node.service.publish(events, None)


async def clear(node: Context, work: ErasureWork) -> f.ErasedOut:
    """Every step after the account's own erasure; safe to run again."""
    node.accounts.sessions_ended(work.user_id, work.revoked, "account erased", CLOSE_DISABLED)
    for conv_id in work.convs:
        await _unreact(node, work.user_id, conv_id)
    groups = 0
    for conv_id, _role in work.groups:
        groups += await _leave(node, work.user_id, conv_id)
    await _release_shops(node, work.user_id)
    await _leave_shops(node, work.user_id)
    entries = 0
    for conv_id in work.convs:
        entries += await node.store.erase.erase_messages(work.user_id, conv_id, work.mode)
    keys = await node.store.erase.erase_media(work.user_id)
    for key in keys:
        await node.media.blobs.delete(key)
    await node.store.erase.finish(work.user_id, _now())
    return f.ErasedOut(user_id=str(work.user_id), entries=entries, groups=groups, blobs=len(keys))


async def admin_erase(
    node: Context, session: SessionRec | None, req: f.AdminErase, origin: Device | None = None
) -> f.ErasedOut:
    """Erase an account now: it cannot log in or be found, its profile is blank, its entries
    are cleared per ``erase_messages``, its unshared media are deleted."""
    actor, user_id = actor_and_user(session, req.user_id)
    mode = node.settings.erase_messages
    entry = audit_entry("erase", f"user:{user_id}", mode=mode, reason=req.reason)
    work = await node.store.erase.erase_account(actor, user_id, mode, entry.at, entry)
    # Shielded: an admin whose request goes away (a closed tab, a proxy's timeout) does not
    # stop the clearing half-way; it finishes on this node, or a stale claim is taken again.
    return await asyncio.shield(clear(node, work))


async def account_delete(
    node: Context, session: SessionRec, req: f.AccountDelete, origin: Device | None = None
) -> f.DeletionOut:
    """The user's own deletion: the password must match; it runs after ``delete_grace_s``,
    unless the account logs in before then."""
    found = await node.store.users_by_ids([session.user_id])
    me = found.get(session.user_id)
    if me is None or not await node.accounts.check_password(me.password_hash, req.password):
        raise YimError("wrong_password", "the password is not this account's")
    now = _now()
    due = await node.store.erase.request_deletion(
        session.user_id, node.settings.erase_messages, now, now + int(node.settings.delete_grace_s * 1000)
    )
    return f.DeletionOut(due_at=due)


async def account_deletion(
    node: Context, session: SessionRec, req: f.AccountDeletion, origin: Device | None = None
) -> f.DeletionOut:
    return f.DeletionOut(due_at=await node.store.erase.pending_deletion(session.user_id))


async def sweep_once(node: Context) -> int:
    """Run the deletions that are due (and erasures a dead node left half-way); how many."""
    now = _now()
    entry = audit_entry("delete", "", mode=node.settings.erase_messages)
    works = await node.store.erase.claim_due(now, now - STALE_CLAIM_MS, _SWEEP_BATCH, entry)
    for work in works:
        await clear(node, work)
    return len(works)


class ErasureSweeper:
    """Each node looks for due deletions every ``erase_sweep_s``; the store hands each one to
    exactly one node."""

    def __init__(self, node: Context) -> None:
        self._node = node
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _forever(self) -> None:
        REQUEST_SOURCE.set("scheduled")  # the audit row's source (this task's own context)
        while True:
            await asyncio.sleep(self._node.settings.erase_sweep_s)
            try:
                while await sweep_once(self._node) == _SWEEP_BATCH:
                    pass  # more are due: take the next batch now (each one shrinks what is due)
            except YimError as exc:  # the store is away: the next sweep tries again
                log.info("account deletions not run: %s", exc.message)
            except Exception:
                log.exception("running account deletions failed")
