"""The reply's quote is checked and taken inside the send's own transaction, on both stores
(docs/architecture.md §2.1): a join or a recall queued just before a reply is seen by it.
Each case submits the two writes back to back, without waiting in between, so they reach
the store's writer in that order (usually in one batch) — deterministic, unlike a race of
clients."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.base import Store
from yim.storage.records import CreateGroupCmd, UserRec

from .test_store_parity import T0, _text, stores

__all__ = ["stores"]  # the fixture of tests/test_store_parity.py, used here


async def _group(s: Store) -> tuple[int, int]:
    for i, name in enumerate(["alice", "bob", "carol"], start=1):
        await s.create_user(UserRec(i, name, name, "h", T0))
    group = await s.create_group(
        CreateGroupCmd(
            conv_id=3000, msg_id=3001, owner_id=1, member_ids=[2], name="g", announcement="",
            avatar="", join_policy="open", max_members=10, threshold=100, created_at=T0 + 3000,
        )
    )  # fmt: skip
    gid = group.group.conv_id
    old = await s.send_message(_text(3002, 1, "before carol", conv_id=gid))
    return gid, old.message.seq


async def _race(s: Store) -> None:
    gid, old = await _group(s)
    # Carol joins, and bob's reply to a message from before her join is queued right behind.
    join = asyncio.ensure_future(s.add_members(gid, 3, [3], "join", 3004, T0 + 3004, 100))
    await asyncio.sleep(0)  # the join's coroutine runs up to its submission to the writer
    reply = s.send_message(_text(3006, 2, "yes", conv_id=gid, reply_to=old))
    await join
    body = msgspec.json.decode((await reply).message.body)
    assert body["quote"] == {"seq": old, "withheld": True}  # carol may not see "before carol"

    # A recall queued right before a reply to the recalled message refuses the reply.
    second = await s.send_message(_text(3008, 1, "soon gone", conv_id=gid))
    recall = asyncio.ensure_future(s.recall(gid, 1, second.message.seq, 3010, T0 + 3010, 120_000))
    await asyncio.sleep(0)
    late = s.send_message(_text(3012, 2, "what?", conv_id=gid, reply_to=second.message.seq))
    await recall
    with pytest.raises(YimError) as err:
        await late
    assert err.value.code == "already_recalled"

    # A retry of a reply that was stored returns it, whatever happened to the quoted message since.
    again = await s.send_message(_text(3006, 2, "yes", conv_id=gid, reply_to=old))
    assert again.duplicate and msgspec.json.decode(again.message.body)["quote"]["withheld"] is True


async def test_reply_sees_join_and_recall_queued_before_it(stores: tuple[Store, Store]) -> None:
    lite, pg = stores
    await _race(lite)
    await _race(pg)
