"""What operators rely on, checked on a real ``yim serve`` process: ``GET /metrics`` counts
what happened (docs/operations.md §4 lists every metric), and SIGTERM stops the node
gracefully: every WebSocket is closed with 1001, the process exits, and what was
acknowledged before is there after a restart."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT, ServerProcess
from .rawclient import Device, ProtocolError, make_users
from .sdk_helpers import raw_close_code, raw_ws

#: metrics of the other store only (docs/operations.md §4 says which store writes each)
POSTGRES_ONLY = {"yim_store_retries_total", "yim_store_declared_conflicts_total"}


def _documented_metrics() -> set[str]:
    """The metric names in the table of docs/operations.md §4 "What to monitor"."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## 4. What to monitor", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `yim_")]
    return {name for row in rows for name in re.findall(r"`(yim_[a-z_]+)", row.split("|")[1])}


async def _scrape(http: aiohttp.ClientSession) -> tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The Content-Type, the text and every sample of ``/metrics``, by (name, labels)."""
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        content_type = resp.headers["Content-Type"]
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, text, samples


async def test_metrics_count_what_happened(tmp_path: Path) -> None:
    node = ServerProcess(tmp_path / "node")
    await asyncio.to_thread(node.start)
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession(node.url) as http:
            content_type, text, before = await _scrape(http)
            assert content_type.startswith("text/plain")
            exported = set(re.findall(r"^# TYPE (yim_[a-z_]+) ", text, re.MULTILINE))
            missing = _documented_metrics() - POSTGRES_ONLY - exported
            assert not missing, f"documented in operations.md §4 but not exported: {sorted(missing)}"

            alice, bob = await make_users(http, ["alice", "bob"])
            a, b = Device(http, alice), Device(http, bob)
            await a.connect()
            await b.connect()
            await a.request("send", to=bob["user_id"], client_msg_id="m-1", kind="text", body={"text": "hi"})
            await a.request("send", to=bob["user_id"], client_msg_id="m-1", kind="text", body={"text": "hi"})
            try:
                await a.request("send", conv_id="123", client_msg_id="m-2", kind="text", body={"text": "x"})
            except ProtocolError as exc:
                error_code = exc.code
            else:
                raise AssertionError("a send to a conversation one is not in was accepted")

            _, _, after = await _scrape(http)

            def grew(name: str, **labels: str) -> float:
                key = (name, tuple(sorted(labels.items())))
                return after.get(key, 0.0) - before.get(key, 0.0)

            assert after[("yim_connections", ())] == 2
            assert grew("yim_logins_total") == 2
            assert grew("yim_messages_in_total") == 1
            assert grew("yim_messages_duplicate_total") == 1
            assert grew("yim_frames_in_total", op="send") == 3
            assert grew("yim_errors_total", code=error_code) == 1
            assert grew("yim_deliveries_total") >= 2  # the sender's and the receiver's inbox
            await a.close()
            await b.close()
    finally:
        node.stop()


async def test_sigterm_closes_every_websocket_with_1001_and_keeps_what_was_acked(tmp_path: Path) -> None:
    node = ServerProcess(tmp_path / "node")
    await asyncio.to_thread(node.start)
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession(node.url) as http:
            alice, bob = await make_users(http, ["alice", "bob"])
            sockets = [await raw_ws(http, alice["token"]), await raw_ws(http, bob["token"])]
            send: dict[str, Any] = {"op": "send", "rid": 1, "to": bob["user_id"], "client_msg_id": "before-stop"}
            await sockets[0].send_json({**send, "kind": "text", "body": {"text": "before the stop"}})
            ack = await sockets[0].receive_json()
            assert ack["t"] == "ok", ack

            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*(raw_close_code(ws, timeout=15) for ws in sockets))
            assert codes == [1001, 1001]  # "going away": clients reconnect elsewhere and sync
            try:
                code = await asyncio.to_thread(node.proc.wait, 15)
            except subprocess.TimeoutExpired:
                raise AssertionError("the node did not exit within 15 s of SIGTERM") from None
            assert code == 0, node.log_path.read_text()
            assert "shutting down" in node.log_path.read_text()

        await asyncio.to_thread(node.start)
        async with asyncio.timeout(30), aiohttp.ClientSession(node.url) as http:
            r = await http.post(
                "/api/v1/sessions",
                json={"username": "bob", "password": "password123", "device_id": "d2", "platform": "desktop"},
            )
            assert r.status == 201, await r.text()
            device = Device(http, await r.json())
            await device.connect()
            events, _ = await device.sync_all()
            texts = [e["data"]["body"].get("text") for e in events if e["type"] == "message"]
            assert texts == ["before the stop"]
            await device.close()
    finally:
        node.stop()
