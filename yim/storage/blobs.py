"""Blob storage for media: content-addressed by SHA-256, behind one small interface.

A blob's key is the hex SHA-256 of its bytes, so the same bytes uploaded twice are stored
once, a stored blob never changes, and readers can cache it forever (the key is the ETag).
Two backends:

- :class:`LocalBlobs` (the default): files under ``<data_dir>/blobs/ab/cd/<sha256>``. An
  upload is streamed to a temp file on the same filesystem, fsynced and renamed into place,
  so a blob is either complete or absent.
- :class:`S3Blobs` (``blob_store = "s3://bucket[/prefix]"``): any S3-compatible store via
  boto3. boto3 is synchronous, so every call runs in a worker thread; large files go up as
  multipart uploads (TransferManager ``upload_file``), reads stream ranged GETs.

Blobs are never deleted by the server (no garbage collection of unreferenced blobs yet).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yim.config import Settings

READ_CHUNK = 256 * 1024


def blob_path(sha256: str) -> str:
    """``ab/cd/<sha256>``: two levels of 256 folders keep directories small."""
    return f"{sha256[0:2]}/{sha256[2:4]}/{sha256}"


class BlobStore(abc.ABC):
    """Where media bytes live. Keys are lower-case hex SHA-256 digests of the content."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Check the backend is usable (fail fast at node start)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def has(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at ``path`` (whose SHA-256 is ``key``). Idempotent. The caller
        deletes ``path`` afterwards if it still exists (a local backend may move it)."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Forget a blob no media row names any more (an erased account's); absent is fine."""

    @abc.abstractmethod
    def read(self, key: str, start: int, stop: int) -> AsyncGenerator[bytes, None]:
        """The bytes ``[start, stop)`` of a blob, in chunks of at most ``READ_CHUNK``."""


class LocalBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / blob_path(key)

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def has(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await asyncio.to_thread(self._move_in, key, path)

    def _move_in(self, key: str, path: Path) -> None:
        final = self.path(key)
        if final.is_file():  # already stored (same content by construction)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(path, final)
        _fsync_dir(final.parent)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write_bytes, key, data)

    def _write_bytes(self, key: str, data: bytes) -> None:
        final = self.path(key)
        if final.is_file():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{id(data)}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def read(self, key: str, start: int, stop: int) -> AsyncGenerator[bytes, None]:
        fh = await asyncio.to_thread(open, self.path(key), "rb")
        try:
            await asyncio.to_thread(fh.seek, start)
            left = stop - start
            while left > 0:
                chunk = await asyncio.to_thread(fh.read, min(READ_CHUNK, left))
                if not chunk:
                    raise OSError(f"blob {key} is shorter than expected")
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Blobs(BlobStore):
    """An S3-compatible bucket. ``url`` is ``s3://bucket`` or ``s3://bucket/prefix``."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunksize: int = 8 * 1024 * 1024,
        max_concurrency: int = 4,
    ) -> None:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"blob_store {url!r}: expected s3://bucket[/prefix]")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url or None
        self._region = region
        self._access_key_id = access_key_id or None
        self._secret_access_key = secret_access_key or None
        self._multipart_threshold = multipart_threshold
        self._multipart_chunksize = multipart_chunksize
        self._max_concurrency = max_concurrency
        self._client: Any = None
        self._transfer_config: Any = None

    def key(self, key: str) -> str:
        return f"{self.prefix}blobs/{blob_path(key)}"

    async def start(self) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError:
            raise RuntimeError("blob_store is s3://…, which needs boto3: pip install 'yim[s3]'") from None

        def make() -> Any:
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if self._endpoint_url else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=max(10, self._max_concurrency * 2),
            )
            return boto3.session.Session().client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=config,
            )

        self._client = await asyncio.to_thread(make)
        self._transfer_config = TransferConfig(
            multipart_threshold=self._multipart_threshold,
            multipart_chunksize=self._multipart_chunksize,
            max_concurrency=self._max_concurrency,
        )
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except Exception as exc:
            raise RuntimeError(f"blob store bucket {self.bucket!r} is not reachable: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._client.close)
            self._client = None

    async def has(self, key: str) -> bool:
        from botocore.exceptions import ClientError  # boto3 is optional (yim[s3]); start() checked it is there

        try:
            await asyncio.to_thread(self._client.head_object, Bucket=self.bucket, Key=self.key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        if await self.has(key):
            return
        await asyncio.to_thread(
            self._client.upload_file,
            str(path),
            self.bucket,
            self.key(key),
            ExtraArgs={"ContentType": content_type},
            Config=self._transfer_config,
        )

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=self.key(key), Body=data, ContentType=content_type
        )

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self.key(key))

    async def read(self, key: str, start: int, stop: int) -> AsyncGenerator[bytes, None]:
        if stop <= start:
            return
        resp = await asyncio.to_thread(
            self._client.get_object, Bucket=self.bucket, Key=self.key(key), Range=f"bytes={start}-{stop - 1}"
        )
        body = resp["Body"]
        try:
            left = stop - start
            while left > 0:
                chunk = await asyncio.to_thread(body.read, min(READ_CHUNK, left))
                if not chunk:
                    raise OSError(f"blob {key} is shorter than expected")
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(body.close)


def open_blob_store(settings: Settings) -> BlobStore:
    url = settings.blob_store
    if url == "local":
        return LocalBlobs(settings.data_path / "blobs")
    if url.startswith("s3://"):
        return S3Blobs(
            url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            multipart_threshold=settings.s3_multipart_threshold_bytes,
        )
    raise ValueError(f"unsupported blob_store {url!r} (use 'local' or 's3://bucket[/prefix]')")
