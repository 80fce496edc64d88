"""Measurements for docs/operations.md against running nodes, one or several (loopback only).

    python -m yimbench.cluster idle  --url http://127.0.0.1:8081 --conns 2000 --pid PID
    python -m yimbench.cluster pairs --url http://127.0.0.1:8081 [--url ...] --pairs 30 --messages 300

``idle`` registers users, holds one authenticated WebSocket each and reports the growth of
the nodes' RSS (``--pid``: the node processes) per connection. ``pairs``: sender i connects
to ``--url`` number i mod n and its receiver to the next one, so with several nodes every
message crosses nodes (route lookup + Redis publish); reports delivered messages/s and
send -> push latency. Standalone (aiohttp only); every loop is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Client:
    """One authenticated device: requests by rid, pushed events counted (and timed)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url.rstrip("/")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.user_id = ""
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.latencies: list[float] = []
        self.received = 0
        self._reader: asyncio.Task[None] | None = None

    async def join(self, name: str) -> None:
        body = {"username": name, "password": "bench-password-1"}
        async with self.http.post(f"{self.url}/api/v1/accounts", json=body) as r:
            if r.status != 201:
                raise RuntimeError(f"register {name}: {r.status} {await r.text()}")
        body |= {"device_id": "bench", "platform": "desktop"}
        async with self.http.post(f"{self.url}/api/v1/sessions", json=body) as r:
            if r.status != 201:
                raise RuntimeError(f"login {name}: {r.status} {await r.text()}")
            login = await r.json()
        self.user_id = login["user_id"]
        self.ws = await self.http.ws_connect(f"{self.url}/ws", max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.request("auth", token=login["token"])

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["t"] in ("ok", "err"):
                fut = self._waiting.pop(frame["rid"], None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
            elif frame["t"] == "event" and frame["data"].get("sender_id") != self.user_id:
                self.received += 1
                sent = frame["data"]["body"].get("text", "").split(" ", 1)[0]
                if sent.replace(".", "", 1).isdigit():
                    self.latencies.append(time.time() - float(sent))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.ws is not None
        rid = next(self._rids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.ws.send_json({"op": op, "rid": rid, **fields})
        frame = await fut
        if frame["t"] == "err":
            raise RuntimeError(f"{op}: {frame['code']} {frame['message']}")
        return frame.get("data") or {}

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader


async def _join_all(http: aiohttp.ClientSession, urls: list[str], n: int, tag: str, conc: int) -> list[Client]:
    sem = asyncio.Semaphore(conc)
    clients = [Client(http, urls[i % len(urls)]) for i in range(n)]

    async def one(i: int) -> None:
        async with sem:
            await clients[i].join(f"{tag}{i}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return clients


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    tag = "i" + secrets.token_hex(3)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http, asyncio.timeout(args.timeout):
        before = {p: rss_kb(p) for p in args.pid}
        t0 = time.monotonic()
        clients = await _join_all(http, args.url, args.conns, tag, args.concurrency)
        joined_s = time.monotonic() - t0
        await asyncio.sleep(args.hold)
        after = {p: rss_kb(p) for p in args.pid}
        for c in clients:
            await c.close()
    grown = sum(after.values()) - sum(before.values())
    return {
        "scenario": "idle",
        "conns": args.conns,
        "nodes": len(args.url),
        "join_s": round(joined_s, 1),
        "rss_kb_before": before,
        "rss_kb_after": after,
        "kb_per_conn": round(grown / args.conns, 1),
    }


async def pairs(args: argparse.Namespace) -> dict[str, Any]:
    tag = "p" + secrets.token_hex(3)
    n = len(args.url)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http, asyncio.timeout(args.timeout):
        senders = await _join_all(http, args.url, args.pairs, tag + "s", 32)
        receivers = [Client(http, args.url[(i + 1) % n]) for i in range(args.pairs)]
        sem = asyncio.Semaphore(32)

        async def join(i: int) -> None:
            async with sem:
                await receivers[i].join(f"{tag}r{i}")

        await asyncio.gather(*(join(i) for i in range(args.pairs)))

        async def send_all(s: Client, r: Client) -> None:
            window = asyncio.Semaphore(args.window)

            async def one(k: int) -> None:
                async with window:
                    text = f"{time.time():.6f} {k}"
                    await s.request("send", to=r.user_id, kind="text", body={"text": text}, client_msg_id=f"m{k}")

            await asyncio.gather(*(one(k) for k in range(args.messages)))

        total = args.pairs * args.messages
        t0 = time.monotonic()
        await asyncio.gather(*(send_all(s, r) for s, r in zip(senders, receivers, strict=True)))
        sent_s = time.monotonic() - t0
        deadline = time.monotonic() + args.drain
        while sum(r.received for r in receivers) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        done_s = time.monotonic() - t0
        got = sum(r.received for r in receivers)
        lat = sorted(x for r in receivers for x in r.latencies)
        for c in senders + receivers:
            await c.close()
    return {
        "scenario": "pairs",
        "nodes": n,
        "pairs": args.pairs,
        "messages": total,
        "delivered": got,
        "acked_per_s": round(total / sent_s),
        "delivered_per_s": round(got / done_s),
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1) if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m yimbench.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=("idle", "pairs"))
    p.add_argument("--url", action="append", required=True, help="a node (repeat for several)")
    p.add_argument("--timeout", type=float, default=300.0, help="bound of the whole run, seconds")
    p.add_argument("--conns", type=int, default=1000, help="idle: connections to hold")
    p.add_argument("--hold", type=float, default=3.0, help="idle: seconds to hold before measuring")
    p.add_argument("--concurrency", type=int, default=64, help="idle: joins in progress at once")
    p.add_argument("--pid", type=int, action="append", default=[], help="idle: node pid(s) whose RSS to read")
    p.add_argument("--pairs", type=int, default=30, help="pairs: sender -> receiver pairs")
    p.add_argument("--messages", type=int, default=300, help="pairs: messages per sender")
    p.add_argument("--window", type=int, default=10, help="pairs: sends in flight per sender")
    p.add_argument("--drain", type=float, default=10.0, help="pairs: seconds to wait for late pushes")
    args = p.parse_args(argv)
    for url in args.url:
        host = url.split("//", 1)[-1].split(":", 1)[0].split("/", 1)[0]
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            p.error(f"loopback only: {url}")
    result = asyncio.run(idle(args) if args.scenario == "idle" else pairs(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
