"""``yim_send_batch`` (a run of sends in one set-based call) is N calls of ``yim_send``.

Two databases get the same setup (users, direct pairs, groups of both fan-outs, blocks,
friends-only privacy, a muted member), then the same seeded random rounds of writes: sends
by user id (new and existing pairs, to oneself, to nobody, blocked either way, friends
only), into conversations (groups, direct ones, ones the sender left or never joined),
with mentions right and wrong, media, resends of a client_msg_id (of an earlier round, and
of the same round, also to another recipient after a refusal), mixed with read markers,
recalls, membership changes and blocks. One database gets each round through the store's
writer — the whole round submitted at once, so its runs of sends go to ``yim_send_batch``
between the other jobs of one transaction; the other runs each write alone, the sends
through ``yim_send``. Every outcome and every row of every table a send writes must be
equal, and the function counters of PostgreSQL must show that the batch path really ran
(no send fell back to ``yim_send``).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import msgspec

from yim.protocol.errors import YimError
from yim.storage.postgres import groups, relations, timeline
from yim.storage.postgres.store import BATCH_SEND_MIN, PostgresStore
from yim.storage.records import CreateGroupCmd, SendCmd, UserRec

from .report import LINES

T0 = 1_700_000_000_000
USERS = 20
NOBODY = 999
ROUNDS = 8
OPS_PER_ROUND = 120

#: Every table a send, or a job mixed with sends here, writes; compared row for row.
TABLES = {
    "messages": "conv_id, seq",
    "inbox": "user_id, seq",
    "conversations": "id",
    "users": "id",
    "user_conversations": "user_id, conv_id",
    "client_msg_ids": "sender_id, client_msg_id",
    "direct_pairs": "user_lo, user_hi",
    "media_refs": "media_id, conv_id, seq",
    "blocks": "user_id, blocked_id",
}

Op = tuple[str, tuple[Any, ...]]


class Ids:
    def __init__(self) -> None:
        self.n = 10_000

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _outcome(result: Any, exc: BaseException | None) -> Any:
    if exc is not None:
        assert isinstance(exc, YimError), repr(exc)
        return ("error", exc.code, exc.message)
    return msgspec.to_builtins(result)


async def _run_alone(conn: asyncpg.Connection, op: Op) -> Any:
    """The reference: one write at a time, a send as one call of ``yim_send``."""
    name, args = op
    if name == "send":
        cmd: SendCmd = args[0]
        row = await conn.fetchrow(timeline.SEND_SQL, *timeline.send_args(cmd))
        return _outcome(*timeline.send_outcome(cmd, row))
    fn = {
        "mark_read": timeline.mark_read,
        "recall": timeline.recall,
        "add_members": groups.add_members,
        "remove_member": groups.remove_member,
        "mute_member": groups.mute_member,
        "block": relations.block,
    }[name]
    try:
        async with conn.transaction():
            return _outcome(await fn(conn, *args), None)
    except YimError as exc:
        return _outcome(None, exc)


def _submit(store: PostgresStore, op: Op) -> Any:
    """The same write through the store's public API (and so through its writer)."""
    name, args = op
    if name == "send":
        return store.send_message(args[0])
    if name == "block":
        return store.relations.block(*args)
    return getattr(store, name)(*args)


async def _run_batched(store: PostgresStore, ops: list[Op]) -> list[Any]:
    async def one(op: Op) -> Any:
        try:
            return _outcome(await _submit(store, op), None)
        except YimError as exc:
            return _outcome(None, exc)

    # Tasks created in order submit in order, all before the writer's next turn: one batch.
    return await asyncio.gather(*(asyncio.create_task(one(op)) for op in ops))


def _send_runs(ops: list[Op]) -> list[int]:
    """The lengths of the runs of consecutive sends."""
    runs: list[int] = []
    for i, op in enumerate(ops):
        if op[0] == "send":
            if i > 0 and ops[i - 1][0] == "send":
                runs[-1] += 1
            else:
                runs.append(1)
    return runs


async def _rows(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")]
        for table, order in TABLES.items()
    }


