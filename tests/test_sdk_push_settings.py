"""Push settings through the SDK against a real node (protocol.md §20.2): previews, quiet
hours in a time zone, and per-conversation mutes — a read-fan-out group is turned on with
``push_mute off`` and then listed — with the errors a client gets for bad values."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from yim.client import ApiError
from yim.node import NodeServer
from yim.protocol.frames import PushMuteOut

from .sdk_helpers import Chat

pytestmark = pytest.mark.backends("sqlite")  # the ops are store-neutral; tests/test_push.py covers both stores


async def test_sdk_push_settings_and_mutes(make_server: Any) -> None:
    server: NodeServer = await make_server(group_write_fanout_max=2)
    async with asyncio.timeout(60), Chat(server.url) as chat:
        users = {name: await chat.user(name) for name in ("ann", "bob", "cat")}
        ann = await chat.client("ann", "desktop")
        bob = await chat.client("bob", "desktop")
        direct = (await bob.send_text("hi", to=users["ann"].user_id)).conv_id
        change = await ann.call(
            "group_create", name="Big", members=[users["bob"].user_id, users["cat"].user_id], catch_up=False
        )
        group = change["group"]["conv_id"]
        assert change["group"]["fanout"] == "read"  # over the threshold: mentions only by default

        start = await bob.push_settings()
        assert (start.preview, start.dnd, start.mutes) == (True, "", [])

        after = await bob.set_push_settings(preview=False, time_zone="Europe/Berlin", dnd="22:00-07:00")
        assert (after.preview, after.time_zone, after.dnd) == (False, "Europe/Berlin", "22:00-07:00")
        kept = await bob.set_push_settings(dnd="")  # the others stay as they were
        assert (kept.preview, kept.time_zone, kept.dnd) == (False, "Europe/Berlin", "")

        await bob.push_mute(group, "off")  # the big group's messages wake bob after all
        muted = await bob.push_mute(direct, "all")
        assert sorted(muted.mutes, key=lambda m: m.conv_id) == sorted(
            [PushMuteOut(conv_id=group, mute="off"), PushMuteOut(conv_id=direct, mute="all")], key=lambda m: m.conv_id
        )
        assert (await bob.push_settings()).mutes == muted.mutes  # stored, not just echoed
        assert (await ann.push_settings()).mutes == []  # one user's mutes are theirs alone

        with pytest.raises(ApiError) as bad_dnd:
            await bob.set_push_settings(dnd="22:00")
        assert bad_dnd.value.code == "bad_request"
        with pytest.raises(ApiError) as bad_zone:
            await bob.set_push_settings(time_zone="Mars/Olympus")
        assert bad_zone.value.code == "bad_request"
        stranger = await chat.client("cat", "desktop")
        with pytest.raises(ApiError) as not_in:
            await stranger.push_mute(direct, "mentions")
        assert not_in.value.code == "not_member"
