"""Media: streaming uploads, type detection, thumbnails, access checks.

An upload is read in chunks and never held in memory: each chunk is hashed (SHA-256) and
appended to a temp file under ``<data_dir>/tmp/uploads``; the size limit of the upload's
kind is enforced as the bytes arrive. Then:

1. the type is detected from the first bytes with libmagic — the client's file name and
   Content-Type are only checked against it, never believed: an executable named
   ``photo.jpg`` is ``media_type_mismatch``, executables are refused outright;
2. images are opened with Pillow: dimensions (as displayed, after EXIF orientation) and a
   WebP thumbnail; a pixel count over ``media_max_image_pixels`` is refused before
   decoding (decompression bombs);
3. the file goes to the blob store under its SHA-256 — if those bytes are already stored
   (by anyone), nothing is written and the existing description is reused;
4. an upload record (a new ``media_id``) is committed, naming the blob.

Videos and other files keep name, size and type; the server makes no video poster frame
(that would need a video decoder such as ffmpeg in the node).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import mimetypes
import os
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp.http_exceptions import HttpProcessingError

from yim.protocol.errors import YimError
from yim.protocol.frames import MediaOut, MediaRefBody
from yim.storage.blobs import BlobStore, open_blob_store
from yim.storage.media import IMAGE_MIMES, BlobRec, MediaRec, MediaStore
from yim.storage.records import SendCmd, SendResult

if TYPE_CHECKING:
    from aiohttp import StreamReader

    from yim.config import Settings
    from yim.services.context import Context

log = logging.getLogger("yim.media")

KINDS = ("image", "video", "file")
SNIFF_BYTES = 64 * 1024  # what libmagic looks at
WRITE_BATCH = 1024 * 1024  # bytes gathered before one write + hash in a worker thread
MAX_NAME_CHARS = 255
#: detected types never accepted, whatever the kind or name
EXECUTABLE_MIMES = frozenset(
    {
        "application/x-executable",
        "application/x-pie-executable",
        "application/x-sharedlib",
        "application/x-elf",
        "application/x-dosexec",
        "application/x-msdownload",
        "application/vnd.microsoft.portable-executable",
        "application/x-mach-binary",
        "application/x-msi",
        "application/x-ms-installer",
        "application/x-coff",
        "application/x-object",
    }
)
_ref_decoder = msgspec.json.Decoder(MediaRefBody)


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def media_ref_body(kind: str, raw: bytes) -> bytes:
    """Validate the client's body of a media message (``{"media_id": "..."}``) — cheap and
    synchronous; the media itself is resolved in the store transaction that appends it."""
    try:
        ref = _ref_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise YimError("invalid_body", f"body of a {kind} message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise YimError("invalid_body", f"body is not valid JSON: {exc}") from None
    return msgspec.json.encode(ref)


def clean_name(name: str) -> str:
    """A display file name: no folders, no control or format characters, at most 255 chars."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return name.strip().lstrip(".")[:MAX_NAME_CHARS].strip()


def check_type(kind: str, mime: str, name: str, client_type: str) -> None:
    """The detected type must fit the kind, and agree with what the name / Content-Type
    claim about being an image."""
    if kind == "image" and mime not in IMAGE_MIMES:
        if mime.startswith("image/"):
            raise YimError(
                "media_type_not_allowed",
                f"{mime} is not accepted as an image (JPEG, PNG, GIF, WebP, AVIF are); send it as a file",
            )
        raise YimError("media_type_mismatch", f"the bytes are {mime}, not an image")
    if kind == "video" and not mime.startswith("video/"):
        raise YimError("media_type_mismatch", f"the bytes are {mime}, not a video")
    claimed = mimetypes.guess_type(name)[0] if name else None
    if claimed and claimed.startswith("image/") and not mime.startswith("image/"):
        raise YimError("media_type_mismatch", f"{name!r} holds {mime}, not an image")
    declared = client_type.split(";", 1)[0].strip().lower()
    if declared.startswith("image/") and not mime.startswith("image/"):
        raise YimError("media_type_mismatch", f"Content-Type says {declared} but the bytes are {mime}")
    if mime in EXECUTABLE_MIMES:
        raise YimError("media_type_not_allowed", f"executables ({mime}) are not accepted")


def _is_bomb(exc: BaseException) -> bool:
    from PIL import Image

    return isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning)


def inspect_image(path: Path, max_pixels: int, thumb_px: int) -> tuple[int, int, bytes]:
    """(width, height as displayed, WebP thumbnail). Runs in a worker thread."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise YimError(
                    "media_too_large", f"the image has {width}x{height} pixels, more than {max_pixels:,} allowed"
                )
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: rotated by 90°
                width, height = height, width
            im.thumbnail((thumb_px, thumb_px))  # decodes (JPEG: at a reduced scale)
            thumb = ImageOps.exif_transpose(im)
            if thumb.mode not in ("RGB", "RGBA"):
                alpha = "A" in thumb.mode or "transparency" in thumb.info
                thumb = thumb.convert("RGBA" if alpha else "RGB")
            out = io.BytesIO()
            thumb.save(out, "WEBP", quality=80)
            return width, height, out.getvalue()
    except YimError:
        raise
    except Exception as exc:
        if _is_bomb(exc):
            raise YimError("media_too_large", f"the image is too large to decode safely: {exc}") from None
        if isinstance(exc, UnidentifiedImageError | OSError | SyntaxError | ValueError | EOFError):
            raise YimError("invalid_media", f"the image does not decode: {exc}") from None
        raise


def _write_chunks(fd: int, digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def uploads_folder(settings: Settings) -> Path:
    """Where uploads in progress are written. Each worker of ``yim serve --workers N`` writes
    to a folder of its own in it (``worker-<i>``), which it empties when it starts; the
    store process empties the whole folder before the first worker starts."""
    return settings.data_path / "tmp" / "uploads"


def empty_uploads_folder(folder: Path) -> None:
    """Remove uploads cut short by a crash (nothing may be writing to ``folder``)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


