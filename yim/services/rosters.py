"""Member lists of conversations kept in memory, for pushes that are not inbox events:
read-fan-out group messages and typing notices.

A roster is loaded once from the store and then kept current from the system entries
that change membership (created / invited / joined / left / removed / dissolved), which
every node sees in timeline order. Memory: one ``set`` of ints per cached conversation
(~60 bytes per member: a 100,000-member group costs ~6 MB); at most
``roster_cache_groups`` conversations are cached, least recently used evicted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.storage.records import MessageRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device

log = logging.getLogger("yim.rosters")


class _SystemBody(msgspec.Struct):
    event: str
    users: list[str] = []


_system_decoder = msgspec.json.Decoder(_SystemBody)


class Rosters:
    def __init__(self, node: Context, max_groups: int) -> None:
        self._node = node
        self._max = max_groups
        self._members: OrderedDict[int, set[int]] = OrderedDict()
        self._loading: dict[int, asyncio.Future[set[int]]] = {}

    def cached(self, conv_id: int) -> set[int] | None:
        members = self._members.get(conv_id)
        if members is not None:
            self._members.move_to_end(conv_id)
        return members

    def _store(self, conv_id: int, members: set[int]) -> None:
        self._members[conv_id] = members
        self._members.move_to_end(conv_id)
        while len(self._members) > self._max:
            self._members.popitem(last=False)

    async def members(self, conv_id: int) -> set[int]:
        cached = self.cached(conv_id)
        if cached is not None:
            return cached
        pending = self._loading.get(conv_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[conv_id] = pending
            try:
                members = set(await self._node.store.member_ids(conv_id))
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: the caller below re-raises it
                raise
            finally:
                self._loading.pop(conv_id, None)
            # A change applied while loading is already in the store's answer.
            self._store(conv_id, members)
            pending.set_result(members)
            return members
        return await asyncio.shield(pending)

    def forget(self, conv_id: int | None = None) -> None:
        """Drop a cached roster (its membership changed on another node), or all of them
        (``None``: changes may have been missed); reloaded on use."""
        if conv_id is None:
            self._members.clear()
        else:
            self._members.pop(conv_id, None)

    def invalidate(self, conv_id: int) -> None:
        """Forget a roster whose membership changed outside system entries (customer service
        assigns and releases agents); the next use reloads it from the store."""
        self._members.pop(conv_id, None)

    def apply(self, entry: MessageRec) -> None:
        """Keep a cached roster current from a membership system entry."""
        if entry.kind != "system":
            return
        try:
            body = _system_decoder.decode(entry.body)
        except msgspec.DecodeError:
            return
        users = {int(u) for u in body.users}
        if body.event == "created":
            self._store(entry.conv_id, users)
            return
        if body.event == "dissolved":
            self._members.pop(entry.conv_id, None)
            return
        members = self._members.get(entry.conv_id)
        if members is None:
            return
        if body.event in ("invited", "joined"):
            members |= users
        elif body.event in ("left", "removed"):
            members -= users

    def push_notice(
        self,
        conv_id: int,
        type_: str,
        payload_json: bytes,
        origin: Device | None = None,
        skip: set[int] | None = None,
    ) -> None:
        """Push a notice to the online members of a conversation, in call order."""
        members = self.cached(conv_id)
        if members is not None and conv_id not in self._loading:
            self._node.bus.publish_notice(members, type_, payload_json, origin, skip)
            return
        # Cold roster: load it first. Notices queued meanwhile wait on the same load and
        # are pushed in the order they were queued (tasks wake in order of their await).
        asyncio.get_running_loop().create_task(self._push_after_load(conv_id, type_, payload_json, origin, skip))

    async def _push_after_load(
        self, conv_id: int, type_: str, payload_json: bytes, origin: Device | None, skip: set[int] | None
    ) -> None:
        try:
            members = await self.members(conv_id)
        except YimError as exc:  # the store is away: an expected failure, one line
            log.warning("members of %d not loaded (%s); devices will catch up by pulling", conv_id, exc.message)
            return
        except Exception:
            log.exception("loading the members of %d failed; devices will catch up by pulling", conv_id)
            return
        self._node.bus.publish_notice(members, type_, payload_json, origin, skip)