class World:
    """The random generator's picture of the setup: enough to aim most writes where they
    can succeed and the rest at every refusal."""

    def __init__(self, rng: random.Random, ids: Ids) -> None:
        self.rng = rng
        self.ids = ids
        self.group_members: dict[int, set[int]] = {}
        self.owners: dict[int, int] = {}
        self.direct: list[int] = []
        self.sent: list[SendCmd] = []  # earlier sends, to resend their client_msg_id
        self.appended: list[tuple[int, int]] = []  # (conv, seq) guesses for recalls
        self.targeted: set[tuple[int, int]] = set()  # pairs sent to by user id

    def send(self, sender: int, **kw: Any) -> Op:
        msg_id = self.ids()
        kind, body = "text", b'{"text":"hi %d"}' % msg_id
        if self.rng.random() < 0.1:
            kind, body = "image", b'{"media_id":"%d","name":"p.png"}' % self.rng.randint(1, 5)
        cmd = SendCmd(
            msg_id=msg_id,
            new_conv_id=self.ids(),
            sender_id=sender,
            sender_device=self.rng.choice(("phone", "web")),
            kind=kind,
            body=body,
            client_msg_id=kw.pop("cmid", f"c{msg_id}"),
            created_at=T0 + msg_id,
            **kw,
        )
        self.sent.append(cmd)
        if cmd.to is not None:
            self.targeted.add((min(sender, cmd.to), max(sender, cmd.to)))
        return ("send", (cmd,))

    def round(self, size: int) -> list[Op]:
        """Runs of sends, short and long, between a few other writes."""
        ops: list[Op] = []
        while len(ops) < size:
            ops += [self.send_op() for _ in range(self.rng.choice((1, 2, 3, 4, 8, 20, 40)))]
            if self.rng.random() < 0.3:  # a pair's first messages, both ways, in one run
                a, b = self.rng.sample(range(1, USERS + 1), 2)
                if (min(a, b), max(a, b)) not in self.targeted:
                    ops += [self.send_op(), self.send(a, to=b), self.send(b, to=a), self.send(a, to=b)]
            ops += [self.job_op() for _ in range(self.rng.randint(1, 3))]
        return ops

    def send_op(self) -> Op:
        rng = self.rng
        users = range(1, USERS + 1)
        x = rng.random() * 0.74
        if x < 0.30:  # one-to-one by user id: mostly fine, sometimes to oneself, to nobody, with mentions
            sender = rng.choice(users)
            to = rng.choice(users) if rng.random() < 0.95 else NOBODY
            extra: dict[str, Any] = {}
            if rng.random() < 0.05:
                extra["mentions"] = (to,)
            return self.send(sender, to=to, **extra)
        if x < 0.55:  # into a group, mentions right and wrong
            conv = rng.choice(list(self.group_members))
            members = sorted(self.group_members[conv])
            sender = rng.choice(members) if rng.random() < 0.9 else rng.choice(users)
            extra = {}
            if rng.random() < 0.2:
                extra["mentions"] = tuple(rng.choice(members if rng.random() < 0.8 else users) for _ in range(2))
            if rng.random() < 0.1:
                extra["mention_all"] = True
            return self.send(sender, conv_id=conv, **extra)
        if x < 0.62 and self.direct:  # into an existing direct conversation, by anyone
            return self.send(rng.choice(users), conv_id=rng.choice(self.direct))
        if x < 0.64:
            return self.send(rng.choice(users), conv_id=NOBODY)
        if x < 0.74 and self.sent:  # a resend: same sender and client_msg_id, maybe elsewhere
            old = rng.choice(self.sent[-60:])
            if rng.random() < 0.5:
                return self.send(old.sender_id, cmid=old.client_msg_id, to=old.to, conv_id=old.conv_id)
            return self.send(old.sender_id, cmid=old.client_msg_id, to=rng.choice(users))
        return self.send(rng.choice(users), to=rng.choice(users))

    def job_op(self) -> Op:
        rng = self.rng
        users = range(1, USERS + 1)
        x = 0.74 + rng.random() * 0.26
        if x < 0.84:  # read markers (receipts to the peer of a direct conversation)
            conv = rng.choice([*self.group_members, *self.direct])
            return ("mark_read", (rng.choice(users), conv, rng.randint(1, 40), T0 + self.ids()))
        if x < 0.87 and self.appended:
            conv, seq = rng.choice(self.appended)
            return ("recall", (conv, rng.choice(users), seq, self.ids(), T0 + self.ids(), 10**12))
        if x < 0.95:  # membership: join, leave, muted until later
            conv = rng.choice(list(self.group_members))
            owner = self.owners[conv]
            user = rng.choice([u for u in users if u != owner])
            y = rng.random()
            if y < 0.4:
                self.group_members[conv].add(user)
                return ("add_members", (conv, owner, [user], "invite", self.ids(), T0, 100))
            if y < 0.8:
                self.group_members[conv].discard(user)
                return ("remove_member", (conv, owner, user, self.ids(), T0))
            return ("mute_member", (conv, owner, user, T0 + 10**9, self.ids(), T0))
        a, b = rng.sample(users, 2)
        return ("block", (a, b, rng.random() < 0.6, T0))


