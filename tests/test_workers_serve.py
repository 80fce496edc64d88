"""``yim serve --workers 2`` as operators run it: a real store process and two real worker
processes on one port (yim/supervisor.py), driven over the real protocol.

Which worker holds a connection is read from the ids it is given: worker k issues msg_ids
as node ``node_id + k`` (docs/operations.md, "Workers")."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port
from tests.rawclient import Device, ProtocolError, login, make_users, until
from yim.config import SERVE_DEFAULTS, SettingsError, load_settings, usable_cores
from yim.ids.snowflake import MAX_NODE, SEQ_BITS
from yim.node import _SEEN_FLUSH_S

pytestmark = pytest.mark.slow


def node_of(msg_id: str) -> int:
    return (int(msg_id) >> SEQ_BITS) & MAX_NODE


def children(pid: int) -> set[int]:
    """``pid``'s child processes, whichever of its threads started them (the search indexer
    is started from a thread: /proc/PID/task/TID/children lists only TID's own)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except FileNotFoundError:
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class WorkersNode:
    """``yim serve --workers 2`` in a subprocess; ready once it printed its listening line."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.port = free_port()
        self.log_path = data_dir.parent / "workers-node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "yim", "serve", "--workers", "2", "--port", str(self.port), "--data",
                 str(self.data_dir)],
                env={**os.environ, "YIM_PASSWORD_HASHING": "cheapest", "YIM_PRESENCE_DEBOUNCE_S": "0.05", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"yim serve exited with {self.proc.returncode}: {self.log()}")
            if "listening on" in self.log()[mark:]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"yim serve --workers 2 did not listen within {timeout} s: {self.log()}")

    def workers(self) -> set[int]:
        assert self.proc is not None
        return children(self.proc.pid) - self.indexers()

    def indexers(self) -> set[int]:
        """The store process's search indexer processes (search_indexer "auto": one)."""
        assert self.proc is not None
        return {p for p in children(self.proc.pid) if b"yim.storage.sqlite.indexer_process" in cmdline(p)}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scrapes(list[Samples]):
    """Scrapes of one node in the order they were taken, and how long they took."""

    seconds: float = 0.0


