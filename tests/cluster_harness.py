"""Fault-injection harness for cluster mode: 3 ``yim serve`` processes on one PostgreSQL and
one Redis, SDK clients spread over them, a mixed load, one fault, and the checks.

The load: every user is one SDK :class:`~yim.client.Client` (one device) whose endpoint
list starts at node ``i % 3`` and goes on to the two others, so users sit round-robin on the
nodes and fail over to the rest. Each user has a few fixed one-to-one peers (on other
nodes); the groups have members taken evenly from all users, so every group spans the
three nodes. An open-loop generator issues ``rate`` sends a second — 60 % one-to-one, 40 %
into groups — each with its own ``client_msg_id``, without waiting for the ACK (the number
of sends in flight is capped). A send refused with a retryable error (``unavailable``,
``rate_limited`` ...) is sent again after a pause with the same ``client_msg_id``, as an
application would; one still unanswered when the run ends counts as never acknowledged.

The checks after each run (:meth:`Run.verify`), from the store and from the clients:
- every send was acknowledged (within a bounded grace after the load);
- every ACKed message is in PostgreSQL exactly once by (sender, client_msg_id), with the
  ACKed conv_id, seq and msg_id, and no load message is stored twice;
- every conversation's seqs are 1..last_seq without a gap;
- every member device's event stream held every entry of each of its conversations
  exactly once, in seq order, 1..last_seq, each the stored entry of its seq, without the
  test forcing a sync;
- the PostgreSQL log has no ``deadlock detected`` line.
The longest and the 99th-percentile ACK wait, the lock waits PostgreSQL logged and the
tracebacks in the node logs are reported (tests/report.py), not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import secrets
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from yim.client import ApiError, Client, GroupItem, HttpApi, InboxItem, YimClientError
from yim.protocol.frames import MessageOut, SendAck

from .conftest import ServerProcess
from .sdk_helpers import PASSWORD

NODES = 3
#: sends one user may have awaiting their ACK; beyond it the generator picks another sender,
#: so the load stays bounded while a node hangs and the healthy users carry the rate
MAX_IN_FLIGHT_PER_USER = 50
#: errors after which an application sends the same message again (same client_msg_id)
RETRYABLE = frozenset({"unavailable", "rate_limited", "internal", "timeout", "overloaded"})


@dataclass(frozen=True)
class Size:
    users: int
    groups: tuple[int, ...]  # member counts
    seconds: float  # load duration when the fault needs no longer
    rate: float  # sends per second
    peers: int  # one-to-one peers per user
    #: sends still unanswered this long after the load (and the fault) ended count as never ACKed
    drain_s: float
    #: entries not at a member device this long after the drain count as undelivered
    deliver_s: float


DEFAULT_SIZE = Size(users=48, groups=(10, 24, 48), seconds=12.0, rate=220.0, peers=4, drain_s=30.0, deliver_s=20.0)
# more users queue more sends behind a slow moment: longer bounds
LONG_SIZE = Size(users=300, groups=(10, 50, 120, 300), seconds=60.0, rate=220.0, peers=6, drain_s=90.0, deliver_s=60.0)


def chosen_size() -> Size:
    """``YIM_FAULTS_LONG=1``: the larger, longer run (groups of up to 300 members)."""
    return LONG_SIZE if os.environ.get("YIM_FAULTS_LONG", "") not in ("", "0") else DEFAULT_SIZE


# --- the nodes ------------------------------------------------------------------------------------


class ClusterNodes:
    """Three ``yim serve`` subprocesses in cluster mode, sharing the token secret, one
    PostgreSQL database and one Redis, with leased node ids (TTL 6 s) and otherwise the
    default settings (the route TTL included: what an operator runs). Faults act on one
    node by index."""

    def __init__(self, base: Path, store: str, redis_url: str, **settings: str) -> None:
        secret = secrets.token_bytes(32).hex()
        env = {
            "YIM_STORE": store,
            "YIM_REDIS_URL": redis_url,
            "YIM_NODE_ID_LEASE": "true",
            # a node starts issuing ids one renewal period (a third of this) after leasing;
            # 6 s keeps the start short and still lapses well within the 20 s pause
            "YIM_NODE_LEASE_TTL_S": "6",
            **settings,
        }
        self.procs: list[ServerProcess] = []
        for i in range(NODES):
            folder = base / f"node{i}"
            folder.mkdir(parents=True)
            (folder / "secret.key").write_text(secret)
            self.procs.append(ServerProcess(folder, **env))
        self._stopped: set[int] = set()

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.procs]

    async def start(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.start, 30.0) for p in self.procs))

    def kill(self, i: int) -> None:
        self.procs[i].kill()

    async def restart(self, i: int) -> None:
        """Start a killed node again on its port and data folder."""
        await asyncio.to_thread(self.procs[i].start, 30.0)

    def pause(self, i: int) -> None:
        proc = self.procs[i].proc
        assert proc is not None and proc.poll() is None
        os.kill(proc.pid, signal.SIGSTOP)
        self._stopped.add(i)

    def resume(self, i: int) -> None:
        proc = self.procs[i].proc
        if i in self._stopped and proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self._stopped.discard(i)

    async def node_id(self, i: int) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{self.urls[i]}/healthz") as r:
            return int((await r.json())["node_id"])

    async def states(self) -> list[str]:
        """What each node's ``/healthz`` answers now: its status, an HTTP code, or why not."""

        async def one(url: str) -> str:
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
                    http.get(f"{url}/healthz") as r,
                ):
                    return str((await r.json()).get("status")) if r.status == 200 else f"HTTP {r.status}"
            except TimeoutError:
                return "no answer"
            except aiohttp.ClientError:
                return "down"

        return list(await asyncio.gather(*(one(u) for u in self.urls)))

    def stop(self) -> None:
        for i in list(self._stopped):
            self.resume(i)  # a stopped process cannot handle SIGTERM
        for p in self.procs:
            p.stop()

    def log_lines(self, needle: str) -> int:
        total = 0
        for p in self.procs:
            with contextlib.suppress(FileNotFoundError):
                total += p.log_path.read_text(errors="replace").count(needle)
        return total