async def _setup(store: PostgresStore, world: World | None, rng: random.Random, ids: Ids) -> None:
    """The same setup on each database (the same seeded choices): ``world`` records it."""
    for uid in range(1, USERS + 1):
        await store.create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
    for g in range(4):
        members = rng.sample(range(1, USERS + 1), rng.randint(5, 9))
        change = await store.create_group(
            CreateGroupCmd(
                conv_id=ids(), msg_id=ids(), owner_id=members[0], member_ids=members[1:], name=f"g{g}",
                announcement="", avatar="", join_policy="open", max_members=100,
                threshold=100 if g < 3 else 4, created_at=T0,
            )
        )  # fmt: skip
        conv = change.group.conv_id
        if world is not None:
            world.group_members[conv] = set(members)
            world.owners[conv] = members[0]
        await store.mute_member(conv, members[0], members[1], T0 + 10**9, ids(), T0)
    for _ in range(6):  # some pairs have their conversation already
        a, b = rng.sample(range(1, USERS + 1), 2)
        res = await store.send_message(
            SendCmd(ids(), ids(), a, "phone", "text", b'{"text":"hello"}', f"s{ids.n}", T0, to=b)
        )
        if world is not None and res.message.conv_id not in world.direct:
            world.direct.append(res.message.conv_id)
    for _ in range(4):
        a, b = rng.sample(range(1, USERS + 1), 2)
        await store.relations.block(a, b, True, T0)
    for uid in rng.sample(range(1, USERS + 1), 4):  # direct messages from friends only (no one is a friend)
        await store.relations.set_privacy(uid, "friends", None)