class MediaService:
    def __init__(self, node: Context) -> None:
        self.node = node
        self.settings = node.settings
        self.blobs: BlobStore = open_blob_store(node.settings)
        self.tmp_dir = uploads_folder(node.settings)
        self._images = asyncio.Semaphore(2)  # decoding an image can take ~4 bytes per pixel
        self._magic: Any = None

    async def start(self) -> None:
        await asyncio.to_thread(empty_uploads_folder, self.tmp_dir)
        await self.blobs.start()

    async def close(self) -> None:
        await self.blobs.close()

    def _store(self) -> MediaStore:
        return self.node.store.media

    def limit(self, kind: str) -> int:
        s = self.settings
        return {"image": s.media_max_image_bytes, "video": s.media_max_video_bytes}.get(kind, s.media_max_file_bytes)

    def _sniff(self, head: bytes) -> str:
        if self._magic is None:
            import magic

            self._magic = magic.Magic(mime=True)
        return str(self._magic.from_buffer(head))

    # --- upload ------------------------------------------------------------------------------

    async def upload(
        self,
        uploader_id: int,
        kind: str,
        name: str,
        stream: StreamReader,
        content_length: int | None,
        client_type: str,
    ) -> MediaOut:
        if kind not in KINDS:
            raise YimError("bad_request", f"kind must be one of {', '.join(KINDS)}")
        limit = self.limit(kind)
        if content_length is not None and content_length > limit:
            raise YimError("media_too_large", f"{_an(kind)} {kind} may be at most {limit:,} bytes")
        name = clean_name(name)
        fd, tmp = await asyncio.to_thread(tempfile.mkstemp, dir=self.tmp_dir, prefix="up-")
        path = Path(tmp)
        try:
            try:
                digest = hashlib.sha256()
                size = 0
                head = bytearray()
                pending: list[bytes] = []
                pending_bytes = 0
                while True:
                    try:
                        chunk = await stream.readany()
                    except (HttpProcessingError, ConnectionError) as exc:
                        raise YimError("bad_request", f"the upload was cut short: {exc}") from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise YimError("media_too_large", f"{_an(kind)} {kind} may be at most {limit:,} bytes")
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                    if pending_bytes >= WRITE_BATCH:
                        await asyncio.to_thread(_write_chunks, fd, digest, pending)
                        pending, pending_bytes = [], 0
                if pending:
                    await asyncio.to_thread(_write_chunks, fd, digest, pending)
            finally:
                os.close(fd)
            if size == 0:
                raise YimError("invalid_media", "the upload is empty")
            sha256 = digest.hexdigest()
            return await self._store_upload(uploader_id, kind, name, path, bytes(head), size, sha256, client_type)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)

    async def _store_upload(
        self,
        uploader_id: int,
        kind: str,
        name: str,
        path: Path,
        head: bytes,
        size: int,
        sha256: str,
        client_type: str,
    ) -> MediaOut:
        store = self._store()
        blob: BlobRec | None = await store.blob_by_sha(sha256)
        mime = blob.mime if blob is not None else await asyncio.to_thread(self._sniff, head)
        check_type(kind, mime, name, client_type)
        if blob is None or (kind == "image" and blob.width is None):
            # New bytes; or bytes first uploaded as a file that were never described as an
            # image (too many pixels then, say): an image upload must decode, now.
            blob = await self._new_blob(kind, path, sha256, size, mime)
        if not name:
            name = f"{kind}{mimetypes.guess_extension(mime) or ''}"
        media = await store.create_media(
            self.node.ids.next_id(),
            uploader_id,
            kind,
            name,
            blob,
            int(time.time() * 1000),
        )
        return media_out(media)

    async def _new_blob(self, kind: str, path: Path, sha256: str, size: int, mime: str) -> BlobRec:
        width = height = thumb_sha = thumb_size = None
        if mime in IMAGE_MIMES:
            try:
                async with self._images:
                    width, height, thumb = await asyncio.to_thread(
                        inspect_image, path, self.settings.media_max_image_pixels, self.settings.media_thumbnail_px
                    )
            except YimError as exc:
                if kind == "image":
                    raise
                # A file that happens to be an image we will not decode: kept, without preview.
                log.info("no preview for %s (%s): %s", sha256, mime, exc.message)
            else:
                thumb_sha = hashlib.sha256(thumb).hexdigest()
                thumb_size = len(thumb)
                await self.blobs.put_bytes(thumb_sha, thumb, "image/webp")
        await self.blobs.put_file(sha256, path, mime)
        return BlobRec(
            sha256=sha256,
            size=size,
            mime=mime,
            width=width,
            height=height,
            thumb_sha256=thumb_sha,
            thumb_size=thumb_size,
            created_at=0,
        )

    # --- access --------------------------------------------------------------------------------

    async def visible(self, user_id: int, media_id: int) -> MediaRec:
        return await self._store().visible(media_id, user_id)

    def send_message(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        """Append a media message: the media is checked and the body filled in inside the
        same write transaction (and in the sender's order, like any other send)."""
        return self._store().send(cmd)


def media_out(m: MediaRec) -> MediaOut:
    b = m.blob
    return MediaOut(
        media_id=str(m.id),
        kind=m.kind,
        mime=b.mime,
        size=b.size,
        name=m.name,
        sha256=b.sha256,
        width=b.width,
        height=b.height,
        thumbnail=b.thumb_sha256 is not None,
        created_at=m.created_at,
    )
