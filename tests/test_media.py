"""Media messages end to end: streaming upload, type detection, content addressing, access
rules, Range / ETag downloads, a 200 MB upload at flat memory, and the S3 backend against
a real S3-compatible server (moto) on loopback."""

# ruff: noqa: RUF001 - Chinese test texts use fullwidth punctuation, as real ones do

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from PIL import Image

from tests.conftest import MakeServer, free_port
from tests.rawclient import Device, ProtocolError, make_users
from yim.node import NodeServer

MiB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------


def jpeg_bytes(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    im = Image.effect_noise((width, height), 40 + seed).convert("RGB")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    )


#: the start of a 64-bit Linux executable
ELF = (
    b"\x7fELF\x02\x01\x01\x00"
    + b"\x00" * 8
    + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    + b"\x00" * 200
)
#: a tiny DOS/Windows "MZ" executable stub
MZ = b"MZ" + b"\x00" * 62
#: the first boxes of an MP4 file
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x08free" + b"\x00" * 24


def noise(n: int) -> bytes:
    """Fixed pseudo-random bytes. Not os.urandom: truly random bytes sometimes begin like an
    executable ("MZ", "\\x7fELF" ...), which the server then rightly refuses."""
    return random.Random(n).randbytes(n)


def auth(login: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['token']}"}


async def upload(
    http: aiohttp.ClientSession,
    login: dict[str, Any],
    data: bytes | io.BytesIO | AsyncIterator[bytes],
    *,
    kind: str = "file",
    name: str = "",
    content_type: str = "application/octet-stream",
) -> tuple[int, dict[str, Any]]:
    params = {"kind": kind}
    if isinstance(data, bytes) and len(data) > MiB:
        data = io.BytesIO(data)  # aiohttp warns about large bytes bodies
    if name:
        params["name"] = name
    r = await http.post(
        "/api/v1/media", params=params, data=data, headers={**auth(login), "Content-Type": content_type}
    )
    return r.status, await r.json()


async def uploaded(http: aiohttp.ClientSession, login: dict[str, Any], data: bytes, **kw: Any) -> dict[str, Any]:
    status, body = await upload(http, login, data, **kw)
    assert status == 201, body
    return body


async def fetch(
    http: aiohttp.ClientSession, login: dict[str, Any], path: str, **headers: str
) -> tuple[int, bytes, Any]:
    r = await http.get(path, headers={**auth(login), **headers})
    return r.status, await r.read(), r.headers


async def devices(http: aiohttp.ClientSession, names: list[str]) -> list[Device]:
    found = [Device(http, login) for login in await make_users(http, names)]
    await asyncio.gather(*(d.connect() for d in found))
    return found


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


# --- tests ---------------------------------------------------------------------------------------


async def test_image_message_reaches_member_who_downloads_it(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, carol = await devices(http, ["alice", "bob", "carol"])
        photo = jpeg_bytes(640, 480)
        media = await uploaded(http, alice.login, photo, kind="image", name="假期/../beach.jpg")
        assert media["mime"] == "image/jpeg" and media["kind"] == "image"
        assert (media["width"], media["height"]) == (640, 480) and media["thumbnail"] is True
        assert media["size"] == len(photo) and media["sha256"] == hashlib.sha256(photo).hexdigest()
        assert media["name"] == "beach.jpg"  # folders are stripped

        ack = await alice.request(
            "send", to=bob.user_id, kind="image", body={"media_id": media["media_id"]}, client_msg_id="img1"
        )
        await wait_for(lambda: any(e["type"] == "message" for e in bob.events))
        body = next(e for e in bob.events if e["type"] == "message")["data"]["body"]
        # The server filled in the authoritative metadata.
        assert body == {
            "media_id": media["media_id"],
            "mime": "image/jpeg",
            "size": len(photo),
            "name": "beach.jpg",
            "sha256": media["sha256"],
            "width": 640,
            "height": 480,
            "thumbnail": True,
        }
        history = await bob.request("history", conv_id=ack["conv_id"])
        assert history["messages"][-1]["body"] == body

        path = f"/api/v1/media/{media['media_id']}"
        status, got, headers = await fetch(http, bob.login, path)
        assert status == 200 and got == photo
        assert headers["Content-Type"] == "image/jpeg"
        assert headers["ETag"] == f'"{media["sha256"]}"'
        assert headers["Cache-Control"].startswith("private, max-age=")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Disposition"].startswith("inline;")
        status, _, _ = await fetch(http, bob.login, path, **{"If-None-Match": headers["ETag"]})
        assert status == 304

        status, thumb, headers = await fetch(http, bob.login, path + "/thumbnail")
        assert status == 200 and headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(thumb)) as im:
            assert im.format == "WEBP" and max(im.size) <= 320 and im.size == (320, 240)

        # Carol is in no conversation carrying it: refused, as if it did not exist.
        for suffix in ("", "/thumbnail"):
            r = await http.get(path + suffix, headers=auth(carol.login))
            assert r.status == 404 and (await r.json())["code"] == "media_not_found"
        r = await http.get("/api/v1/media/999999", headers=auth(bob.login))
        assert r.status == 404 and (await r.json())["code"] == "media_not_found"
        r = await http.get(path)
        assert r.status == 401
        # ...nor can she send it.
        with pytest.raises(ProtocolError) as err:
            await carol.request(
                "send", to=alice.user_id, kind="image", body={"media_id": media["media_id"]}, client_msg_id="steal"
            )
        assert err.value.code == "media_not_found"

        # Bob can see it, so he may forward it to Carol, who may then download it.
        await bob.request(
            "send", to=carol.user_id, kind="image", body={"media_id": media["media_id"]}, client_msg_id="fwd"
        )
        status, got, _ = await fetch(http, carol.login, path)
        assert status == 200 and got == photo
        for d in (alice, bob, carol):
            await d.close()


