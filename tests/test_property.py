"""Property: for any interleaving of sends from two users (three devices), reads, dropped
connections and app restarts, every device ends with the conversation's exact timeline —
gap-free, each message once, each device's own sends in order — and every device shows
unread == last_seq - read_seq, the same on all devices of a user."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yim.client import Client, InboxItem
from yim.node import NodeServer
from yim.protocol.frames import MessageOut, SendAck

from .sdk_helpers import FAST_RECONNECT, Chat, derived_unread, history_of, list_view, login_device, timeline_key

DEVICES = ("a1", "a2", "b1")  # a1, a2: alice's phone and laptop; b1: bob
_run = itertools.count()

action = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(DEVICES), st.integers(1, 6)),
    st.tuples(st.just("drop"), st.sampled_from(DEVICES), st.just(0)),
    st.tuples(st.just("read"), st.sampled_from(DEVICES), st.just(0)),
    st.tuples(st.just("restart"), st.sampled_from(DEVICES), st.just(0)),
)


class Device:
    """A device whose app may restart: the event stream accumulates across clients, and a
    restart resumes from the cursor the previous client reached (as an app persists it)."""

    def __init__(self, chat: Chat, token: str) -> None:
        self.chat = chat
        self.token = token
        self.items: list[InboxItem] = []
        self.sent: list[tuple[str, asyncio.Task[SendAck]]] = []
        self.client: Client
        self._pump: asyncio.Task[None] | None = None

    async def start(self, cursor: int = 0) -> None:
        self.client = self.chat.track(Client(self.chat.url, self.token, cursor=cursor, **FAST_RECONNECT))
        await self.client.start()
        self._pump = asyncio.get_running_loop().create_task(self._read(self.client))

    async def _read(self, client: Client) -> None:
        async for item in client.events():
            if isinstance(item, InboxItem):
                self.items.append(item)

    async def restart(self) -> None:
        await asyncio.gather(*(task for _, task in self.sent))  # an app finishes its sends first
        await self.client.close()
        assert self._pump is not None
        await self._pump  # the stream ends after close
        await self.start(cursor=self.client.cursor)

    def seen_seq(self) -> int:
        return max((i.data.seq for i in self.items if isinstance(i.data, MessageOut)), default=0)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(action, min_size=1, max_size=25))
async def test_random_interleavings_converge(server: NodeServer, actions: list[tuple[str, str, int]]) -> None:
    run = next(_run)
    async with asyncio.timeout(60), Chat(server.url) as chat:
        alice = await chat.user(f"alice{run}")
        bob = await chat.user(f"bob{run}")
        devices: dict[str, Device] = {}
        for name, user in (("a1", alice), ("a2", alice), ("b1", bob)):
            devices[name] = Device(chat, (await login_device(server.url, user.username, name)).token)
            await devices[name].start()
        peer = {"a1": bob.user_id, "a2": bob.user_id, "b1": alice.user_id}

        counter = itertools.count()
        for op, name, n in actions:
            device = devices[name]
            if op == "send":
                for _ in range(n):
                    text = f"{name}-{next(counter)}"
                    device.sent.append((text, asyncio.create_task(device.client.send_text(text, to=peer[name]))))
            elif op == "drop":
                device.client.drop_connection()
            elif op == "read":
                seq = device.seen_seq()
                if seq:
                    conv = next(i.data.conv_id for i in device.items if isinstance(i.data, MessageOut))
                    result = await device.client.mark_read(conv, seq)
                    assert result.unread >= 0 and result.read_seq >= seq
            else:
                await device.restart()
        for device in devices.values():
            await asyncio.gather(*(task for _, task in device.sent))
        for device in devices.values():
            await device.client.sync_now()

        sent_texts = [text for d in devices.values() for text, _ in d.sent]
        if not sent_texts:
            return
        conv_id = next(task.result().conv_id for d in devices.values() for _, task in d.sent)
        history = await history_of(devices["b1"].client, conv_id)
        # the conversation timeline: gap-free, every message exactly once
        assert [m.seq for m in history] == list(range(1, len(history) + 1))
        assert sorted(m.body["text"] for m in history) == sorted(sent_texts)
        # each device's own sends keep their order, and their acks name the stored message
        position = {m.body["text"]: m for m in history}
        for device in devices.values():
            seqs = [position[text].seq for text, _ in device.sent]
            assert seqs == sorted(seqs)
            assert all(position[text].msg_id == task.result().msg_id for text, task in device.sent)

        timeline = [(m.msg_id, m.seq) for m in history]
        for device in devices.values():
            got = [(i.data.msg_id, i.data.seq) for i in device.items if isinstance(i.data, MessageOut)]
            assert got == timeline
            assert [i.seq for i in device.items] == list(range(1, len(device.items) + 1))
            assert device.client.cursor == len(device.items)
        assert [timeline_key(i) for i in devices["a1"].items] == [timeline_key(i) for i in devices["a2"].items]

        views: dict[str, Any] = {}
        for name, device in devices.items():
            page = await device.client.conversations()
            views[name] = list_view(page)
            (conv,) = page.conversations
            assert conv.unread == conv.last_seq - conv.read_seq == page.total_unread
            user_id = alice.user_id if name.startswith("a") else bob.user_id
            stream_view = derived_unread(device.items, user_id)
            assert stream_view == {conv_id: conv.unread}
        assert views["a1"] == views["a2"]
