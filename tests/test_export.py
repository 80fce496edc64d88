"""Data export on both stores (docs/protocol.md §19.7): "download my data" and an admin's
export of a user, over HTTP and with ``yim admin export`` (through a running node, and
``--direct`` on the store). The archive holds exactly what the user could see — the
messages of their conversations from when they joined to when they left, not what they hid,
a recalled message without its content, an edited one at its latest text, the media of
those messages with their bytes — and nothing of anyone else's; an admin export is in the
audit log; a node refuses more exports than it may build at once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from tests import conftest
from tests.rawclient import Device, make_users, until
from yim.gateway.export_http import EXPORT_GATE
from yim.node import NodeServer
from yim.storage.admin import AuditEntry
from yim.storage.blobs import blob_path

PASSWORD = "password123"
FILE_BYTES = b"alice can see this file\n" * 100
LATE_FILE_BYTES = b"sent after alice left\n" * 100


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def yim(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a subprocess, waited for off the event loop (the node runs on it)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "yim", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=conftest.ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest_asyncio.fixture
async def node(tmp_path: Path, store_url: str) -> AsyncIterator[NodeServer]:
    """A node this test may stop itself (to run ``--direct`` on a SQLite store)."""
    server = NodeServer(conftest.test_settings(tmp_path / "node", store=store_url))
    await server.start()
    try:
        yield server
    finally:
        if not server.node.stopping:
            await server.stop()


async def upload(http: aiohttp.ClientSession, token: str, data: bytes, name: str) -> str:
    r = await http.post(
        "/api/v1/media",
        params={"kind": "file", "name": name},
        data=data,
        headers={**bearer(token), "Content-Type": "text/plain"},
    )
    assert r.status == 201, await r.text()
    return str((await r.json())["media_id"])


async def download(http: aiohttp.ClientSession, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
    async with http.get(path, headers=bearer(token)) as r:
        return r.status, dict(r.headers), await r.read()


def lines(z: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in z.read(name).decode().splitlines()]


def texts(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["body"]["text"] for m in msgs if m["kind"] == "text" and not m.get("recalled")]


def everything(z: zipfile.ZipFile) -> bytes:
    return b"".join(z.read(n) for n in z.namelist())


async def world(http: aiohttp.ClientSession) -> dict[str, Any]:
    """alice, in a direct chat with bob and (for a while) a group of carol's; what she may
    not see is sent, hidden, recalled or overwritten around what she may."""
    names = ["root", "alice", "bob", "carol", "dave"]
    logins = dict(zip(names, await make_users(http, names), strict=True))
    dev = {n: Device(http, x) for n, x in logins.items()}
    for d in dev.values():
        await d.connect()
    alice, bob, carol = dev["alice"], dev["bob"], dev["carol"]
    ids = {n: d.user_id for n, d in dev.items()}

    n = [0]

    async def say(d: Device, text: str, **to: Any) -> dict[str, Any]:
        n[0] += 1  # a client's own key, never the words (it stays on a recalled message)
        return await d.request("send", kind="text", body={"text": text}, client_msg_id=f"m{n[0]}", **to)

    dm = (await say(bob, "b1 hello", to=ids["alice"]))["conv_id"]
    await say(alice, "a1 hi", conv_id=dm)
    recalled = await say(alice, "a2 RECALLED-WORDS", conv_id=dm)
    await alice.request("recall", conv_id=dm, seq=recalled["seq"])
    draft = await say(alice, "a3 DRAFT-WORDS", conv_id=dm)
    await alice.request("edit", conv_id=dm, seq=draft["seq"], text="a3 final words")
    hidden = await say(bob, "b2 HIDDEN-WORDS", conv_id=dm)
    await alice.request("hide", conv_id=dm, seqs=[hidden["seq"]])

    gid = (await carol.request("group_create", name="club", members=[ids["dave"]]))["group"]["conv_id"]
    await say(carol, "g1 BEFORE-ALICE", conv_id=gid)
    await carol.request("group_invite", conv_id=gid, user_ids=[ids["alice"]])
    await say(carol, "g2 while alice is in", conv_id=gid)
    media_id = await upload(http, logins["carol"]["token"], FILE_BYTES, "notes.txt")
    await carol.request("send", conv_id=gid, kind="file", body={"media_id": media_id}, client_msg_id="f1")
    await alice.request("group_leave", conv_id=gid)
    await say(carol, "g3 AFTER-ALICE", conv_id=gid)
    late_id = await upload(http, logins["carol"]["token"], LATE_FILE_BYTES, "late.txt")
    await carol.request("send", conv_id=gid, kind="file", body={"media_id": late_id}, client_msg_id="f2")
    other = (await say(bob, "NOT-ALICES-CHAT", to=ids["carol"]))["conv_id"]

    req = await alice.request("friend_request", to=ids["bob"])
    await bob.request("friend_accept", request_id=req["request_id"])
    await alice.request("follow", user_id=ids["carol"])
    await alice.request("block", user_id=ids["dave"])
    for d in dev.values():
        await d.close()
    return {"logins": logins, "ids": ids, "dm": dm, "gid": gid, "other": other, "media_id": media_id, "late": late_id}


def check_archive(data: bytes, w: dict[str, Any], exported_by: str) -> None:
    ids = w["ids"]
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.testzip() is None
    names = set(z.namelist())
    dm_file, group_file = f"conversations/{w['dm']}.jsonl", f"conversations/{w['gid']}.jsonl"
    assert {"README.txt", "manifest.json", "profile.json", "devices.json", "relations.json", "groups.json"} <= names
    assert {"conversations.json", "media.json", "users.json", dm_file, group_file} <= names
    assert f"conversations/{w['other']}.jsonl" not in names

    manifest = json.loads(z.read("manifest.json"))
    assert manifest["format"] == "yim-export" and manifest["version"] == 1
    assert (manifest["user_id"], manifest["username"], manifest["exported_by"]) == (ids["alice"], "alice", exported_by)
    profile = json.loads(z.read("profile.json"))
    assert (profile["user_id"], profile["username"], profile["admin"]) == (ids["alice"], "alice", False)
    assert profile["privacy"] == {"dm_policy": "anyone", "presence": "friends"}
    assert [d["device_id"] for d in json.loads(z.read("devices.json"))["devices"]] == ["d1"]
    rel = json.loads(z.read("relations.json"))
    assert [f["user_id"] for f in rel["friends"]] == [ids["bob"]]
    assert [e["user_id"] for e in rel["following"]] == [ids["carol"]]
    assert [e["user_id"] for e in rel["blocks"]] == [ids["dave"]]
    assert rel["friend_requests"] == {"incoming": [], "outgoing": []}  # the one made was accepted

    convs = {c["conv_id"]: c for c in json.loads(z.read("conversations.json"))["conversations"]}
    assert set(convs) == {w["dm"], w["gid"]}
    assert convs[w["dm"]]["type"] == "direct" and convs[w["dm"]]["peer_id"] == ids["bob"]
    assert convs[w["gid"]]["type"] == "group" and convs[w["gid"]]["active"] is False
    assert [g["conv_id"] for g in json.loads(z.read("groups.json"))["groups"]] == [w["gid"]]

    # the direct chat: in seq order; the recalled message without its words, the edited one
    # at its latest text, no edit entries, the hidden message gone
    dm = lines(z, dm_file)
    assert [m["seq"] for m in dm] == sorted(m["seq"] for m in dm) and convs[w["dm"]]["messages"] == len(dm)
    assert texts(dm) == ["b1 hello", "a1 hi", "a3 final words"]
    assert [m["kind"] for m in dm] == ["text", "text", "text", "recall", "text"]
    assert dm[2]["recalled"] is True and dm[2]["body"] == {}
    assert "edited_at" in dm[4]["body"]
    assert all(m["conv_id"] == w["dm"] and isinstance(m["msg_id"], str) for m in dm)
    # the group: from alice's join to her leave, with the file she saw (and its bytes)
    group = lines(z, group_file)
    assert texts(group) == ["g2 while alice is in"]
    files = [m for m in group if m["kind"] == "file"]
    assert [m["body"]["media_id"] for m in files] == [w["media_id"]]
    media = json.loads(z.read("media.json"))["media"]
    assert [(m["media_id"], m["name"], m["size"]) for m in media] == [(w["media_id"], "notes.txt", len(FILE_BYTES))]
    assert z.read(media[0]["file"]) == FILE_BYTES and media[0]["file"] == f"media/{w['media_id']}.txt"
    assert (manifest["media"], manifest["media_missing"], manifest["conversations"]) == (1, 0, 2)
    assert manifest["messages"] == len(dm) + len(group)
    users = {u["user_id"]: u["username"] for u in json.loads(z.read("users.json"))["users"]}
    assert users == {ids[n]: n for n in ("alice", "bob", "carol", "dave")}

    # nothing alice could not see, anywhere in the archive
    blob = everything(z)
    for secret in (b"RECALLED-WORDS", b"DRAFT-WORDS", b"HIDDEN-WORDS", b"BEFORE-ALICE", b"AFTER-ALICE", b"NOT-ALICES"):
        assert secret not in blob, secret
    assert LATE_FILE_BYTES not in blob and w["late"].encode() not in blob


async def test_export(node: NodeServer, backend: str, tmp_path: Path, store_url: str) -> None:
    exports = tmp_path / "node" / "tmp" / "exports"
    async with asyncio.timeout(120), aiohttp.ClientSession(node.url) as http:
        w = await world(http)
        ids, logins = w["ids"], w["logins"]
        alice, bob, root = (logins[n]["token"] for n in ("alice", "bob", "root"))
        await node.node.store.admin.set_admin(None, int(ids["root"]), True, AuditEntry(at=1, source="cli"))

        # download my data
        status, headers, data = await download(http, "/api/v1/me/export", alice)
        assert status == 200, data[:300]
        assert headers["Content-Type"] == "application/zip" and headers["Cache-Control"] == "no-store"
        assert headers["Content-Disposition"].startswith('attachment; filename="yim-export-alice-')
        assert int(headers["Content-Length"]) == len(data)
        check_archive(data, w, "self")

        # an admin's export: the same data, and an audit entry; others are refused
        status, _, data = await download(
            http, f"/api/v1/admin/users/{ids['alice']}/export?reason=GDPR%20art.%2015", root
        )
        assert status == 200, data[:300]
        check_archive(data, w, "admin")
        status, _, err = await download(http, f"/api/v1/admin/users/{ids['alice']}/export", bob)
        assert (status, json.loads(err)["code"]) == (403, "forbidden")
        status, _, err = await download(http, "/api/v1/admin/users/12345/export", root)
        assert (status, json.loads(err)["code"]) == (404, "not_found")
        async with http.get("/api/v1/admin/audit", headers=bearer(root)) as r:
            entries = (await r.json())["entries"]
        exported = [e for e in entries if e["action"] == "export"]
        assert len(exported) == 1, entries  # the refused and the failed ones left no entry
        assert exported[0]["target"] == f"user:{ids['alice']}" and exported[0]["actor_id"] == ids["root"]
        assert exported[0]["detail"] == {"reason": "GDPR art. 15"} and exported[0]["source"].startswith("http ")

        # more exports than the node builds at once: refused, not queued
        gate = node.app[EXPORT_GATE]
        with contextlib.ExitStack() as held:
            for _ in range(gate.limit):
                held.enter_context(gate.slot())
            status, headers, err = await download(http, "/api/v1/me/export", alice)
            assert (status, json.loads(err)["code"]) == (503, "export_busy") and headers["Retry-After"] == "30"
        assert gate.running == 0

        # a media whose bytes the blob store lost: listed without a file, counted, no failure
        blob = tmp_path / "node" / "blobs" / blob_path(hashlib.sha256(FILE_BYTES).hexdigest())
        blob.rename(blob.with_suffix(".away"))
        status, _, data = await download(http, "/api/v1/me/export", alice)
        blob.with_suffix(".away").rename(blob)
        z = zipfile.ZipFile(io.BytesIO(data))
        assert json.loads(z.read("media.json"))["media"][0]["file"] is None
        assert json.loads(z.read("manifest.json"))["media_missing"] == 1
        assert not [n for n in z.namelist() if n.startswith("media/")]
        # every archive is removed once sent (just after its last byte: a bounded wait)
        await until(lambda: not any(exports.iterdir()), timeout=10)

    # the command line, through the node (as an admin) ...
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    out = tmp_path / "alice.zip"
    done = await yim(
        "admin", "export", "alice", "--out", str(out), "--server", node.url, "--user", "root",
        "--password-file", str(pw), "--state", str(tmp_path / "s"), "--reason", "by cli",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_archive(out.read_bytes(), w, "admin")
    done = await yim(
        "admin", "export", "alice", "--out", str(tmp_path / "no.zip"), "--server", node.url, "--user", "bob",
        "--password-file", str(pw), "--state", str(tmp_path / "s"),
    )  # fmt: skip
    assert done.returncode == 1 and "forbidden" in done.stderr and not (tmp_path / "no.zip").exists()

    # ... and on the store itself, as the operator: a SQLite store only once its node stopped
    on_store = ["--direct", "--data", str(tmp_path / "node"), "--store", store_url]
    direct = tmp_path / "direct.zip"
    if backend == "sqlite":
        done = await yim("admin", "export", "alice", "--out", str(direct), *on_store)
        assert done.returncode == 1 and "in use by another yim node" in done.stderr, done.stderr
        await node.stop()
    done = await yim("admin", "export", "alice", "--out", str(direct), "--reason", "on the host", *on_store)
    assert done.returncode == 0, done.stderr
    check_archive(direct.read_bytes(), w, "operator")
    assert not [p.name for p in os.scandir(tmp_path) if p.name.startswith("export-")]  # nothing left behind