# --- the load ----------------------------------------------------------------------------------


@dataclass
class SendRecord:
    sender: int
    cmid: str
    to: str | None
    conv_id: str | None
    started: float
    ack: SendAck | None = None
    finished: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class User:
    index: int
    user_id: str
    token: str
    client: Client | None = None
    items: list[InboxItem | GroupItem] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        assert self.client is not None
        async for item in self.client.events():
            if isinstance(item, InboxItem | GroupItem):
                self.items.append(item)
                self.changed.set()

    def delivered(self) -> dict[str, list[MessageOut]]:
        """Conversation entries in the order the event stream handed them over."""
        by_conv: dict[str, list[MessageOut]] = defaultdict(list)
        for item in self.items:
            if isinstance(item.data, MessageOut):
                by_conv[item.data.conv_id].append(item.data)
        return by_conv


@dataclass
class StoreView:
    """What PostgreSQL holds after a run, read directly (not through a node)."""

    rows: list[asyncpg.Record]  # load messages: sender, client_msg_id, conv, seq, msg_id
    heads: dict[str, int]  # conv_id -> last_seq
    members: dict[str, list[str]]  # conv_id -> current member user ids
    entries: dict[tuple[str, int], str]  # (conv_id, seq) -> msg_id, every entry
    gaps: list[str]  # conversations whose seqs are not exactly 1..last_seq


