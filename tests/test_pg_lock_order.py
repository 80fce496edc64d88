"""The PostgreSQL store's lock order (yim/storage/postgres/locks.py) under fire: three
stores on one database are three nodes whose writers commit batched transactions at the
same time. A mixed load — one-to-one and group sends, read markers with receipts,
recalls, membership changes, follows, customers writing to a shop whose agents come and
go — crosses their row locks in every order the load
can produce. The test fails on any ``deadlock detected`` in PostgreSQL's own log and on
any conflict of a transaction whose jobs declared their anchors, and checks that every
timeline and every inbox stayed gap-free.

Without the prelude (``lock_anchors`` a no-op) this load deadlocks within the first wave.
YIM_STRESS=1 runs more waves."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import asyncpg
import msgspec

from yim.protocol.errors import YimError
from yim.services.routing import DefaultRouting
from yim.storage.postgres.store import PostgresStore
from yim.storage.records import CreateGroupCmd, SendCmd, UserRec
from yim.storage.service import ServiceCtx

from .report import LINES

T0 = 1_700_000_000_000
USERS = 40
WAVES = 30 if os.environ.get("YIM_STRESS") else 6
OPS_PER_WAVE = 700


class Ids:
    def __init__(self) -> None:
        self.n = 10_000

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _send(ids: Ids, sender: int, **kw: Any) -> SendCmd:
    msg_id = ids()
    return SendCmd(
        msg_id=msg_id,
        new_conv_id=ids(),
        sender_id=sender,
        sender_device="phone",
        kind="text",
        body=b'{"text":"hi"}',
        client_msg_id=f"c{msg_id}",
        created_at=T0 + msg_id,
        **kw,
    )


def _log_tail(path: Any, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


async def test_three_writers_mixed_load_never_deadlock(postgres_dsn: str, postgres_server: Any) -> None:
    log_path = postgres_server.base / "log"
    log_offset = log_path.stat().st_size
    rng = random.Random(20261205)
    ids = Ids()
    nodes = [PostgresStore(postgres_dsn, batch_max=64) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:
        for uid in range(1, USERS + 1):
            await nodes[0].create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
        # A shop (owner 1) with five agents; every user counts as connected.
        for node in nodes:
            node.service.ctx = ServiceCtx(is_connected=lambda uid: True, policy=DefaultRouting())
        shop = ids()
        await nodes[0].service.create_shop(shop, "shop", 1, T0)
        agents = [2, 3, 4, 5, 6]
        for agent in agents:
            await nodes[0].service.set_agent(shop, 1, agent, "agent", ["pre_sale", "after_sale"], 3, T0)
            await nodes[0].service.set_agent_status(agent, shop, "online", T0)
        service_convs: list[tuple[int, int]] = []  # (customer, conversation)
        # Overlapping groups of 10 to 20 members; the last one uses read fan-out.
        groups: dict[int, set[int]] = {}
        for g in range(7):
            members = rng.sample(range(1, USERS + 1), rng.randint(10, 20))
            change = await nodes[0].create_group(
                CreateGroupCmd(
                    conv_id=ids(), msg_id=ids(), owner_id=members[0], member_ids=members[1:], name=f"g{g}",
                    announcement="", avatar="", join_policy="open", max_members=100,
                    threshold=100 if g < 6 else 5, created_at=T0,
                )
            )  # fmt: skip
            groups[change.group.conv_id] = set(members)
        owners = {conv: min(m) for conv, m in groups.items()}  # refreshed below from the store
        for conv in groups:
            owners[conv] = (await nodes[0].group_info(conv, next(iter(groups[conv])))).owner_id
        direct: dict[tuple[int, int], int] = {}
        recallable: list[tuple[int, int, int]] = []  # (conv, seq, sender)
        refused: dict[str, int] = {}
        done = 0

        def op() -> Any:
            node = rng.choice(nodes)
            kind = rng.random()
            if kind < 0.35:  # one-to-one: by user id (opening the pair's conversation), or into it
                a, b = rng.sample(range(1, USERS + 1), 2)
                known = direct.get((min(a, b), max(a, b)))
                if known is not None and rng.random() < 0.5:
                    return ("direct", (a, b)), node.send_message(_send(ids, a, conv_id=known))
                return ("direct", (a, b)), node.send_message(_send(ids, a, to=b))
            if kind < 0.65:  # group message
                conv = rng.choice(list(groups))
                sender = rng.choice(sorted(groups[conv]))
                return ("group", None), node.send_message(_send(ids, sender, conv_id=conv))
            if kind < 0.85:  # read markers: shared conversation lock, receipts to the peer
                if service_convs and rng.random() < 0.15:
                    customer, conv = rng.choice(service_convs)
                    return ("read", None), node.mark_read(customer, conv, 10**9, T0)
                if direct and rng.random() < 0.5:
                    (a, b), conv = rng.choice(list(direct.items()))
                    return ("read", None), node.mark_read(rng.choice((a, b)), conv, 10**9, T0)
                conv = rng.choice(list(groups))
                return ("read", None), node.mark_read(rng.choice(sorted(groups[conv])), conv, 10**9, T0)
            if kind < 0.90 and recallable:
                conv, seq, sender = recallable.pop(rng.randrange(len(recallable)))
                return ("recall", None), node.recall(conv, sender, seq, ids(), T0 + ids(), 10**12)
            if kind < 0.96:  # membership: someone joins or is removed by the owner
                conv = rng.choice(list(groups))
                user = rng.randint(1, USERS)
                if user == owners[conv]:
                    return ("noop", None), asyncio.sleep(0)
                if user in groups[conv]:
                    groups[conv].discard(user)
                    return ("leave", None), node.remove_member(conv, owners[conv], user, ids(), T0)
                groups[conv].add(user)
                return ("join", None), node.add_members(conv, owners[conv], [user], "invite", ids(), T0, 100)
            if kind < 0.98:  # customer service: a customer writes to the shop, routed to an agent
                customer = rng.randint(7, USERS)
                cmd = _send(ids, customer, shop_id=shop, new_session_id=ids())
                return ("service", None), node.send_message(cmd)
            if kind < 0.99:  # an agent goes offline (its sessions are re-routed) or comes back
                status = rng.choice(("online", "offline"))
                return ("agent", None), node.service.set_agent_status(rng.choice(agents), shop, status, T0)
            a, b = rng.sample(range(1, USERS + 1), 2)
            return ("follow", None), node.relations.follow(a, b, True, T0)

        for _wave in range(WAVES):
            pending = [op() for _ in range(OPS_PER_WAVE)]
            results = await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
            for ((what, pair), _), res in zip(pending, results, strict=True):
                if isinstance(res, YimError):
                    # Membership moved under a random op (not_member, ...): refused, nothing written.
                    assert res.code != "unavailable", f"{what}: {res}"
                    refused[res.code] = refused.get(res.code, 0) + 1
                    continue
                if isinstance(res, BaseException):
                    raise res
                done += 1
                if what == "service":
                    service_convs.append((res.message.sender_id, res.message.conv_id))
                if what == "direct" and pair is not None:
                    direct[(min(pair), max(pair))] = res.message.conv_id
                if what in ("direct", "group") and rng.random() < 0.2:
                    recallable.append((res.message.conv_id, res.message.seq, res.message.sender_id))

        retries = sum(node.stats["retries"] for node in nodes)
        declared_conflicts = sum(node.stats["declared_conflicts"] for node in nodes)
        batches = sum(node.stats["batches"] for node in nodes)
        log = _log_tail(log_path, log_offset)
        deadlocks = log.count("deadlock detected")
        lock_timeouts = log.count("canceling statement due to lock timeout")
        LINES.append(
            f"PostgreSQL lock order: {WAVES * OPS_PER_WAVE} mixed writes on 3 writers in {batches} batches,"
            f" {done} done, {deadlocks} deadlocks, {lock_timeouts} lock timeouts, {retries} retried transactions"
            f" ({declared_conflicts} with declared anchors)"
        )
        assert deadlocks == 0, [line for line in log.splitlines() if "deadlock" in line or "DETAIL" in line][:20]
        # Transactions with declared anchors never conflict; customer-service routing (which
        # finds its locks as it goes) may time out on a lock after 100 ms and be rerun.
        assert declared_conflicts == 0
        assert lock_timeouts <= retries - declared_conflicts
        assert done > WAVES * OPS_PER_WAVE // 2, refused

        conn = await asyncpg.connect(postgres_dsn)
        try:
            # Every conversation timeline and every inbox is gap-free, and the heads agree.
            bad_convs = await conn.fetch(
                "SELECT c.id FROM conversations c LEFT JOIN messages m ON m.conv_id = c.id GROUP BY c.id"
                " HAVING c.last_seq <> COUNT(m.seq) OR COALESCE(MAX(m.seq), 0) <> c.last_seq"
            )
            assert bad_convs == []
            bad_inboxes = await conn.fetch(
                "SELECT u.id FROM users u LEFT JOIN inbox i ON i.user_id = u.id GROUP BY u.id"
                " HAVING u.inbox_seq <> COUNT(i.seq) OR COALESCE(MAX(i.seq), 0) <> u.inbox_seq"
            )
            assert bad_inboxes == []
        finally:
            await conn.close()
    finally:
        for node in nodes:
            await node.close()


async def test_writers_on_a_hot_set_keep_every_order(postgres_dsn: str, postgres_server: Any) -> None:
    """Three writers with small batches on a hot set (30 users, 3 groups of 6, every pair),
    many sends in flight per user: every send commits once; each conversation's seqs are
    gap-free; each sender's messages commit in the order its node got them (in each
    conversation, and across them); resends, queued behind their original or made after
    it, get the original; unread counts match the timelines; and nothing deadlocks."""
    log_path = postgres_server.base / "log"
    log_offset = log_path.stat().st_size
    rng = random.Random(20261206)
    ids = Ids()
    # Small batches: many of them, from every node, cross on the same rows.
    nodes = [PostgresStore(postgres_dsn, batch_max=16) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:
        users = list(range(1, 31))
        for uid in users:
            await nodes[0].create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
        groups: dict[int, list[int]] = {}
        for g in range(3):
            members = sorted(rng.sample(users, 6))
            change = await nodes[0].create_group(
                CreateGroupCmd(
                    conv_id=ids(), msg_id=ids(), owner_id=members[0], member_ids=members[1:], name=f"g{g}",
                    announcement="", avatar="", join_policy="open", max_members=100, threshold=100, created_at=T0,
                )
            )  # fmt: skip
            groups[change.group.conv_id] = members
        # Every pair's conversation exists first: a prelude that finds a pair's conversation
        # created meanwhile and busy reruns its batch, a conflict this test does not look for.
        firsts = await asyncio.gather(
            *(nodes[0].send_message(_send(ids, a, to=b)) for a in users for b in users if a < b)
        )
        home = {uid: nodes[uid % 3] for uid in users}  # each user's device is on one node
        sent: dict[int, list[tuple[SendCmd, Any]]] = {uid: [] for uid in users}  # in submission order
        resends: list[tuple[SendCmd, Any]] = []
        for _wave in range(4):
            wave: list[tuple[int, SendCmd, Any]] = []
            for _ in range(30):
                for uid in users:
                    mine = [conv for conv, members in groups.items() if uid in members]
                    if mine and rng.random() < 0.5:
                        cmd = _send(ids, uid, conv_id=rng.choice(mine))
                    else:
                        cmd = _send(ids, uid, to=rng.choice([u for u in users if u != uid]))
                    wave.append((uid, cmd, home[uid].send_message(cmd)))
                    if rng.random() < 0.03:  # a resend queued right behind its original
                        resends.append((cmd, home[uid].send_message(msgspec.structs.replace(cmd, msg_id=ids()))))
            await asyncio.gather(*(fut for _, _, fut in wave))
            for uid, cmd, fut in wave:
                sent[uid].append((cmd, fut.result()))
        for uid in users[:3]:  # resends after their original committed
            cmd, _ = sent[uid][5]
            resends.append((cmd, home[uid].send_message(msgspec.structs.replace(cmd, msg_id=ids()))))
        await asyncio.gather(*(fut for _, fut in resends))

        batches = sum(node.stats["batches"] for node in nodes)
        declared_conflicts = sum(node.stats["declared_conflicts"] for node in nodes)
        log = _log_tail(log_path, log_offset)
        total = sum(len(v) for v in sent.values())
        LINES.append(
            f"PostgreSQL hot set: {total} sends on 3 writers in {batches} batches,"
            f" {log.count('deadlock detected')} deadlocks"
        )
        assert log.count("deadlock detected") == 0
        assert declared_conflicts == 0

        by_id = {res.message.msg_id: res for v in sent.values() for _, res in v}
        for cmd, fut in resends:
            res = fut.result()
            assert res.duplicate, cmd
            original = next(r for c, r in sent[cmd.sender_id] if c.client_msg_id == cmd.client_msg_id)
            assert (res.message.msg_id, res.message.conv_id, res.message.seq) == (
                original.message.msg_id, original.message.conv_id, original.message.seq,
            )  # fmt: skip
        timelines: dict[int, list[tuple[int, int]]] = {}  # conv -> (seq, sender)
        for res in firsts:
            timelines.setdefault(res.message.conv_id, []).append((res.message.seq, res.message.sender_id))
        for uid, mine in sent.items():
            assert not any(res.duplicate for _, res in mine)
            inbox_seqs = [res.sender_inbox_seq for _, res in mine]
            assert inbox_seqs == sorted(inbox_seqs), f"user {uid}'s sends committed out of order"
            per_conv: dict[int, list[int]] = {}
            for _, res in mine:
                per_conv.setdefault(res.message.conv_id, []).append(res.message.seq)
                timelines.setdefault(res.message.conv_id, []).append((res.message.seq, uid))
            for conv, seqs in per_conv.items():
                assert seqs == sorted(seqs), f"user {uid}'s messages in {conv} out of order"

        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(
                "SELECT sender_id, client_msg_id, count(*) AS n FROM messages"
                " WHERE kind = 'text' GROUP BY sender_id, client_msg_id"
            )
            assert len(rows) == total + len(users) * (len(users) - 1) // 2 and all(r["n"] == 1 for r in rows)
            assert len(by_id) == total
            bad_convs = await conn.fetch(
                "SELECT c.id FROM conversations c LEFT JOIN messages m ON m.conv_id = c.id GROUP BY c.id"
                " HAVING c.last_seq <> COUNT(m.seq) OR COALESCE(MAX(m.seq), 0) <> c.last_seq"
            )
            assert bad_convs == []
            bad_inboxes = await conn.fetch(
                "SELECT u.id FROM users u LEFT JOIN inbox i ON i.user_id = u.id GROUP BY u.id"
                " HAVING u.inbox_seq <> COUNT(i.seq) OR COALESCE(MAX(i.seq), 0) <> u.inbox_seq"
            )
            assert bad_inboxes == []
        finally:
            await conn.close()
        for uid in users:
            convs, _ = await nodes[0].conversations(uid, None, 100)
            for row in convs:
                timeline_ = sorted(timelines.get(row.conv_id, []))
                read = max((seq for seq, sender in timeline_ if sender == uid), default=0)
                expected = sum(1 for seq, sender in timeline_ if seq > read and sender != uid)
                assert row.unread == expected, (uid, row.conv_id, row.unread, expected)
    finally:
        for node in nodes:
            await node.close()


async def test_a_paused_writer_holds_other_nodes_up_for_seconds_only(postgres_dsn: str) -> None:
    """A node paused in the middle of its batch (SIGSTOP, a frozen VM) keeps its row locks
    only until PostgreSQL ends its idle-in-transaction session; the other node's send waits
    for that, then succeeds — it is neither refused nor held for the length of the pause."""
    from yim.storage.postgres.store import IDLE_IN_TRANSACTION_MS, SERVER_SETTINGS

    node = PostgresStore(postgres_dsn)
    await node.open()
    paused = await asyncpg.connect(postgres_dsn, server_settings=SERVER_SETTINGS)
    paused_pid = paused.get_server_pid()
    try:
        ids = Ids()
        for uid in (1, 2):
            await node.create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
        conv = (await node.send_message(_send(ids, 1, to=2))).message.conv_id
        # The paused node: its batch locked the conversation and both inboxes, then it stopped.
        tx = paused.transaction()
        await tx.start()
        await paused.execute("SELECT yim_lock($1, '{}', $1, '{}', '{}', '{}', '{}', '{}', '{}')", [conv])
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await asyncio.wait_for(node.send_message(_send(ids, 2, conv_id=conv)), timeout=30)
        waited = loop.time() - started
        assert result.message.seq == 2
        # It waited for the paused session to be ended, and not much longer.
        assert IDLE_IN_TRANSACTION_MS / 1000 * 0.8 <= waited < 10, waited
        assert node.stats["retries"] == 0  # it got the lock, no timeout, no rerun
        # PostgreSQL ended the paused session (its batch never committed): when the node
        # wakes, its connection is gone and its clients resend.
        probe = await asyncpg.connect(postgres_dsn)
        try:
            alive = await probe.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid=$1", paused_pid)
        finally:
            await probe.close()
        assert alive == 0, "the paused session survived idle_in_transaction_session_timeout"
    finally:
        paused.terminate()
        await node.close()


async def test_postgresql_restart_costs_a_node_no_failed_read() -> None:
    """After PostgreSQL restarts (fast shutdown), the node's next reads and writes succeed:
    the pool replaces its dead connections and the writer reconnects. A server of its own, so
    the restart cuts no other test's sessions."""
    from .services import PostgresServer

    server = PostgresServer()
    await asyncio.to_thread(server.start)
    node = PostgresStore(server.dsn(), pool_min=3, pool_max=3)
    try:
        await node.open()
        ids = Ids()
        for uid in (1, 2):
            await node.create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
        first = await node.send_message(_send(ids, 1, to=2))
        conv = first.message.conv_id
        # Every pooled connection in use once, so all of them die with the server.
        await asyncio.gather(*(node.conversations(1, None, 10) for _ in range(6)))
        await asyncio.to_thread(server.restart)
        for _ in range(6):
            convs, total = await node.conversations(2, None, 10)
            assert [c.conv_id for c in convs] == [conv] and total == 1
        second = await node.send_message(_send(ids, 2, conv_id=conv))
        assert second.message.seq == 2
    finally:
        await node.close()
        await asyncio.to_thread(server.stop)
