"""TLS (``yim serve --tls-cert --tls-key``: https and wss), the token-signing secret (made on
first start, kept 0600, survives restarts) and logs without secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.rawclient import Device

PASSWORD = "correct horse battery staple"


class Yim:
    """``python -m yim [--log-level L] serve ...`` in a subprocess, on a free loopback port."""

    def __init__(self, data: Path, *extra: str, log_level: str = "INFO") -> None:
        self.data = data
        self.port = free_port()
        self.log = data.parent / f"{data.name}.log"
        self.args = [sys.executable, "-m", "yim", "--log-level", log_level, "serve", "--port", str(self.port)]
        self.args += ["--data", str(data), *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        mark = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            env = {**os.environ, "YIM_PASSWORD_HASHING": "cheapest"}
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            # the listening line, not an open port: with workers (`yim serve`'s default on
            # a machine of several cores) the port opens with the first worker
            if "listening on" in self.log.read_text(errors="replace")[mark:]:
                return
            time.sleep(0.05)
        raise RuntimeError("yim serve did not listen in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def yim_proc(tmp_path: Path) -> Iterator[list[Yim]]:
    started: list[Yim] = []
    yield started
    for p in started:
        p.stop()


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def _account(http: aiohttp.ClientSession, name: str, device: str = "d1") -> dict[str, str]:
    r = await http.post("/api/v1/accounts", json={"username": name, "password": PASSWORD})
    assert r.status in (201, 409), await r.text()
    r = await http.post(
        "/api/v1/sessions", json={"username": name, "password": PASSWORD, "device_id": device, "platform": "web"}
    )
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def test_tls_serves_https_and_wss(tmp_path: Path, yim_proc: list[Yim]) -> None:
    cert, key = self_signed(tmp_path)
    node = Yim(tmp_path / "tls", "--tls-cert", str(cert), "--tls-key", str(key))
    yim_proc.append(node)
    await asyncio.to_thread(node.start)
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{node.port}"
    async with asyncio.timeout(30), aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=trust)) as http:
        alice, bob = await _account(http, "alice"), await _account(http, "bob")
        a, b = Device(http, alice), Device(http, bob)
        await a.connect()  # wss://
        await b.connect()
        assert a.ws is not None and a.ws.get_extra_info("sslcontext") is not None
        ack = await a.request("send", to=bob["user_id"], kind="text", body={"text": "over TLS"}, client_msg_id="t1")
        async with asyncio.timeout(5):
            while not b.events:
                await asyncio.sleep(0.01)
        assert b.events[0]["data"]["msg_id"] == ack["msg_id"]
        await a.close()
        await b.close()
    # an unverified client is refused by the handshake; plain HTTP gets no API
    async with aiohttp.ClientSession(url) as untrusting:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await untrusting.get("/healthz")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{node.port}") as plain:
        with pytest.raises(aiohttp.ClientError):
            r = await plain.get("/healthz")
            assert r.status != 200
    assert "listening on https://" in node.log.read_text()


async def test_the_signing_secret_is_private_and_survives_restarts(tmp_path: Path, yim_proc: list[Yim]) -> None:
    data = tmp_path / "node"
    node = Yim(data)
    yim_proc.append(node)
    await asyncio.to_thread(node.start)
    key_file = data / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # the store (password hashes) is private too
    key = key_file.read_text().strip()
    assert len(bytes.fromhex(key)) == 32
    url = f"http://127.0.0.1:{node.port}"
    async with aiohttp.ClientSession(url) as http:
        token = (await _account(http, "alice"))["token"]
    await asyncio.to_thread(node.stop)
    await asyncio.to_thread(node.start)
    assert key_file.read_text().strip() == key  # not regenerated
    async with aiohttp.ClientSession(url) as http:
        r = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200  # tokens issued before the restart still verify
    # a second node on another data folder has its own key: its tokens are worthless here
    other = Yim(tmp_path / "other")
    yim_proc.append(other)
    await asyncio.to_thread(other.start)
    assert (tmp_path / "other" / "secret.key").read_text().strip() != key
    async with aiohttp.ClientSession(f"http://127.0.0.1:{other.port}") as http:
        foreign = (await _account(http, "alice"))["token"]
    async with aiohttp.ClientSession(url) as http:
        r = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {foreign}"})
        assert r.status == 401


async def test_no_secret_reaches_the_log(tmp_path: Path, yim_proc: list[Yim]) -> None:
    """At DEBUG level, after logins (good and bad), authenticated HTTP and WebSocket use, a
    revoked token and a shutdown, the log holds no token, password or signing key."""
    node = Yim(tmp_path / "node", log_level="DEBUG")
    yim_proc.append(node)
    await asyncio.to_thread(node.start)
    url = f"http://127.0.0.1:{node.port}"
    async with asyncio.timeout(30), aiohttp.ClientSession(url) as http:
        alice = await _account(http, "alice")
        bob = await _account(http, "bob")
        r = await http.post(
            "/api/v1/sessions",
            json={"username": "alice", "password": "wrong " + PASSWORD, "device_id": "d2", "platform": "web"},
        )
        assert r.status == 401
        headers = {"Authorization": f"Bearer {alice['token']}"}
        assert (await http.get("/api/v1/me", headers=headers)).status == 200
        a = Device(http, alice)
        await a.connect()
        await a.request("send", to=bob["user_id"], kind="text", body={"text": "hello"}, client_msg_id="1")
        ws = await http.ws_connect("/ws")
        await ws.send_json({"op": "auth", "rid": 1, "token": alice["token"] + "x"})  # a bad token
        await ws.receive(timeout=5)
        await ws.close()
        second = await _account(http, "alice", "d3")
        r = await http.delete("/api/v1/sessions/current", headers={"Authorization": f"Bearer {second['token']}"})
        assert r.status == 204
        assert (await http.get("/api/v1/me", headers={"Authorization": f"Bearer {second['token']}"})).status == 401
        await a.close()
    await asyncio.to_thread(node.stop)
    log = node.log.read_text()
    key = (tmp_path / "node" / "secret.key").read_text().strip()
    assert "DEBUG" in log or "INFO" in log  # the log is not simply empty
    for secret in (alice["token"], second["token"], PASSWORD, key):
        assert secret not in log
    for token in (alice["token"], bob["token"], second["token"]):
        assert token.split(".")[2] not in log  # not even the signature part
