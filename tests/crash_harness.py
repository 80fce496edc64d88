"""Crash harness: a node under steady one-to-one and group load, killed with SIGKILL at
random points, restarted on the same data folder, again and again; then a check from the
client side that nothing the server acknowledged was lost or duplicated.

The load: every user runs a few workers, each sending messages one after another (to a
random user, to a small write-fan-out group, or to a large read-fan-out group) and now and
then marking a conversation read. A send that gets no reply before the kill is resent after
the restart with the same ``client_msg_id`` (idempotent), so at the end every message the
clients meant to send has exactly one ACK.

The check, per user, over fresh connections after the last restart:
- every ACKed message is in its conversation's history exactly once, with the ACKed
  msg_id and seq, and nothing else is (no phantom, no duplicate);
- conversation seqs are 1..last_seq without a gap; inbox seqs are 1..head without a gap;
- every entry of a write-fan-out conversation is in every member's inbox exactly once
  (the sender's too, at the inbox_seq its ACK named);
- every event pushed live before a kill is the event sync returns for that seq (a push
  is only ever sent after the commit);
- unread counts equal what the history implies: entries after the read marker, minus
  those that never count (system and recall entries, recalled messages) — the rule of
  UNREAD_SQL in yim/storage/sqlite/timeline.py — and the total is their sum.

Run standalone for longer: ``python -m tests.crash_harness --kills 100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from tests.rawclient import Device, ProtocolError

UNCOUNTED_KINDS = frozenset({"system", "recall"})


class NodeProcess(Protocol):
    """What the harness needs of the server: tests/conftest.py ``ServerProcess`` fits."""

    url: str

    def start(self, timeout: float = 20.0) -> None: ...

    def kill(self) -> None: ...


@dataclass
class Send:
    sender: int
    cmid: str
    text: str
    to: str | None = None
    conv_id: str | None = None
    ack: dict[str, Any] | None = None
    attempts: int = 0

    def frame(self) -> dict[str, Any]:
        target = {"to": self.to} if self.to is not None else {"conv_id": self.conv_id}
        return {"kind": "text", "body": {"text": self.text}, "client_msg_id": self.cmid, **target}


@dataclass
class Client:
    index: int
    login: dict[str, Any]
    device: Device | None = None
    pending: deque[Send] = field(default_factory=deque)
    pushed: list[list[dict[str, Any]]] = field(default_factory=list)  # events pushed live, per connection
    counter: int = 0
    known: dict[str, int] = field(default_factory=dict)  # conv_id -> highest seq seen


@dataclass
class Report:
    kills: int = 0
    seed: int = 0
    users: int = 0
    acked: int = 0
    acked_before_kill: int = 0
    resent: int = 0
    resent_duplicates: int = 0  # resends the server answered as duplicates (the first try had committed)
    reads: int = 0
    messages_checked: int = 0
    conversations_checked: int = 0
    inbox_events_checked: int = 0
    pushes_checked: int = 0
    #: pushes that came after a higher seq (allowed only where events reach a device by two
    #: paths: the workers of one node, docs/protocol.md §12.1)
    pushes_reordered: int = 0
    lost: int = 0
    duplicates: int = 0
    phantoms: int = 0
    seq_gaps: int = 0
    unread_mismatches: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"crash harness: {self.kills} SIGKILLs survived (seed {self.seed}), {self.users} users, "
            f"{self.acked} messages acked ({self.acked_before_kill} before a kill, {self.resent} resent after one, "
            f"{self.resent_duplicates} of those already stored), {self.reads} read markers; checked "
            f"{self.messages_checked} messages in {self.conversations_checked} conversations, "
            f"{self.inbox_events_checked} inbox events, {self.pushes_checked} live pushes "
            f"({self.pushes_reordered} out of order): lost {self.lost}, "
            f"duplicates {self.duplicates}, phantoms {self.phantoms}, seq gaps {self.seq_gaps}, "
            f"unread mismatches {self.unread_mismatches} ({self.seconds:.1f} s)"
        )

    @property
    def ok(self) -> bool:
        return not self.problems and not (
            self.lost or self.duplicates or self.phantoms or self.seq_gaps or self.unread_mismatches
        )


class CrashHarness:
    def __init__(
        self,
        node: NodeProcess,
        *,
        kills: int = 10,
        users: int = 6,
        workers: int = 3,
        load_s: tuple[float, float] = (0.05, 1.0),
        seed: int | None = None,
        deadline_s: float = 600.0,
        before_verify: Callable[[CrashHarness], Awaitable[None]] | None = None,
        ordered_pushes: bool = True,
    ) -> None:
        self.node = node
        self.kills = kills
        self.n_users = users
        self.workers = workers
        self.load_s = load_s
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.deadline = time.monotonic() + deadline_s
        self.clients: list[Client] = []
        self.sends: list[Send] = []
        self.small_group = ""  # write fan-out
        self.big_group = ""  # read fan-out
        self.draining = False
        self.before_verify = before_verify  # a hook for the checker's own test (tamper, then check)
        #: one process pushes each user's events in seq order; a node with workers may not
        #: (an event committed through another worker comes through the store process), and
        #: then only a repeated push is a problem
        self.ordered_pushes = ordered_pushes
        self.report = Report(kills=0, seed=self.seed, users=users)

    # -- driving -----------------------------------------------------------------------------
    async def run(self) -> Report:
        started = time.monotonic()
        await asyncio.to_thread(self.node.start)
        async with aiohttp.ClientSession(self.node.url) as http:
            await self._setup(http)
            for epoch in range(self.kills + 1):
                await self._connect_all(http)
                stop = asyncio.Event()
                tasks = [
                    asyncio.get_running_loop().create_task(self._worker(c, stop))
                    for c in self.clients
                    for _ in range(self.workers)
                ]
                if epoch < self.kills and time.monotonic() < self.deadline:
                    await asyncio.sleep(self.rng.uniform(*self.load_s))
                    await asyncio.to_thread(self.node.kill)  # SIGKILL mid-load
                    self.report.kills += 1
                    await asyncio.gather(*tasks)
                    await self._disconnect_all()
                    await asyncio.to_thread(self.node.start)
                    continue
                # the last epoch: stop new sends, resend everything unanswered, then check
                await asyncio.sleep(self.rng.uniform(*self.load_s))
                stop.set()
                await asyncio.gather(*tasks)
                self.draining = True
                for _ in range(3):
                    if not any(c.pending for c in self.clients):
                        break
                    await asyncio.gather(*(self._worker(c, asyncio.Event()) for c in self.clients))
                break
            await self._disconnect_all()
            if self.before_verify is not None:
                await self.before_verify(self)
            await self._verify(http)
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _setup(self, http: aiohttp.ClientSession) -> None:
        tag = f"{self.seed % 100000:05d}"
        for i in range(self.n_users):
            name = f"crash{tag}u{i}"
            r = await http.post("/api/v1/accounts", json={"username": name, "password": "password123"})
            assert r.status == 201, await r.text()
            r = await http.post(
                "/api/v1/sessions",
                json={"username": name, "password": "password123", "device_id": "d1", "platform": "desktop"},
            )
            assert r.status == 201, await r.text()
            self.clients.append(Client(i, await r.json()))
        owner = Device(http, self.clients[0].login)
        await owner.connect()
        ids = [c.login["user_id"] for c in self.clients]
        small = await owner.request("group_create", name="small", members=ids[1:3])
        big = await owner.request("group_create", name="big", members=ids[1:])
        self.small_group = small["group"]["conv_id"]
        self.big_group = big["group"]["conv_id"]
        await owner.close()

    async def _connect_all(self, http: aiohttp.ClientSession) -> None:
        for c in self.clients:
            c.device = Device(http, c.login)
            for attempt in range(50):
                try:
                    await asyncio.wait_for(c.device.connect(), timeout=10)
                    break
                except (aiohttp.ClientError, ConnectionError, TimeoutError):
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)

    async def _disconnect_all(self) -> None:
        for c in self.clients:
            if c.device is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.device.close(), timeout=10)
                c.pushed.append(list(c.device.events))
                c.device = None

    def _new_send(self, c: Client) -> Send:
        c.counter += 1
        cmid = f"u{c.index}-{c.counter}"
        text = f"{cmid} {'你好' if c.counter % 7 == 0 else 'hello'}"
        roll = self.rng.random()
        if roll < 0.25:
            s = Send(c.index, cmid, text, conv_id=self.big_group)
        elif roll < 0.45 and c.index < 3:
            s = Send(c.index, cmid, text, conv_id=self.small_group)
        else:
            peer = self.rng.choice([x for x in self.clients if x is not c])
            s = Send(c.index, cmid, text, to=peer.login["user_id"])
        self.sends.append(s)
        return s

    async def _worker(self, c: Client, stop: asyncio.Event) -> None:
        dev = c.device
        assert dev is not None
        while not stop.is_set():
            if c.pending:
                s = c.pending.popleft()
            elif self.draining:
                return
            else:
                if c.known and self.rng.random() < 0.05:
                    if not await self._read(c, dev):
                        return
                    continue
                s = self._new_send(c)
            s.attempts += 1
            if s.attempts > 1:
                self.report.resent += 1
            try:
                ack = await asyncio.wait_for(dev.request("send", **s.frame()), timeout=15)
            except ProtocolError as exc:
                c.pending.appendleft(s)
                if exc.code in ("rate_limited", "unavailable"):
                    await asyncio.sleep(0.2)
                    continue
                self.report.problems.append(f"send {s.cmid} refused: {exc}")
                return
            except (ConnectionError, aiohttp.ClientError, TimeoutError, RuntimeError):
                c.pending.appendleft(s)  # no reply: resend after the restart
                return
            if s.ack is not None:
                self.report.problems.append(f"{s.cmid} acked twice")
            s.ack = ack
            if ack.get("duplicate"):
                self.report.resent_duplicates += 1
            c.known[ack["conv_id"]] = max(c.known.get(ack["conv_id"], 0), ack["seq"])

    async def _read(self, c: Client, dev: Device) -> bool:
        conv = self.rng.choice(sorted(c.known))
        for ev in dev.events[-50:]:
            data = ev.get("data") or {}
            if ev.get("type") == "message" and data.get("conv_id") in c.known:
                c.known[data["conv_id"]] = max(c.known[data["conv_id"]], data["seq"])
        try:
            await asyncio.wait_for(dev.request("read", conv_id=conv, seq=c.known[conv]), timeout=15)
        except ProtocolError as exc:
            if exc.code != "unavailable":  # a worker whose store process was just killed says so
                self.report.problems.append(f"read refused: {exc}")
            return False
        except (ConnectionError, aiohttp.ClientError, TimeoutError, RuntimeError):
            return False
        self.report.reads += 1
        return True

    # -- checking ----------------------------------------------------------------------------
    async def _verify(self, http: aiohttp.ClientSession) -> None:
        rep = self.report
        acked = [s for s in self.sends if s.ack is not None]
        rep.acked = len(acked)
        rep.acked_before_kill = sum(1 for s in acked if s.attempts == 1)
        for s in self.sends:
            if s.ack is None:
                rep.problems.append(f"{s.cmid} never acked ({s.attempts} attempts)")
        by_conv: dict[str, list[Send]] = defaultdict(list)
        for s in acked:
            assert s.ack is not None
            by_conv[s.ack["conv_id"]].append(s)
        ids = {c.login["user_id"]: c.index for c in self.clients}
        histories: dict[str, list[dict[str, Any]]] = {}
        fanout: dict[str, str] = {}
        for c in self.clients:
            dev = Device(http, c.login)
            await dev.connect()
            try:
                events, groups = await dev.sync_all(0)
            except ProtocolError as exc:  # e.g. an inbox event whose message is gone
                rep.problems.append(f"user {c.index}: sync failed: {exc}")
                events, groups = [], (await dev.request("sync", since=2**62))["groups"]
            read_fanout = {g["conv_id"] for g in groups}
            convs = await self._conversations(dev)
            # inbox: gap-free, and each pushed event is what sync says for that seq
            seqs = [e["seq"] for e in events]
            if seqs != list(range(1, len(seqs) + 1)):
                rep.seq_gaps += 1
                rep.problems.append(f"user {c.index}: inbox seqs not 1..n")
            by_seq = {e["seq"]: e for e in events}
            for epoch_events in c.pushed:
                pushed = [e["seq"] for e in epoch_events]
                reordered = sum(1 for a, b in itertools.pairwise(pushed) if b < a)
                rep.pushes_reordered += reordered
                if len(pushed) != len(set(pushed)):
                    rep.duplicates += 1
                    rep.problems.append(f"user {c.index}: a push repeated")
                elif reordered and self.ordered_pushes:
                    rep.duplicates += 1
                    rep.problems.append(f"user {c.index}: a push out of order")
                for e in epoch_events:
                    rep.pushes_checked += 1
                    synced = by_seq.get(e["seq"])
                    if synced is None or synced["type"] != e["type"] or _msg_id(synced) != _msg_id(e):
                        rep.phantoms += 1
                        rep.problems.append(f"user {c.index}: pushed event {e['seq']} is not what the inbox holds")
            inbox_msgs = Counter(
                (e["data"]["conv_id"], e["data"]["seq"], e["data"]["msg_id"]) for e in events if e["type"] == "message"
            )
            rep.inbox_events_checked += len(events)
            for (conv_id, seq, _), n in inbox_msgs.items():
                if n > 1:
                    rep.duplicates += n - 1
                    rep.problems.append(f"user {c.index}: ({conv_id}, {seq}) in the inbox {n} times")
            total = 0
            for row in convs["conversations"]:
                conv_id = row["conv_id"]
                if conv_id not in histories:
                    histories[conv_id] = await dev.pull(conv_id, 0)
                    fanout[conv_id] = "read" if conv_id in read_fanout else "write"
                    rep.conversations_checked += 1
                history = histories[conv_id]
                if [m["seq"] for m in history] != list(range(1, row["last_seq"] + 1)):
                    rep.seq_gaps += 1
                    rep.problems.append(f"conversation {conv_id}: seqs not 1..{row['last_seq']}")
                expect_unread = sum(
                    1
                    for m in history
                    if m["seq"] > row["read_seq"] and m["kind"] not in UNCOUNTED_KINDS and not m.get("recalled")
                )
                total += row["unread"]
                if row["unread"] != expect_unread:
                    rep.unread_mismatches += 1
                    rep.problems.append(
                        f"user {c.index} in {conv_id}: unread {row['unread']}, the history implies {expect_unread}"
                    )
                if fanout[conv_id] == "write":
                    want = {(conv_id, m["seq"], m["msg_id"]) for m in history}
                    have = {k for k in inbox_msgs if k[0] == conv_id}
                    if want - have:
                        rep.lost += len(want - have)
                        rep.problems.append(f"user {c.index}: {len(want - have)} entries of {conv_id} not in the inbox")
                    if have - want:
                        rep.phantoms += len(have - want)
                        rep.problems.append(f"user {c.index}: inbox entries of {conv_id} not in its history")
            if total != convs["total_unread"]:
                rep.unread_mismatches += 1
                rep.problems.append(f"user {c.index}: total_unread {convs['total_unread']} != sum {total}")
            # the sender's own copy sits at the inbox_seq its ACK named
            for s in acked:
                assert s.ack is not None
                if s.sender == c.index and fanout.get(s.ack["conv_id"], "write") == "write":
                    ev = by_seq.get(s.ack["inbox_seq"])
                    if ev is None or _msg_id(ev) != s.ack["msg_id"]:
                        rep.problems.append(f"{s.cmid}: inbox_seq {s.ack['inbox_seq']} does not hold it")
                        rep.lost += 1
            await dev.close()
        # every acked message exactly once in its history; nothing unacked there
        for conv_id, sends in by_conv.items():
            history = histories.get(conv_id)
            if history is None:
                rep.lost += len(sends)
                rep.problems.append(f"conversation {conv_id} missing from every list")
                continue
            stored = Counter(
                (ids.get(m["sender_id"]), m["client_msg_id"]) for m in history if m["kind"] not in UNCOUNTED_KINDS
            )
            at = {(ids.get(m["sender_id"]), m["client_msg_id"]): m for m in history}
            for s in sends:
                assert s.ack is not None
                key = (s.sender, s.cmid)
                rep.messages_checked += 1
                n = stored.pop(key, 0)
                if n == 0:
                    rep.lost += 1
                    rep.problems.append(f"{s.cmid} acked as {conv_id}/{s.ack['seq']} but not in the history")
                    continue
                if n > 1:
                    rep.duplicates += n - 1
                m = at[key]
                if (m["msg_id"], m["seq"], m["body"].get("text")) != (s.ack["msg_id"], s.ack["seq"], s.text):
                    rep.problems.append(f"{s.cmid}: stored {m['msg_id']}/{m['seq']}, acked {s.ack['msg_id']}")
            if stored:
                rep.phantoms += sum(stored.values())
                rep.problems.append(f"conversation {conv_id}: {sum(stored.values())} messages nobody sent")

    async def _conversations(self, dev: Device) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        before = None
        total = 0
        while True:
            page = await dev.request("conversations", limit=100, **({"before": before} if before else {}))
            rows += page["conversations"]
            total = page["total_unread"]
            before = page["next_before"]
            if not before:
                return {"conversations": rows, "total_unread": total}


def _msg_id(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    return data.get("msg_id") if isinstance(data, dict) else None


def main() -> None:
    import tempfile
    from pathlib import Path

    from tests.conftest import ServerProcess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = ServerProcess(Path(tmp) / "node", **NODE_ENV)
        harness = CrashHarness(node, kills=args.kills, users=args.users, workers=args.workers, seed=args.seed)
        try:
            report = asyncio.run(harness.run())
        finally:
            node.stop()
    print(report.line())
    for p in report.problems[:50]:
        print("  problem:", p)
    raise SystemExit(0 if report.ok else 1)


#: the node under test: durability only (rate limits off), and a group of 6 above the
#: write-fan-out threshold so both fan-out modes are exercised
NODE_ENV = {"YIM_RATE_SEND_PER_USER_S": "0", "YIM_RATE_REQUESTS_PER_USER_S": "0", "YIM_GROUP_WRITE_FANOUT_MAX": "4"}

if __name__ == "__main__":
    main()