@dataclass
class Outcome:
    """What one run measured; ``problems`` is empty when every check held."""

    name: str
    sent: int = 0
    acked: int = 0
    load_s: float = 0.0
    offered_rate: float = 0.0
    acked_rate: float = 0.0
    skipped: int = 0
    longest_ack_s: float = 0.0
    p99_ack_s: float = 0.0
    retries: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # error code -> attempts refused with it
    unacked: int = 0
    lost: int = 0
    dups: int = 0
    mismatched: int = 0
    conv_gaps: int = 0
    undelivered: int = 0
    delivered_twice: int = 0
    out_of_order: int = 0
    phantoms: int = 0
    deadlocks: int = 0
    lock_waits: int = 0
    node_tracebacks: int = 0
    node_states: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"cluster faults [{self.name}]: {self.sent} sends over {self.load_s:.1f} s "
            f"(offered {self.offered_rate:.0f}/s, acked {self.acked_rate:.0f}/s, {self.skipped} skipped at the "
            f"in-flight cap, {self.retries} attempts refused {self.refusals}), "
            f"longest ACK wait {self.longest_ack_s:.2f} s "
            f"(p99 {self.p99_ack_s:.2f} s); never acked {self.unacked}, lost {self.lost}, stored twice {self.dups}, "
            f"ack/store mismatch {self.mismatched}, conversation gaps {self.conv_gaps}, undelivered "
            f"{self.undelivered}, delivered twice {self.delivered_twice}, out of order {self.out_of_order}, "
            f"not as stored {self.phantoms}; "
            f"PostgreSQL: {self.deadlocks} deadlocks, {self.lock_waits} logged lock waits; "
            f"{self.node_tracebacks} tracebacks in node logs; /healthz at the end: {', '.join(self.node_states)}"
        )


