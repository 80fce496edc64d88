"""A node killed with SIGKILL in the middle of a send burst loses nothing it acknowledged:
the ACK is sent only after the durable commit, and the SDK's resends (same
client_msg_id) after the restart neither lose nor duplicate anything."""

from __future__ import annotations

import asyncio
import functools
import signal
from typing import Any

from yim.protocol.frames import SendAck

from .sdk_helpers import Chat, history_of


async def test_sigkill_during_a_send_burst_loses_no_acknowledged_message(server_process: Any) -> None:
    proc = server_process()
    await asyncio.to_thread(proc.start)
    async with asyncio.timeout(120), Chat(proc.url) as chat:
        bob = await chat.user("bob")
        await chat.user("alice")
        alice = await chat.client("alice", "phone")
        total, kill_after, first_wave = 3000, 400, 600
        acked: dict[str, SendAck] = {}
        enough = asyncio.Event()

        def on_reply(cmid: str, task: asyncio.Task[SendAck]) -> None:
            if not task.cancelled() and task.exception() is None:
                acked[cmid] = task.result()
                if len(acked) >= kill_after:
                    enough.set()

        def send(i: int) -> asyncio.Task[SendAck]:
            cmid = f"burst-{i:05d}"
            task = asyncio.create_task(alice.send(to=bob.user_id, body={"text": f"m{i:05d}"}, client_msg_id=cmid))
            task.add_done_callback(functools.partial(on_reply, cmid))
            return task

        tasks = [send(i) for i in range(first_wave)]
        await enough.wait()
        # Freeze the node, then write the rest of the burst into its socket: those sends are
        # on the wire and unanswered when it dies, however fast it was until now (a node
        # quicker than this client could otherwise answer the whole burst before the kill).
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGSTOP)
        tasks += [send(i) for i in range(first_wave, total)]
        await asyncio.sleep(0.5)  # let the new tasks write their frames
        proc.kill()
        acked_before_kill = dict(acked)
        assert kill_after <= len(acked_before_kill) <= first_wave  # the kill landed mid-burst

        await asyncio.to_thread(proc.start)
        # Every send still waiting is resent after the restart with its client_msg_id.
        acks = await asyncio.gather(*tasks)
        assert alice.connects >= 2 and alice.resent > 0

        conv_id = acks[0].conv_id
        history = await history_of(alice, conv_id)
        assert [m.seq for m in history] == list(range(1, len(history) + 1))  # gap-free
        by_cmid = {m.client_msg_id: m for m in history}
        assert len(by_cmid) == len(history) == total  # each exactly once
        for cmid, ack in acked_before_kill.items():
            stored = by_cmid[cmid]
            assert (stored.msg_id, stored.seq) == (ack.msg_id, ack.seq)
        assert [m.body["text"] for m in history] == [f"m{i:05d}" for i in range(total)]  # send order kept
        assert [(a.msg_id, a.seq) for a in acks] == [(m.msg_id, m.seq) for m in history]

        # The receiver's inbox survived the kill too: it syncs every message once, in order.
        receiver = chat.inbox(await chat.client("bob", "phone"))
        got = await receiver.wait_messages(total, timeout=30)
        assert [m.msg_id for m in got] == [m.msg_id for m in history]
        assert [i.seq for i in receiver.items] == list(range(1, total + 1))
