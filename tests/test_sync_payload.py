"""The SQLite store builds sync payloads in SQL (``EVENT_PAYLOAD_SQL``); they must be byte
for byte what the wire encoder makes of the same message — for any text, device name,
client message id, mentions and recall state."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from yim.services.wire import event_payload, message_json, read_json, receipt_json
from yim.storage.records import CreateGroupCmd, SendCmd, UserRec
from yim.storage.sqlite.store import SqliteStore

# Any Unicode text SQLite can hold (no lone surrogates): quotes, backslashes, controls,
# U+2028, emoji, CJK.
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


async def _check(body_text: str, device: str, cmid: str, mention: bool, recall: bool) -> None:
    folder = tempfile.mkdtemp(prefix="yim-sync-payload-")
    store = SqliteStore(str(Path(folder) / "yim.db"))
    await store.open()
    ids = itertools.count(1 << 40)
    try:
        a, b = next(ids), next(ids)
        for uid in (a, b):
            await store.create_user(
                UserRec(id=uid, username=f"u{uid}", display_name="", password_hash="x", created_at=1)
            )
        gid = next(ids)
        await store.create_group(
            CreateGroupCmd(
                conv_id=gid, msg_id=next(ids), owner_id=a, member_ids=[b], name="g", announcement="", avatar="",
                join_policy="members_invite", max_members=10, threshold=10, created_at=1,
            )
        )  # fmt: skip
        body = msgspec.json.encode({"text": body_text})
        sent = await store.send_message(
            SendCmd(
                msg_id=next(ids), new_conv_id=0, sender_id=a, sender_device=device, kind="text", body=body,
                client_msg_id=cmid, created_at=5, conv_id=gid, mentions=(b,) if mention else (), mention_all=mention,
            )
        )  # fmt: skip
        if recall:
            await store.recall(gid, a, sent.message.seq, next(ids), 6, 120_000)
        read = await store.mark_read(b, gid, sent.message.seq, 7)
        assert read.inbox_seq is not None
        direct = await store.send_message(
            SendCmd(
                msg_id=next(ids), new_conv_id=next(ids), sender_id=a, sender_device=device, kind="text", body=body,
                client_msg_id=cmid + "/direct", created_at=8, to=b,
            )
        )  # fmt: skip
        receipt = await store.mark_read(b, direct.message.conv_id, direct.message.seq, 9)
        assert receipt.receipt is not None  # a one-to-one read receipt for a's devices
        events = (await store.sync(b, 0, 100))[0] + (await store.sync(a, 0, 100))[0]
        assert {ev.type for ev in events} == {"message", "read", "receipt"}
        by_seq = {}
        for viewer, conv in ((b, gid), (b, direct.message.conv_id)):
            history, _more = await store.history(viewer, conv, None, None, 100)
            by_seq.update({(m.conv_id, m.seq): m for m in history})
        for ev in events:
            assert ev.data is not None
            if ev.type == "message":
                assert ev.data == message_json(by_seq[ev.conv_id, ev.conv_seq])
            elif ev.type == "read":
                assert ev.data == read_json(ev.conv_id, ev.conv_seq)
            elif ev.type == "receipt":
                assert ev.actor_id is not None
                assert ev.data == receipt_json(ev.conv_id, ev.actor_id, ev.conv_seq)
            assert event_payload(ev) is ev.data
    finally:
        await store.close()


@settings(max_examples=60, deadline=None)
@given(body_text=text, device=text, cmid=text, mention=st.booleans(), recall=st.booleans())
def test_sql_built_sync_payloads_equal_the_wire_encoding(
    body_text: str, device: str, cmid: str, mention: bool, recall: bool
) -> None:
    asyncio.run(_check(body_text, device, cmid, mention, recall))
