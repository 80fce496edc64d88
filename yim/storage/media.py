"""The media store interface (upload records, access checks, media sends) and its records.

Both stores keep the same three tables (SQLite: ``schema_sqlite_media.sql``; PostgreSQL:
``schema_postgres_0004_media_search.sql``): content-addressed ``media_blobs``, the upload
records ``media`` naming them, and ``media_refs``, which timeline entries carry which media.

Who may use a media id — to download it, or to send it in a message — is one rule: the
uploader, or a member of a conversation with a (not recalled) entry carrying it inside the
member's visible window (``joined_seq < seq <= left_seq or head``). To download (never to
send), also anyone signed in while the media is some user's avatar (``users.avatar_media_id``):
whoever can see a user can see their avatar, and only an image its own uploader chose becomes
one (yim/services/users.py ``avatar_media_id``), so no other media becomes readable this way.
A media message is validated *inside* the write transaction that appends it, so the check
cannot race a recall or a leave, and a media send keeps its place in the sender's order.
"""

from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import MediaMessageBody
from yim.storage.rules import quotes

if TYPE_CHECKING:
    from yim.storage.records import SendCmd, SendResult

#: message kinds whose body references a media id
MEDIA_KINDS = frozenset({"image", "video", "file"})
#: raster types an ``image`` may be: what Pillow decodes and every client can show inline.
IMAGE_MIMES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"})
#: the largest media id (ids are signed 64-bit in both stores)
MAX_MEDIA_ID = 2**63 - 1


class _CarriedMedia(msgspec.Struct):
    media_id: str


_carried_decoder = msgspec.json.Decoder(_CarriedMedia)
_encoder = msgspec.json.Encoder()


class BlobRec(msgspec.Struct, frozen=True):
    sha256: str
    size: int
    mime: str
    width: int | None
    height: int | None
    thumb_sha256: str | None
    thumb_size: int | None
    created_at: int


class MediaRec(msgspec.Struct, frozen=True):
    id: int
    uploader_id: int
    kind: str
    name: str
    created_at: int
    blob: BlobRec


def mime_fits_kind(kind: str, mime: str) -> bool:
    """May media of this (detected) type be sent as a message of ``kind``?"""
    if kind == "image":
        return mime in IMAGE_MIMES
    if kind == "video":
        return mime.startswith("video/")
    return kind == "file"


def not_found(media_id: int) -> YimError:
    return YimError("media_not_found", f"no media {media_id} that you uploaded or can see in a conversation")


def ref_media_id(body: bytes) -> int:
    """The media id of a client's ``{"media_id": ...}`` body (validated by the service; a
    reply or a forwarded copy also holds the server's ``quote`` / ``forwarded``)."""
    return int(_carried_decoder.decode(body).media_id)


def carried_media_id(body: bytes) -> int | None:
    """The media id a stored media message's body carries, or None if it names none."""
    try:
        return int(_carried_decoder.decode(body).media_id)
    except (msgspec.DecodeError, ValueError):
        return None


def message_body(media: MediaRec) -> bytes:
    """The canonical body of a message carrying ``media`` (authoritative metadata)."""
    b = media.blob
    return _encoder.encode(
        MediaMessageBody(
            media_id=str(media.id),
            mime=b.mime,
            size=b.size,
            name=media.name,
            sha256=b.sha256,
            width=b.width,
            height=b.height,
            thumbnail=b.thumb_sha256 is not None,
        )
    )


def checked_body(kind: str, media: MediaRec, ref_body: bytes = b"{}") -> bytes:
    """The stored body of a ``kind`` message carrying ``media`` the sender may use, or
    ``media_kind_mismatch``; the server fields of ``ref_body`` (a reply's quote, a copy's
    forwarded) follow the media's metadata."""
    article = "an" if kind == "image" else "a"
    if not mime_fits_kind(kind, media.blob.mime):
        raise YimError(
            "media_kind_mismatch",
            f"{article} {kind} message must reference {article} {kind}; media {media.id} is {media.blob.mime}",
        )
    if kind == "image" and media.blob.width is None:
        raise YimError(
            "media_kind_mismatch",
            f"media {media.id} was stored as a file without decoding it as an image; send it as a file",
        )
    return quotes.with_fields(message_body(media), quotes.server_fields(ref_body))


class MediaStore(abc.ABC):
    @abc.abstractmethod
    async def blob_by_sha(self, sha256: str) -> BlobRec | None:
        """The description of stored bytes, if anyone uploaded them before."""

    @abc.abstractmethod
    async def create_media(
        self, media_id: int, uploader_id: int, kind: str, name: str, blob: BlobRec, now: int
    ) -> MediaRec:
        """Record an upload. The blob row is shared by every upload of the same bytes; the
        first one to commit describes it, except that an image description fills in one
        that lacked it."""

    @abc.abstractmethod
    async def visible(self, media_id: int, user_id: int) -> MediaRec:
        """The media if ``user_id`` uploaded it or can see an entry carrying it; else
        ``media_not_found`` (the same answer as for an id that does not exist)."""

    @abc.abstractmethod
    def send(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        """Append an ``image`` / ``video`` / ``file`` message (``cmd.body`` is the client's
        ``{"media_id": ...}``): the media is checked and the canonical body filled in inside
        the transaction that appends it, in the sender's order like any other send."""