async def test_batched_sends_equal_one_at_a_time(postgres_server: Any, postgres_admin: asyncpg.Connection) -> None:
    from tests.services import TEMPLATE_DB

    names = ["tbatch_one", "tbatch_many"]
    for name in names:
        await postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await postgres_admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        # Count calls of yim_send / yim_send_batch (pg_stat_user_functions).
        await postgres_admin.execute(f"ALTER DATABASE {name} SET track_functions = 'pl'")
    dsn_one, dsn_many = (postgres_server.dsn(name) for name in names)
    one = PostgresStore(dsn_one)
    many = PostgresStore(dsn_many)
    await one.open()
    await many.open()
    ref: asyncpg.Connection | None = None
    try:
        world = World(random.Random(16), Ids())
        await _setup(one, None, random.Random(5), Ids())
        await _setup(many, world, random.Random(5), world.ids)
        await one.close()
        ref = await asyncpg.connect(dsn_one)
        sends = runs = short_sends = 0
        outcomes_seen: dict[str, int] = {}
        batches_before = many.stats["batches"]
        for _round in range(ROUNDS):
            ops = world.round(OPS_PER_ROUND)
            expected = [await _run_alone(ref, op) for op in ops]
            got = await _run_batched(many, ops)
            for i, (op, want, have) in enumerate(zip(ops, expected, got, strict=True)):
                assert have == want, (i, op, want, have)
                if op[0] == "send":
                    key = want[1] if isinstance(want, tuple) else ("duplicate" if want["duplicate"] else "sent")
                    outcomes_seen[key] = outcomes_seen.get(key, 0) + 1
                    if isinstance(want, dict) and not want["duplicate"]:
                        world.appended.append((want["message"]["conv_id"], want["message"]["seq"]))
            for length in _send_runs(ops):
                sends += length
                if length >= BATCH_SEND_MIN:
                    runs += 1
                else:
                    short_sends += length
            assert await _rows(ref) == await many.read1(_rows), f"round {_round}"
        assert many.stats["retries"] == 0
        # Each round was one transaction...
        assert many.stats["batches"] - batches_before == ROUNDS
        # ...and every refusal, duplicate and append came through the batch function.
        for code in ("sent", "duplicate", "blocked", "friends_only", "not_member", "bad_request", "not_found", "muted"):
            assert outcomes_seen.get(code, 0) > 0, outcomes_seen
    finally:
        if ref is not None:
            await ref.close()
        await one.close()
        await many.close()
    stats = await _function_calls(dsn_many)
    LINES.append(
        f"PostgreSQL batch sends: {sends} sends, {sends - short_sends} in {runs} runs through yim_send_batch,"
        f" equal one-at-a-time"
        f" yim_send ({', '.join(f'{k} {v}' for k, v in sorted(outcomes_seen.items()))})"
    )
    # ...whose runs of sends went to yim_send_batch, but for the short ones and the setup's
    # six sends (each awaited: runs of one), which went to yim_send.
    assert stats.get("yim_send_batch", 0) == runs > 0, (stats, runs, sends)
    assert stats.get("yim_send", 0) == short_sends + 6, (stats, short_sends)
    for name in names:
        await postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _function_calls(dsn: str) -> dict[str, int]:
    """Calls per function, once the store's sessions have ended (a session's counters
    reach the shared statistics when it ends; bounded wait)."""
    conn = await asyncpg.connect(dsn)
    try:
        calls: dict[str, int] = {}
        for _ in range(50):
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = await conn.fetch("SELECT funcname, calls FROM pg_stat_user_functions")
            calls = {r["funcname"]: r["calls"] for r in rows}
            if calls.get("yim_send_batch", 0) > 0:
                break
            await asyncio.sleep(0.1)
        return calls
    finally:
        await conn.close()


async def test_a_send_into_a_conversation_the_same_run_opens_is_rerun_alone(postgres_dsn: str) -> None:
    """The batch function reads all conversations before it opens new ones, so a send by
    conversation id into one its own run opens (possible only with a guessed id) cannot be
    decided there: the run is rolled back and rerun send by send, with the outcome of
    sequential sends — the guessed send goes through."""
    store = PostgresStore(postgres_dsn)
    await store.open()
    try:
        for uid in (1, 2, 3):
            await store.create_user(UserRec(uid, f"u{uid}", f"u{uid}", "h", T0))
        cmds = [
            SendCmd(100 + i, 500 + i, 1, "phone", "text", b'{"text":"x"}', f"k{i}", T0, to=3)
            if i != 2
            else SendCmd(100 + i, 500 + i, 1, "phone", "text", b'{"text":"x"}', f"k{i}", T0, to=2)
            for i in range(BATCH_SEND_MIN)
        ]
        # Sends 0 and 2 open conversations 500 and 502; one more, by user 2 into 502.
        cmds.append(SendCmd(200, 600, 2, "phone", "text", b'{"text":"y"}', "g", T0, conv_id=502))
        results = await asyncio.gather(*(store.send_message(c) for c in cmds))
        assert [(r.message.conv_id, r.message.seq) for r in results] == [
            (500, 1),
            (500, 2),
            (502, 1),
            (500, 3),
            (502, 2),
        ]
        assert store.stats["batches"] >= 2 and store.stats["retries"] == 1  # the run, then alone
    finally:
        await store.close()