class Run:
    """Users, groups and the load on a running :class:`ClusterNodes`."""

    def __init__(self, nodes: ClusterNodes, dsn: str, size: Size, *, seed: int = 16) -> None:
        self.nodes = nodes
        self.dsn = dsn
        self.size = size
        self.rng = random.Random(seed)
        self.users: list[User] = []
        self.groups: list[tuple[str, list[int]]] = []  # conv_id, member indexes
        self.sends: list[SendRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight: Counter[int] = Counter()  # sends awaiting their ACK, per user
        self.skipped = 0
        self.load_started = 0.0
        self.load_ended = 0.0

    # -- setup ------------------------------------------------------------------------------
    async def setup(self) -> None:
        urls = self.nodes.urls
        sem = asyncio.Semaphore(8)

        async def make(i: int) -> User:
            url = urls[i % NODES]
            async with sem, HttpApi(url) as api:
                user = await api.register(f"u{i:04d}", PASSWORD)
                session = await api.login(f"u{i:04d}", PASSWORD, "d1", "desktop")
            return User(i, user.user_id, session.token)

        self.users = list(await asyncio.gather(*(make(i) for i in range(self.size.users))))
        for u in self.users:
            start = u.index % NODES
            endpoints = urls[start:] + urls[:start]  # its own node first, then the others
            u.client = Client(endpoints, u.token, backoff_initial_s=0.1, backoff_max_s=2.0)
        await asyncio.gather(*(u.client.start() for u in self.users if u.client is not None))
        for u in self.users:
            u.pump = asyncio.get_running_loop().create_task(u._pump())
        n = self.size.users
        for g, members in enumerate(self.size.groups):
            # evenly spread member indexes: i % 3 cycles, so every group spans the nodes
            chosen = sorted({(g + k * n // members) % n for k in range(members)})
            owner = self.users[chosen[0]]
            assert owner.client is not None
            created = await owner.client.call(
                "group_create", name=f"g{g}", members=[self.users[i].user_id for i in chosen[1:]]
            )
            self.groups.append((created["group"]["conv_id"], chosen))

    def peers(self, i: int) -> list[int]:
        n = self.size.users
        steps = [1, 2, 4, 5, 7, 8, 10, 11][: self.size.peers]  # never a multiple of 3: another node
        return [(i + s) % n for s in steps]

    # -- the load ------------------------------------------------------------------------------
    def _pick(self) -> tuple[int, str | None, str | None]:
        """A sender and where to: (sender, to, None) one-to-one or (sender, None, conv_id)."""
        if self.rng.random() < 0.6:
            sender = self.rng.randrange(self.size.users)
            return sender, self.users[self.rng.choice(self.peers(sender))].user_id, None
        conv_id, members = self.rng.choice(self.groups)
        return self.rng.choice(members), None, conv_id

    def _one(self, seq: int) -> None:
        # a user whose client is stuck has MAX_IN_FLIGHT_PER_USER sends waiting; its app would
        # not pile up more, so another user sends instead and the offered rate holds
        for _ in range(10):
            sender, to, conv_id = self._pick()
            if self.in_flight[sender] < MAX_IN_FLIGHT_PER_USER:
                break
        else:
            self.skipped += 1
            return
        record = SendRecord(sender, f"f{seq:07d}", to, conv_id, time.monotonic())
        self.sends.append(record)
        self.in_flight[sender] += 1
        task = asyncio.get_running_loop().create_task(self._send(record))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, sender))

    def _done(self, sender: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.in_flight[sender] -= 1

    async def _send(self, record: SendRecord) -> None:
        client = self.users[record.sender].client
        assert client is not None
        body = {"text": f"{record.cmid} from u{record.sender:04d}"}
        while True:
            try:
                ack = await client.send(to=record.to, conv_id=record.conv_id, body=body, client_msg_id=record.cmid)
            except ApiError as exc:
                record.errors.append(exc.code)
                if exc.code not in RETRYABLE:
                    return
                await asyncio.sleep(min(max(exc.retry_after or 0.2, 0.05), 2.0))
                continue
            except YimClientError as exc:  # the client ended (e.g. replaced, revoked): never ACKed
                record.errors.append(type(exc).__name__)
                return
            record.ack, record.finished = ack, time.monotonic()
            return

    async def load(self, seconds: float) -> None:
        """Issue ``rate`` sends a second for ``seconds``, open loop."""
        # time.monotonic(), not the loop's clock: ACK times are taken with it too
        self.load_started = start = time.monotonic()
        issued = len(self.sends)
        first = issued
        while (now := time.monotonic()) - start < seconds:
            due = first + int((now - start) * self.size.rate)
            while issued < due:
                self._one(issued)
                issued += 1
            await asyncio.sleep(0.01)
        self.load_ended = time.monotonic()

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for every send to be answered; what is left counts as unacked."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the checks ------------------------------------------------------------------------------
    async def _store(self) -> StoreView:
        conn = await asyncpg.connect(self.dsn)
        # one snapshot: a send still retried by its client must not add a conversation
        # between two of these reads
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = await conn.fetch(
                    "SELECT sender_id::text AS sender, client_msg_id, conv_id::text AS conv, seq,"
                    " msg_id::text AS msg_id FROM messages WHERE client_msg_id LIKE 'f%' AND kind = 'text'"
                )
                heads = {
                    r["id"]: r["last_seq"] for r in await conn.fetch("SELECT id::text, last_seq FROM conversations")
                }
                members: dict[str, list[str]] = defaultdict(list)
                for r in await conn.fetch(
                    "SELECT conv_id::text, user_id::text FROM user_conversations WHERE left_seq IS NULL"
                ):
                    members[r["conv_id"]].append(r["user_id"])
                entries = {
                    (r["conv"], r["seq"]): r["msg_id"]
                    for r in await conn.fetch("SELECT conv_id::text AS conv, seq, msg_id::text AS msg_id FROM messages")
                }
                seqs: dict[str, list[int]] = defaultdict(list)
                for conv, seq in sorted(entries):
                    seqs[conv].append(seq)
                gaps = [conv for conv, got in seqs.items() if got != list(range(1, heads.get(conv, 0) + 1))]
                return StoreView(rows, heads, members, entries, gaps)
        finally:
            await conn.close()

    async def _wait_delivered(self, heads: dict[str, int], members: dict[str, list[str]], timeout: float) -> None:
        by_user: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for conv, users in members.items():
            for uid in users:
                by_user[uid].append((conv, heads[conv]))

        def caught_up(u: User) -> bool:
            got = u.delivered()
            return all(len(got.get(conv, [])) >= head for conv, head in by_user[u.user_id])

        async def one(u: User) -> None:
            while not caught_up(u):
                u.changed.clear()
                await u.changed.wait()

        await asyncio.wait([asyncio.ensure_future(one(u)) for u in self.users], timeout=timeout)

    async def verify(self, outcome: Outcome, pg_log: Path, deliver_timeout: float = 30.0) -> Outcome:
        """Fill ``outcome`` from the clients, the store and the logs; list what failed."""
        o = outcome
        o.sent = len(self.sends)
        o.skipped = self.skipped
        o.load_s = self.load_ended - self.load_started
        o.offered_rate = o.sent / o.load_s if o.load_s else 0.0
        acked = [s for s in self.sends if s.ack is not None]
        o.acked = len(acked)
        o.unacked = o.sent - o.acked
        o.retries = sum(len(s.errors) for s in self.sends)
        o.refusals = dict(Counter(e for s in self.sends for e in s.errors))
        in_window = [s for s in acked if s.finished is not None and s.finished <= self.load_ended]
        o.acked_rate = len(in_window) / o.load_s if o.load_s else 0.0
        waits = sorted(s.finished - s.started for s in acked if s.finished is not None)
        if waits:
            o.longest_ack_s = waits[-1]
            o.p99_ack_s = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        if o.unacked:
            errors = Counter(e for s in self.sends if s.ack is None for e in s.errors[-1:])
            o.problems.append(f"{o.unacked} of {o.sent} sends never acknowledged (last errors: {dict(errors)})")

        # The store: each ACKed (sender, client_msg_id) once, as ACKed.
        store = await self._store()
        rows, heads, members, gaps = store.rows, store.heads, store.members, store.gaps
        stored: dict[tuple[str, str], list[asyncpg.Record]] = defaultdict(list)
        for r in rows:
            stored[(r["sender"], r["client_msg_id"])].append(r)
        o.dups = sum(1 for rs in stored.values() if len(rs) > 1)
        for s in acked:
            assert s.ack is not None
            rs = stored.get((self.users[s.sender].user_id, s.cmid), [])
            if not rs:
                o.lost += 1
            elif (rs[0]["conv"], rs[0]["seq"], rs[0]["msg_id"]) != (s.ack.conv_id, s.ack.seq, s.ack.msg_id):
                o.mismatched += 1
        o.conv_gaps = len(gaps)
        for what, count in (
            ("ACKed messages missing from the store", o.lost),
            ("messages stored more than once", o.dups),
            ("ACKs naming another conv_id/seq/msg_id than the store", o.mismatched),
            ("conversations whose seqs are not 1..last_seq", o.conv_gaps),
        ):
            if count:
                o.problems.append(f"{count} {what}")

        # The clients: every entry of every conversation once, in seq order, 1..last_seq.
        await self._wait_delivered(heads, members, deliver_timeout)
        by_id = {u.user_id: u for u in self.users}
        missing_examples: list[str] = []
        for conv, uids in members.items():
            head = heads[conv]
            for uid in uids:
                user = by_id.get(uid)
                if user is None:
                    continue
                got = user.delivered().get(conv, [])
                seqs = [m.seq for m in got]
                counts = Counter(seqs)
                o.delivered_twice += sum(c - 1 for c in counts.values() if c > 1)
                o.out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
                o.phantoms += sum(1 for m in got if store.entries.get((conv, m.seq)) != m.msg_id)
                gone = set(range(1, head + 1)) - set(counts)
                o.undelivered += len(gone)
                if gone and len(missing_examples) < 5:
                    where = user.client.endpoint.http if user.client is not None else "?"
                    missing_examples.append(f"u{user.index:04d}@{where} conv {conv} seqs {sorted(gone)[:5]}")
        if o.undelivered:
            o.problems.append(f"{o.undelivered} entries never delivered to a member device, e.g. {missing_examples}")
        if o.delivered_twice:
            o.problems.append(f"{o.delivered_twice} entries delivered twice to a device")
        if o.out_of_order:
            o.problems.append(f"{o.out_of_order} entries delivered out of seq order")
        if o.phantoms:
            o.problems.append(f"{o.phantoms} delivered entries that are not the stored entry of their seq")

        text = await asyncio.to_thread(pg_log.read_text, errors="replace")
        o.deadlocks = text.count("deadlock detected")
        o.lock_waits = text.count("still waiting for")
        if o.deadlocks:
            o.problems.append(f"{o.deadlocks} `deadlock detected` in the PostgreSQL log")
        o.node_tracebacks = self.nodes.log_lines("Traceback")
        o.node_states = await self.nodes.states()
        return o

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for u in self.users:
            if u.client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        await u.client.close()
            if u.pump is not None:
                u.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await u.pump
