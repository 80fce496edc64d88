"""Edit and delete-for-me through the SDK against a real node: the editor's own stream and
the other side's carry the ``edit`` entry once; the earlier text is retrievable; a ``hide``
reaches the user's other device as a ``hidden`` event and their own stream by catching up."""

from __future__ import annotations

import asyncio
from typing import Any

from yim.node import NodeServer
from yim.protocol.frames import HiddenMarker

from .sdk_helpers import Chat


async def test_sdk_edit_and_hide(make_server: Any) -> None:
    server: NodeServer = await make_server()
    async with asyncio.timeout(60), Chat(server.url) as chat:
        users = {name: await chat.user(name) for name in ("ann", "bob")}
        a = await chat.client("ann", "desktop")
        b = await chat.client("bob", "desktop")
        b2 = await chat.client("bob", "phone")
        a_inbox, b_inbox, b2_inbox = chat.inbox(a), chat.inbox(b), chat.inbox(b2)

        first = await a.send_text("see you at 8", to=users["bob"].user_id)
        conv = first.conv_id
        out = await a.edit(conv, first.seq, "see you at 9")
        for inbox in (a_inbox, b_inbox):
            await inbox.wait_for(lambda inbox=inbox: any(m.seq == out.edit_seq for m in inbox.timeline(conv)))
            edits = [m for m in inbox.timeline(conv) if m.kind == "edit"]
            assert len(edits) == 1
            assert edits[0].body == {
                "seq": first.seq,
                "msg_id": first.msg_id,
                "body": {"text": "see you at 9", "edited_at": out.edited_at},
            }
        versions = await b.message_versions(conv, first.seq)
        assert [v.body for v in versions.versions] == [{"text": "see you at 8"}]

        hidden = await b.hide(conv, [first.seq])
        assert hidden.seqs == [first.seq] and hidden.unread == 0
        for inbox in (b_inbox, b2_inbox):
            await inbox.wait_for(
                lambda inbox=inbox: any(isinstance(i.data, HiddenMarker) for i in inbox.items), timeout=20
            )
            marker = next(i.data for i in inbox.items if isinstance(i.data, HiddenMarker))
            assert marker == HiddenMarker(conv_id=conv, seqs=[first.seq])
        assert [m.seq for m in (await b.history(conv, after=0)).messages] == [out.edit_seq]
        assert not any(isinstance(i.data, HiddenMarker) for i in a_inbox.items)