async def test_same_bytes_are_stored_once(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await make_users(http, ["alice", "bob"])
        data = noise(300_000)
        first = await uploaded(http, alice, data, name="a.bin")
        second = await uploaded(http, bob, data, name="b.bin")
        third = await uploaded(http, alice, data, name="c.bin")
        assert len({first["media_id"], second["media_id"], third["media_id"]}) == 3
        assert first["sha256"] == second["sha256"] == third["sha256"] == hashlib.sha256(data).hexdigest()
        stored = blob_files(server.settings.data_path)
        assert [p.name for p in stored] == [first["sha256"]]
        assert stored[0].relative_to(server.settings.data_path / "blobs").parts[:2] == (
            first["sha256"][:2],
            first["sha256"][2:4],
        )
        assert stored[0].read_bytes() == data
        # Each upload record keeps its own name; the uploader of one cannot read the other's.
        status, _, headers = await fetch(http, bob, f"/api/v1/media/{second['media_id']}")
        assert status == 200 and "b.bin" in headers["Content-Disposition"]
        status, _, _ = await fetch(http, bob, f"/api/v1/media/{first['media_id']}")
        assert status == 404
        # No temp files are left behind.
        assert list((server.settings.data_path / "tmp" / "uploads").iterdir()) == []


async def test_range_requests_and_file_headers(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        (alice,) = await make_users(http, ["alice"])
        data = noise(100_000)
        media = await uploaded(http, alice, data, name="季度报告 2024.bin")
        path = f"/api/v1/media/{media['media_id']}"

        status, got, headers = await fetch(http, alice, path, Range="bytes=10-19")
        assert status == 206 and got == data[10:20]
        assert headers["Content-Range"] == "bytes 10-19/100000" and headers["Content-Length"] == "10"
        status, got, headers = await fetch(http, alice, path, Range="bytes=-5")
        assert status == 206 and got == data[-5:] and headers["Content-Range"] == "bytes 99995-99999/100000"
        status, got, _ = await fetch(http, alice, path, Range="bytes=99990-")
        assert status == 206 and got == data[99990:]
        status, got, _ = await fetch(http, alice, path, Range="bytes=99990-200000")
        assert status == 206 and got == data[99990:]
        status, body, headers = await fetch(http, alice, path, Range="bytes=100000-")
        assert status == 416 and headers["Content-Range"] == "bytes */100000"
        assert b"range_not_satisfiable" in body
        # A stale If-Range (another ETag) gets the whole, current content.
        status, got, _ = await fetch(http, alice, path, Range="bytes=0-0", **{"If-Range": '"other"'})
        assert status == 200 and got == data
        status, got, _ = await fetch(http, alice, path, Range="bytes=0-0", **{"If-Range": f'"{media["sha256"]}"'})
        assert status == 206 and got == data[:1]
        # Several ranges are not served as multipart: the whole body comes back instead.
        status, got, headers = await fetch(http, alice, path, Range="bytes=0-1,5-6")
        assert status == 200 and got == data and headers["Accept-Ranges"] == "bytes"

        # A file is an attachment, with its name safely encoded.
        status, _, headers = await fetch(http, alice, path)
        assert headers["Content-Type"] == "application/octet-stream"
        disposition = headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="')
        assert "filename*=UTF-8''%E5%AD%A3%E5%BA%A6%E6%8A%A5%E5%91%8A%202024.bin" in disposition
        assert "sandbox" in headers["Content-Security-Policy"]


async def test_type_is_detected_from_the_bytes(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        (alice,) = await make_users(http, ["alice"])
        refused = [
            # (bytes, kind, name, Content-Type) -> code
            ((ELF, "image", "photo.jpg", "image/jpeg"), "media_type_mismatch"),
            ((MZ, "image", "photo.jpg", "image/jpeg"), "media_type_mismatch"),
            ((ELF, "file", "photo.jpg", "application/octet-stream"), "media_type_mismatch"),
            ((MZ, "file", "photo.jpg", "application/octet-stream"), "media_type_mismatch"),
            ((MZ, "file", "notes.bin", "image/png"), "media_type_mismatch"),
            ((MZ, "file", "setup.exe", "application/octet-stream"), "media_type_not_allowed"),
            ((ELF, "file", "tool", "application/octet-stream"), "media_type_not_allowed"),
            ((ELF, "video", "clip.mp4", "video/mp4"), "media_type_mismatch"),
            ((b"%PDF-1.4\n%\xe2\xe3\n", "image", "doc.jpg", "image/jpeg"), "media_type_mismatch"),
            (
                (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image", "x.svg", "image/svg+xml"),
                "media_type_not_allowed",
            ),
            (
                (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64, "image", "broken.jpg", "image/jpeg"),
                "invalid_media",
            ),
            ((b"", "file", "empty.txt", "text/plain"), "invalid_media"),
        ]
        for (data, kind, name, ctype), code in refused:
            status, body = await upload(http, alice, data, kind=kind, name=name, content_type=ctype)
            assert body["code"] == code, (kind, name, body)
            assert status == {"invalid_media": 400}.get(code, 415)
        assert blob_files(server.settings.data_path) == []

        # The same bytes under an honest name and kind are fine (a PDF as a file, an MP4 as a video).
        pdf = await uploaded(http, alice, b"%PDF-1.4\n%\xe2\xe3\n", name="doc.pdf")
        assert pdf["mime"] == "application/pdf" and pdf["thumbnail"] is False
        video = await uploaded(http, alice, MP4, kind="video", name="clip.mp4")
        assert video["mime"] == "video/mp4" and video["width"] is None and video["thumbnail"] is False
        text = await uploaded(http, alice, "你好，世界\n".encode(), name="")
        assert text["mime"] == "text/plain" and text["name"] == "file.txt"
        status, body = await upload(http, alice, b"x", kind="sticker")
        assert status == 400 and body["code"] == "bad_request"


async def test_message_kind_must_fit_the_media(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        pdf = await uploaded(http, alice.login, b"%PDF-1.4\n%\xe2\xe3\n", name="doc.pdf")
        video = await uploaded(http, alice.login, MP4, kind="video", name="clip.mp4")
        photo = await uploaded(http, alice.login, jpeg_bytes(64, 48), kind="image", name="p.jpg")
        for kind, media, code in [
            ("image", pdf, "media_kind_mismatch"),
            ("video", photo, "media_kind_mismatch"),
            ("image", video, "media_kind_mismatch"),
        ]:
            with pytest.raises(ProtocolError) as err:
                await alice.request(
                    "send", to=bob.user_id, kind=kind, body={"media_id": media["media_id"]}, client_msg_id=f"x{kind}"
                )
            assert err.value.code == code
        for body in ({}, {"media_id": 5}, {"media_id": "5", "mime": "image/png"}, {"text": "hi"}):
            with pytest.raises(ProtocolError) as err:
                await alice.request("send", to=bob.user_id, kind="image", body=body, client_msg_id="bad")
            assert err.value.code == "invalid_body"
        # Any media may go as a file; a video as a video.
        for kind, media in (("file", photo), ("file", pdf), ("video", video)):
            await alice.request(
                "send",
                to=bob.user_id,
                kind=kind,
                body={"media_id": media["media_id"]},
                client_msg_id=f"ok{kind}{media['media_id']}",
            )
        # Over HTTP too, and a resend with the same client_msg_id is idempotent.
        for expected in (201, 200):
            r = await http.post(
                "/api/v1/messages",
                json={"to": bob.user_id, "kind": "file", "body": {"media_id": pdf["media_id"]}, "client_msg_id": "h1"},
                headers=auth(alice.login),
            )
            assert r.status == expected, await r.text()
        history = await bob.request("history", conv_id=(await r.json())["conv_id"])
        kinds = [(m["kind"], m["body"].get("mime")) for m in history["messages"]]
        assert kinds == [
            ("file", "image/jpeg"),
            ("file", "application/pdf"),
            ("video", "video/mp4"),
            ("file", "application/pdf"),
        ]
        assert history["messages"][2]["body"]["name"] == "clip.mp4"
        await alice.close()
        await bob.close()


async def test_size_and_pixel_limits(make_server: MakeServer) -> None:
    server = await make_server(media_max_image_bytes=100_000, media_max_image_pixels=50_000)
    async with aiohttp.ClientSession(server.url) as http:
        (alice,) = await make_users(http, ["alice"])
        big = jpeg_bytes(1200, 900)
        assert len(big) > 100_000
        status, body = await upload(http, alice, big, kind="image", name="big.jpg")
        assert status == 413 and body["code"] == "media_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
            for i in range(0, len(big), 16_384):
                yield big[i : i + 16_384]

        status, body = await upload(http, alice, chunks(), kind="image", name="big.jpg")
        assert status == 413 and body["code"] == "media_too_large"
        # The same bytes are fine as a file (its own, larger limit), just without a preview.
        as_file = await uploaded(http, alice, big, name="big.jpg")
        assert as_file["mime"] == "image/jpeg" and as_file["thumbnail"] is False and as_file["width"] is None
        # Pixel limits, checked before decoding: over ours, and a decompression bomb.
        wide = jpeg_bytes(300, 200)
        status, body = await upload(http, alice, wide, kind="image")
        assert status == 413 and "pixels" in body["message"]
        as_file = await uploaded(http, alice, wide, name="wide.jpg")  # as a file: kept, no preview
        assert as_file["thumbnail"] is False
        status, body = await upload(http, alice, wide, kind="image")  # still refused as an image
        assert status == 413 and "pixels" in body["message"]
        (bob,) = await make_users(http, ["bob"])
        r = await http.post(
            "/api/v1/messages",
            json={
                "to": bob["user_id"],
                "kind": "image",
                "body": {"media_id": as_file["media_id"]},
                "client_msg_id": "w",
            },
            headers=auth(alice),
        )
        assert r.status == 400 and (await r.json())["code"] == "media_kind_mismatch"
        status, body = await upload(http, alice, png_header(100_000, 100_000), kind="image", name="bomb.png")
        assert status == 413 and body["code"] == "media_too_large"
        assert (await uploaded(http, alice, jpeg_bytes(200, 200), kind="image"))["width"] == 200


async def test_visibility_follows_membership_and_recall(server: NodeServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        alice, bob, dave = await devices(http, ["alice", "bob", "dave"])
        created = await alice.request("group_create", name="photos", members=[bob.user_id])
        gid = created["group"]["conv_id"]
        first = await uploaded(http, alice.login, jpeg_bytes(64, 64, 1), kind="image")
        await alice.request("send", conv_id=gid, kind="image", body={"media_id": first["media_id"]}, client_msg_id="1")
        await alice.request("group_invite", conv_id=gid, user_ids=[dave.user_id])
        await bob.request("group_leave", conv_id=gid)
        second = await uploaded(http, alice.login, jpeg_bytes(64, 64, 2), kind="image")
        sent = await alice.request(
            "send", conv_id=gid, kind="image", body={"media_id": second["media_id"]}, client_msg_id="2"
        )

        async def can(dev: Device, media: dict[str, Any]) -> bool:
            status, _, _ = await fetch(http, dev.login, f"/api/v1/media/{media['media_id']}")
            assert status in (200, 404)
            return status == 200

        assert await can(bob, first) and not await can(bob, second)  # left before the second
        assert not await can(dave, first) and await can(dave, second)  # joined after the first
        await alice.request("recall", conv_id=gid, seq=sent["seq"])
        assert not await can(dave, second)  # a recalled message lends its media to nobody
        assert await can(alice, second)  # but the uploader keeps it
        for d in (alice, bob, dave):
            await d.close()


async def test_200_mb_upload_keeps_server_memory_flat(server_process: Any) -> None:
    """The whole body never sits in memory: the server's RSS, sampled while 200 MB stream
    in (and out again), grows by far less than the file."""
    proc = server_process()
    proc.start()
    assert proc.proc is not None
    ps = psutil.Process(proc.proc.pid)
    size = 200 * MiB
    async with aiohttp.ClientSession(proc.url) as http:
        (alice,) = await make_users(http, ["alice"])
        await uploaded(http, alice, jpeg_bytes(320, 240), kind="image")  # warm up: imports, thread pools
        await uploaded(http, alice, noise(4 * MiB), name="warm.bin")
        baseline = ps.memory_info().rss
        peak = baseline
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            block = bytearray(noise(MiB))
            for i in range(size // MiB):
                struct.pack_into("<Q", block, 0, i)
                chunk = bytes(block)
                digest.update(chunk)
                yield chunk

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, ps.memory_info().rss)
                await asyncio.sleep(0.01)

        sampler = asyncio.get_running_loop().create_task(sample())
        started = time.monotonic()
        try:
            media = await uploaded(http, alice, body(), name="big.bin")
            upload_s = time.monotonic() - started
            upload_peak = peak
            assert media["size"] == size and media["sha256"] == digest.hexdigest()
            # Stream it back and check every byte, still at flat memory.
            r = await http.get(f"/api/v1/media/{media['media_id']}", headers=auth(alice))
            assert r.status == 200 and r.headers["Content-Length"] == str(size)
            check = hashlib.sha256()
            async for chunk in r.content.iter_chunked(MiB):
                check.update(chunk)
            assert check.hexdigest() == media["sha256"]
        finally:
            sampler.cancel()
    growth = (upload_peak - baseline) / MiB
    total_growth = (peak - baseline) / MiB
    print(
        f"\n200 MiB upload in {upload_s:.1f}s: server RSS baseline {baseline / MiB:.1f} MiB,"
        f" peak growth {growth:.1f} MiB during upload, {total_growth:.1f} MiB with the download"
    )
    assert growth < 50, f"server RSS grew by {growth:.1f} MiB during a 200 MiB upload"
    assert total_growth < 50, f"server RSS grew by {total_growth:.1f} MiB during a 200 MiB download"


# --- S3 ------------------------------------------------------------------------------------------


class MotoServer:
    """``moto_server`` (a real S3-compatible HTTP server) as a subprocess on loopback."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        exe = Path(sys.executable).parent / "moto_server"
        if not exe.exists():
            pytest.fail(f"moto_server not found at {exe}: install the test extra (moto[s3], flask, flask-cors)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"moto_server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"moto_server did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


async def test_s3_blob_store_round_trip(make_server: MakeServer, moto: MotoServer) -> None:
    s3 = s3_client(moto.url)
    await asyncio.to_thread(s3.create_bucket, Bucket="yim-media")
    server = await make_server(
        blob_store="s3://yim-media/prod",
        s3_endpoint_url=moto.url,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_multipart_threshold_bytes=5 * MiB,
    )

    def keys() -> dict[str, Any]:
        listed = s3.list_objects_v2(Bucket="yim-media")
        return {o["Key"]: o for o in listed.get("Contents", [])}

    async with aiohttp.ClientSession(server.url) as http:
        alice, bob = await devices(http, ["alice", "bob"])
        data = noise(12 * MiB)  # above the threshold: a multipart upload
        media = await uploaded(http, alice.login, data, name="dataset.bin")
        again = await uploaded(http, bob.login, data, name="copy.bin")
        photo = await uploaded(http, alice.login, jpeg_bytes(400, 300), kind="image", name="p.jpg")
        sha = media["sha256"]
        assert again["sha256"] == sha
        stored = await asyncio.to_thread(keys)
        big_key = f"prod/blobs/{sha[:2]}/{sha[2:4]}/{sha}"
        assert big_key in stored and stored[big_key]["Size"] == len(data)
        assert len(stored) == 3  # the file once, the photo, its thumbnail
        head = await asyncio.to_thread(s3.head_object, Bucket="yim-media", Key=big_key)
        assert head["ETag"].strip('"').endswith("-2")  # went up in two parts
        assert not (server.settings.data_path / "blobs").exists()

        await alice.request(
            "send", to=bob.user_id, kind="file", body={"media_id": media["media_id"]}, client_msg_id="f"
        )
        status, got, _ = await fetch(http, bob.login, f"/api/v1/media/{media['media_id']}")
        assert status == 200 and hashlib.sha256(got).hexdigest() == sha
        status, got, _ = await fetch(
            http, bob.login, f"/api/v1/media/{media['media_id']}", Range=f"bytes={7 * MiB}-{7 * MiB + 99}"
        )
        assert status == 206 and got == data[7 * MiB : 7 * MiB + 100]
        status, thumb, _ = await fetch(http, alice.login, f"/api/v1/media/{photo['media_id']}/thumbnail")
        assert status == 200 and thumb[:4] == b"RIFF"
        for d in (alice, bob):
            await d.close()
    s3.close()
