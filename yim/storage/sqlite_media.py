"""Media jobs of the SQLite store: upload records, access checks, media message bodies.

Tables in ``schema_sqlite_media.sql``. Who may use a media id — to download it, or to send
it in a message — is one rule, :func:`visible_media`: the uploader, or a member of a
conversation with a (not recalled) entry carrying it inside the member's visible window
(``joined_seq < seq <= left_seq or head``). A media message is validated *inside* the
write transaction that appends it (:func:`send_media_message`), so the check cannot race
a recall or a leave, and a media send keeps its place in the sender's order.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import MediaMessageBody, MediaRefBody
from yim.storage import sqlite_timeline as timeline
from yim.storage.base import SendCmd, SendResult

#: raster types an ``image`` may be: what Pillow decodes and every client can show inline.
IMAGE_MIMES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"})

_ref_decoder = msgspec.json.Decoder(MediaRefBody)
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


_BLOB_COLS = "b.sha256, b.size, b.mime, b.width, b.height, b.thumb_sha256, b.thumb_size, b.created_at"


def mime_fits_kind(kind: str, mime: str) -> bool:
    """May media of this (detected) type be sent as a message of ``kind``?"""
    if kind == "image":
        return mime in IMAGE_MIMES
    if kind == "video":
        return mime.startswith("video/")
    return kind == "file"


def blob_by_sha(conn: sqlite3.Connection, sha256: str) -> BlobRec | None:
    row = conn.execute(f"SELECT {_BLOB_COLS} FROM media_blobs b WHERE b.sha256=?", (sha256,)).fetchone()
    return BlobRec(*row) if row else None


def create_media(
    conn: sqlite3.Connection, media_id: int, uploader_id: int, kind: str, name: str, blob: BlobRec, now: int
) -> MediaRec:
    """Record an upload. The blob row is shared by every upload of the same bytes; the
    first one to commit describes it (the description is a function of the bytes), except
    that an image description fills in one that lacked it."""
    conn.execute(
        "INSERT INTO media_blobs (sha256, size, mime, width, height, thumb_sha256, thumb_size, created_at)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sha256) DO UPDATE SET"
        # bytes first stored as a file that was not described as an image, now described
        " width=excluded.width, height=excluded.height, thumb_sha256=excluded.thumb_sha256,"
        " thumb_size=excluded.thumb_size WHERE media_blobs.width IS NULL AND excluded.width IS NOT NULL",
        (blob.sha256, blob.size, blob.mime, blob.width, blob.height, blob.thumb_sha256, blob.thumb_size, now),
    )
    conn.execute(
        "INSERT INTO media (id, sha256, uploader_id, kind, name, created_at) VALUES (?,?,?,?,?,?)",
        (media_id, blob.sha256, uploader_id, kind, name, now),
    )
    stored = blob_by_sha(conn, blob.sha256)
    assert stored is not None
    return MediaRec(id=media_id, uploader_id=uploader_id, kind=kind, name=name, created_at=now, blob=stored)


def visible_media(conn: sqlite3.Connection, media_id: int, user_id: int) -> MediaRec:
    """The media, if ``user_id`` uploaded it or can see an entry carrying it; else
    ``media_not_found`` (the same answer as for an id that does not exist)."""
    if media_id >= 2**63:
        raise YimError("media_not_found", f"no media {media_id}")
    row = conn.execute(
        f"SELECT m.id, m.uploader_id, m.kind, m.name, m.created_at, {_BLOB_COLS}"
        " FROM media m JOIN media_blobs b ON b.sha256 = m.sha256 WHERE m.id=?",
        (media_id,),
    ).fetchone()
    if row is not None and row[1] != user_id:
        seen = conn.execute(
            "SELECT 1 FROM media_refs r JOIN user_conversations uc ON uc.conv_id = r.conv_id AND uc.user_id=?"
            " WHERE r.media_id=? AND r.seq > uc.joined_seq AND (uc.left_seq IS NULL OR r.seq <= uc.left_seq)"
            " LIMIT 1",
            (user_id, media_id),
        ).fetchone()
        if seen is None:
            row = None
    if row is None:
        raise YimError("media_not_found", f"no media {media_id} that you uploaded or can see in a conversation")
    return MediaRec(id=row[0], uploader_id=row[1], kind=row[2], name=row[3], created_at=row[4], blob=BlobRec(*row[5:]))


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


def send_media_message(conn: sqlite3.Connection, cmd: SendCmd, service_ctx: Any = None) -> SendResult:
    """:func:`yim.storage.sqlite_timeline.send_message` for ``image`` / ``video`` / ``file``:
    ``cmd.body`` is the client's ``{"media_id": ...}``; the stored body is the canonical one."""
    duplicate = conn.execute(
        "SELECT 1 FROM messages WHERE sender_id=? AND client_msg_id=?", (cmd.sender_id, cmd.client_msg_id)
    ).fetchone()
    if duplicate is None:  # a retry returns the original, whatever happened to the media since
        ref = _ref_decoder.decode(cmd.body)
        media = visible_media(conn, int(ref.media_id), cmd.sender_id)
        article = "an" if cmd.kind == "image" else "a"
        if not mime_fits_kind(cmd.kind, media.blob.mime):
            raise YimError(
                "media_kind_mismatch",
                f"{article} {cmd.kind} message must reference {article} {cmd.kind};"
                f" media {media.id} is {media.blob.mime}",
            )
        if cmd.kind == "image" and media.blob.width is None:
            raise YimError(
                "media_kind_mismatch",
                f"media {media.id} was stored as a file without decoding it as an image; send it as a file",
            )
        cmd = msgspec.structs.replace(cmd, body=message_body(media))
    return timeline.send_message(conn, cmd, service_ctx)