async def scrapes(url: str, times: int = 8) -> Scrapes:
    """``/metrics`` ``times`` times, each on a new connection: the kernel picks the worker
    that answers each one (SO_REUSEPORT), so both answer some of them."""
    out = Scrapes()
    started = time.monotonic()
    for _ in range(times):
        async with (
            aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.get("/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        out.append({(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples})
        assert len(out[-1]) == len(samples), "a series given twice (Prometheus refuses the scrape)"
    out.seconds = time.monotonic() - started
    return out


def whole_node(samples: Scrapes, workers: int = 2) -> Samples:
    """What every scrape of the node agrees on, whichever worker answered it: two workers
    counted, each message once (the series sends move, read after the sends are ACKed), and
    the store's writer jobs as the store process counts them now (each worker's own copy of
    them lags by up to STATS_MAX_AGE: summed in, scrapes would disagree).

    The writer jobs are not frozen while the node is idle: every worker writes its devices'
    last-seen times as one job every ``_SEEN_FLUSH_S`` (yim/node.py), whenever its devices
    changed. So the job counts, read fresh from the store process, only never go back from
    one scrape to the next and grow by no more than those flushes over the scrapes' time; a
    worker's lagging copy would go back, one summed in would jump by the whole count."""
    keys = [("yim_workers_reporting", ()), ("yim_messages_in_total", ()), ("yim_frames_in_total", (("op", "send"),)),
            ("yim_store_latency_seconds_count", ())]  # fmt: skip
    seen = [{k: s[k] for k in keys} for s in samples]
    assert all(one == seen[0] for one in seen), seen
    assert seen[0][("yim_workers_reporting", ())] == 2
    jobs = [s[("yim_store_jobs_total", ())] for s in samples]
    flushes = workers * (1 + int(samples.seconds / _SEEN_FLUSH_S))
    assert jobs == sorted(jobs) and jobs[-1] - jobs[0] <= flushes, (jobs, samples.seconds)
    return samples[0]


async def get_metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """``GET /metrics`` on a connection of one's own (the same worker answers every time)."""
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    assert head.startswith("HTTP/1.1 200"), head
    size = next(int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length:"))
    return (await reader.readexactly(size)).decode()


def worker_of_connection(workers: set[int], server_port: int, client_port: int) -> int:
    """The worker process holding the server end of the loopback TCP connection from
    ``client_port``, found by the socket's inode in /proc."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inode = fields[9]
    assert inode is not None, "the connection is not in /proc/net/tcp"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    raise AssertionError("no worker holds the connection")


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_workers_setting_is_checked_in_one_line(tmp_path: Path) -> None:
    assert load_settings(None, data_dir=str(tmp_path)).worker_count == 1
    assert load_settings(None, workers="3").worker_count == 3
    assert load_settings(None, workers="auto").worker_count == min(usable_cores(), 64)
    for bad, says in [
        ("0", "from 1 to 64"),
        ("65", "from 1 to 64"),
        ("many", "from 1 to 64"),
    ]:
        with pytest.raises(SettingsError, match=says):
            load_settings(None, workers=bad)
    with pytest.raises(SettingsError, match="a cluster scales by adding nodes"):
        load_settings(None, workers="2", redis_url="redis://127.0.0.1:1/0", store="postgres://x@127.0.0.1/db")
    with pytest.raises(SettingsError, match="embedded SQLite store"):
        load_settings(None, workers="2", store="postgres://x@127.0.0.1/db")
    out = subprocess.run(
        [sys.executable, "-m", "yim", "serve", "--workers", "2", "--redis", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "a cluster scales by adding nodes" in out.stderr, out.stderr


def test_serve_uses_every_core_unless_told_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``yim serve`` defaults to auto (Settings built in code stay one process); what an
    operator says anywhere wins; auto is one process where workers cannot run, never a
    refusal to start."""
    monkeypatch.delenv("YIM_WORKERS", raising=False)
    cores = min(usable_cores(), 64)
    assert cores == len(os.sched_getaffinity(0)) or cores == 64
    assert load_settings(None, defaults=SERVE_DEFAULTS).worker_count == cores
    assert load_settings(None).worker_count == 1
    assert load_settings(None, defaults=SERVE_DEFAULTS, workers="1").worker_count == 1
    config = tmp_path / "yim.toml"
    config.write_text("workers = 1\n")
    assert load_settings(str(config), defaults=SERVE_DEFAULTS).worker_count == 1
    monkeypatch.setenv("YIM_WORKERS", "1")
    assert load_settings(None, defaults=SERVE_DEFAULTS).worker_count == 1
    monkeypatch.delenv("YIM_WORKERS")
    cluster = load_settings(None, defaults=SERVE_DEFAULTS, store="postgres://x@127.0.0.1/db")
    assert cluster.worker_count == 1
    assert load_settings(None, defaults=SERVE_DEFAULTS, redis_url="redis://127.0.0.1:1/0").worker_count == 1


def test_auto_is_one_process_on_a_host_that_cannot_run_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS (where the README's ``make serve`` runs too), a kernel before 5.3, a sandbox
    that refuses pidfd_open: ``yim serve`` with no flags serves as one process, and a number
    of workers is refused in one line, where the store process would fail half-started."""
    monkeypatch.delenv("YIM_WORKERS", raising=False)
    with monkeypatch.context() as m:
        m.setattr(sys, "platform", "darwin")
        assert load_settings(None, defaults=SERVE_DEFAULTS).worker_count == 1
        with pytest.raises(SettingsError, match="worker processes need Linux, and this is darwin"):
            load_settings(None, workers="2")

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    with monkeypatch.context() as m:
        m.setattr(os, "pidfd_open", refused)
        assert load_settings(None, defaults=SERVE_DEFAULTS).worker_count == 1
        with pytest.raises(SettingsError, match=r"need pidfd_open \(Linux 5.3 or later\)"):
            load_settings(None, workers="2")
    assert load_settings(None, workers="2").worker_count == 2  # this host runs them


def test_serve_without_workers_starts_one_per_core(tmp_path: Path) -> None:
    """The real command as `make serve` runs it: no --workers, no setting."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "YIM_WORKERS"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yim", "serve", "--port", str(port), "--data", str(tmp_path / "data")],
            env={**env, "YIM_PASSWORD_HASHING": "cheapest"}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        line = next(x for x in log.read_text().splitlines() if "listening on" in x)
        cores = min(usable_cores(), 64)
        if cores >= 2:
            assert f"with {cores} workers" in line, line
            assert len(children(proc.pid)) == cores + 1  # the workers and the search indexer
        else:
            assert "workers" not in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=40)


async def test_two_workers_are_one_node(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("旧词\n", encoding="utf-8")
    # word lists checked on SIGHUP only: the one way a running node takes a changed file here
    # uploads a crash cut short: of a one-process node before, and of a worker
    uploads = tmp_path / "data" / "tmp" / "uploads"
    (uploads / "worker-5").mkdir(parents=True)
    (uploads / "cut-short.part").write_bytes(b"x" * 1000)
    (uploads / "worker-5" / "cut-short.part").write_bytes(b"x" * 1000)
    node = WorkersNode(tmp_path / "data", {"YIM_WORD_LISTS": f"reject:{words}", "YIM_WORD_LISTS_CHECK_S": "0"})
    await asyncio.to_thread(node.start)
    try:
        assert sorted(p.name for p in uploads.iterdir()) == ["worker-0", "worker-1"]
        await _one_node(node, words)
    finally:
        await asyncio.to_thread(node.stop)


async def _one_node(node: WorkersNode, words: Path) -> None:
    assert node.proc is not None
    store_pid = node.proc.pid
    first_workers = node.workers()
    assert len(first_workers) == 2, node.log()
    indexers = node.indexers()
    assert len(indexers) == 1, node.log()  # the store process's search indexer runs beside it
    async with aiohttp.ClientSession(node.url) as http:
        logins = await make_users(http, [f"wk{i}" for i in range(8)])
        ids = [lg["user_id"] for lg in logins]
        devs = [Device(http, lg) for lg in logins]
        await asyncio.gather(*(d.connect() for d in devs))
        # Which worker holds each device: the node id in the msg_id its send is given.
        acks = await asyncio.gather(*(d.request("send", to=ids[(i + 1) % 8], kind="text", body={"text": "hi"},
                                                client_msg_id=f"hi{i}") for i, d in enumerate(devs)))  # fmt: skip
        on = [node_of(a["msg_id"]) for a in acks]
        tries = 0
        while len(set(on)) < 2:  # the kernel hashed every connection to one worker: one more
            tries += 1
            assert tries < 30, "every connection went to one worker"
            lg = await login(http, "wk0", f"extra{tries}")
            d = Device(http, lg)
            await d.connect()
            a = await d.request("send", to=ids[1], kind="text", body={"text": "hi"}, client_msg_id=f"x{tries}")
            if node_of(a["msg_id"]) != on[0]:
                devs[0], on[0] = d, node_of(a["msg_id"])
            else:
                await d.close()
        assert set(on) == {0, 1}, on
        ia, ib = on.index(0), on.index(1)
        a, b = devs[ia], devs[ib]

        # Between workers: delivered once, in order, every ACK given.
        before = whole_node(await scrapes(node.url))
        b.events.clear()
        sent = await asyncio.gather(*(a.request("send", to=ids[ib], kind="text", body={"text": f"m{n}"},
                                                client_msg_id=f"ab{n}") for n in range(20)))  # fmt: skip
        # /metrics answers for the whole node whichever worker takes the scrape: the 20
        # messages once each, and the store's own series once and fresh from the store
        # process (a send is one writer job: all 20 are in the very next scrape)
        after = whole_node(await scrapes(node.url))
        assert after[("yim_messages_in_total", ())] - before[("yim_messages_in_total", ())] == 20
        jobs = after[("yim_store_jobs_total", ())] - before[("yim_store_jobs_total", ())]
        assert 20 <= jobs < 40, jobs
        assert all(not s["duplicate"] for s in sent)
        await until(lambda: len([e for e in b.events if e["data"].get("conv_id") == sent[0]["conv_id"]]) >= 20)
        got = [e for e in b.events if e["data"].get("conv_id") == sent[0]["conv_id"]]
        assert sorted(e["data"]["msg_id"] for e in got) == sorted(s["msg_id"] for s in sent)
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
        assert [e["data"]["seq"] for e in got] == sorted(s["seq"] for s in sent)

        # One user's pushes keep commit order whichever worker each sender is on: b gets
        # sends through its own worker (c) and through the other (a), interleaved, and sees
        # its inbox seqs one after the other, never a jump a client would have to sync over.
        c, tries = None, 0
        other = next(i for i in range(8) if i not in (ia, ib))
        while c is None:
            tries += 1
            assert tries < 30, "no sender landed on b's worker"
            d = Device(http, await login(http, f"wk{other}", f"third{tries}"))
            await d.connect()
            probe = await d.request("send", to=ids[ia], kind="text", body={"text": "hi"}, client_msg_id=f"c{tries}")
            if node_of(probe["msg_id"]) == on[ib]:
                c = d
            else:
                await d.close()
        b.events.clear()
        burst = 80
        await asyncio.gather(*(dev.request("send", to=ids[ib], kind="text", body={"text": f"o{k}"},
                                           client_msg_id=f"o{k}{tag}")
                               for k in range(burst) for dev, tag in ((a, "a"), (c, "c"))))  # fmt: skip
        await until(lambda: len(b.events) >= 2 * burst)
        seqs = [e["seq"] for e in b.events]
        assert seqs == list(range(seqs[0], seqs[0] + 2 * burst)), seqs

        # A user's two devices on two workers both get a message, once each; the sender's
        # other device (on the other worker) gets it too.
        b2 = None
        for n in range(30):
            lg = await login(http, f"wk{ib}", f"second{n}", platform="web")
            d = Device(http, lg)
            await d.connect()
            ack = await d.request("send", to=ids[ia], kind="text", body={"text": "probe"}, client_msg_id=f"p{n}")
            if node_of(ack["msg_id"]) == 0:
                b2 = d
                break
            await d.close()
        assert b2 is not None, "no second device landed on worker 0"
        await until(lambda: any(e["data"].get("client_msg_id") == f"p{n}" for e in b.events))  # sender's other device
        b.events.clear()
        b2.events.clear()
        one = await a.request("send", to=ids[ib], kind="text", body={"text": "both"}, client_msg_id="both")
        for dev in (b, b2):
            await until(lambda dev=dev: any(e["data"].get("msg_id") == one["msg_id"] for e in dev.events))
        await asyncio.sleep(0.2)  # a duplicate push would come right behind the first
        assert [e["data"].get("msg_id") for e in b.events].count(one["msg_id"]) == 1
        assert [e["data"].get("msg_id") for e in b2.events].count(one["msg_id"]) == 1
        # Search, from both workers, finds what was ACKed before it (the indexer process's barrier).
        for dev in (b, b2):
            assert [h["text"] for h in (await dev.request("search", q="both"))["hits"]] == ["both"]

        # Presence agrees whichever worker is asked: both devices' platforms, from both.
        want = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            views = [(await d.request("presence_query", user_ids=[ids[ib]]))["presence"][0] for d in (b, b2)]
            if views[0] == views[1] and views[0]["status"] == "online" and len(views[0].get("platforms", [])) == 2:
                want = views[0]
                break
            await asyncio.sleep(0.05)
        assert want is not None, views

        # SIGHUP to the store process reloads the word lists of every worker: a word added
        # to the file is refused whichever worker the sender is on.
        for dev, to, n in ((a, ids[ib], 0), (b, ids[ia], 1)):
            ok = await dev.request("send", to=to, kind="text", body={"text": "说新词"}, client_msg_id=f"w{n}")
            assert not ok["duplicate"]
        await asyncio.to_thread(words.write_text, "旧词\n新词\n", encoding="utf-8")
        os.kill(store_pid, signal.SIGHUP)
        await wait_for(lambda: node.log().count("word lists reloaded: 2 entries to reject") == 2)
        assert node.proc.poll() is None  # SIGHUP reloads; it ends nothing
        for dev, to, n in ((a, ids[ib], 0), (b, ids[ia], 1)):  # one device on each worker
            with pytest.raises(ProtocolError) as refused:
                await dev.request("send", to=to, kind="text", body={"text": "说新词"}, client_msg_id=f"v{n}")
            assert refused.value.code == "content_blocked"

        # A worker that does not answer (stopped) is left out of a scrape after a bound
        # instead of hanging it: the worker answering counts one worker.
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)  # one connection, kept alive
        try:
            assert "\nyim_workers_reporting 2.0\n" in await get_metrics(reader, writer)
            port = writer.get_extra_info("sockname")[1]
            frozen = (first_workers - {worker_of_connection(first_workers, node.port, port)}).pop()
            os.kill(frozen, signal.SIGSTOP)
            try:
                async with asyncio.timeout(10):
                    text = await get_metrics(reader, writer)
            finally:
                os.kill(frozen, signal.SIGCONT)
            assert "\nyim_workers_reporting 1.0\n" in text, text
        finally:
            writer.close()

        # SIGKILL one worker: its clients are cut, reconnect (to a live worker), sync, and
        # find every message sent meanwhile exactly once; the worker is started again.
        # The devices cut are those whose connection the victim holds, found before the kill:
        # their clients see the ends one read at a time, so "the first seen closed" is not all.
        victim = sorted(first_workers)[0]
        holder = {i: worker_of_connection(first_workers, node.port, d.ws.get_extra_info("sockname")[1])
                  for i, d in enumerate(devs) if d.ws is not None}  # fmt: skip
        cut = [i for i, pid in holder.items() if pid == victim]
        kept = [i for i, pid in holder.items() if pid != victim]
        assert cut and kept, (cut, kept)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: not alive(victim))
        await until(lambda: all(devs[i].closed.is_set() for i in cut), timeout=10)
        assert not any(devs[i].closed.is_set() for i in kept), "a device on the live worker was cut"
        heads = {i: max((e["seq"] for e in devs[i].events), default=0) for i in cut}
        sender = devs[kept[0]]
        during = await asyncio.gather(*(sender.request("send", to=ids[i], kind="text", body={"text": "meanwhile"},
                                                       client_msg_id=f"k{i}") for i in cut))  # fmt: skip
        for i in cut:
            d = Device(http, logins[i])
            await d.connect()
            events, _ = await d.sync_all(0)
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(1, len(seqs) + 1)), f"inbox seqs of w{i} have a gap or a duplicate"
            mids = [e["data"]["msg_id"] for e in events if e["type"] == "message"]
            assert len(mids) == len(set(mids))
            assert during[cut.index(i)]["msg_id"] in mids
            assert max(seqs) > heads[i]
            await d.close()
        await wait_for(lambda: "serves again" in node.log())
        assert "starting it again" in node.log() and len(node.workers()) == 2 and victim not in node.workers()
        restarted = (node.workers() - first_workers).pop()
        for d in [*devs, b2]:
            if not d.closed.is_set():
                await d.close()

        # SIGTERM: every connection is closed with 1001, the process ends with 0, no worker is left.
        watcher = Device(http, logins[0])
        await watcher.connect()
        node.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(node.proc.wait, 40) == 0, node.log()
        await until(lambda: watcher.closed.is_set(), timeout=10)
        assert watcher.ws is not None and watcher.ws.close_code == 1001
        assert not alive(restarted) and not any(alive(p) for p in first_workers | indexers)

    # The data is intact on the next start: every ACKed message, once.
    await asyncio.to_thread(node.start)
    async with aiohttp.ClientSession(node.url) as http:
        d = Device(http, logins[ib])
        await d.connect()
        history = await d.pull(sent[0]["conv_id"], 0)
        mids = [m["msg_id"] for m in history]
        assert len(mids) == len(set(mids))
        assert {s["msg_id"] for s in sent} | {one["msg_id"]} <= set(mids)
        await d.close()

    # SIGKILL of the store process: no worker outlives it.
    workers = node.workers()
    indexers = node.indexers()
    assert len(workers) == 2 and len(indexers) == 1
    node.proc.kill()
    node.proc.wait(timeout=10)
    await wait_for(lambda: not any(alive(p) for p in workers | indexers), timeout=10)
    assert store_pid != node.proc.pid
