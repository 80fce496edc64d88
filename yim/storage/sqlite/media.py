"""Media jobs of the SQLite store: upload records, access checks, media message bodies.

Tables in ``schema_sqlite_media.sql``. Who may use a media id — to download it, or to send
it in a message — is one rule, :func:`visible_media`: the uploader, or a member of a
conversation with a (not recalled) entry carrying it inside the member's visible window
(``joined_seq < seq <= left_seq or head``). A media message is validated *inside* the
write transaction that appends it (:func:`send_media_message`), so the check cannot race
a recall or a leave, and a media send keeps its place in the sender's order.
"""

from __future__ import annotations

import asyncio
import sqlite3

import msgspec

from yim.storage.media import (
    IMAGE_MIMES,
    MAX_MEDIA_ID,
    BlobRec,
    MediaRec,
    MediaStore,
    checked_body,
    message_body,
    mime_fits_kind,
    not_found,
    ref_media_id,
)
from yim.storage.records import SendCmd, SendResult
from yim.storage.service import ServiceCtx
from yim.storage.sqlite.runner import SqliteJobs
from yim.storage.sqlite.send import send_message

__all__ = ["IMAGE_MIMES", "BlobRec", "MediaRec", "SqliteMediaStore", "message_body", "mime_fits_kind"]

_BLOB_COLS = "b.sha256, b.size, b.mime, b.width, b.height, b.thumb_sha256, b.thumb_size, b.created_at"


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


def visible_media(conn: sqlite3.Connection, media_id: int, user_id: int, avatars: bool = False) -> MediaRec:
    """The media, if ``user_id`` uploaded it or can see an entry carrying it (``avatars``: or
    it is some user's avatar); else ``media_not_found`` (the same answer as for an id that
    does not exist)."""
    if media_id > MAX_MEDIA_ID:
        raise not_found(media_id)
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
        if seen is None and avatars:
            seen = conn.execute("SELECT 1 FROM users WHERE avatar_media_id=? LIMIT 1", (media_id,)).fetchone()
        if seen is None:
            row = None
    if row is None:
        raise not_found(media_id)
    return MediaRec(id=row[0], uploader_id=row[1], kind=row[2], name=row[3], created_at=row[4], blob=BlobRec(*row[5:]))


def send_media_message(conn: sqlite3.Connection, cmd: SendCmd, service_ctx: ServiceCtx | None = None) -> SendResult:
    """:func:`yim.storage.sqlite.send.send_message` for ``image`` / ``video`` / ``file``:
    ``cmd.body`` is the client's ``{"media_id": ...}``; the stored body is the canonical one."""
    duplicate = conn.execute(
        "SELECT 1 FROM messages WHERE sender_id=? AND client_msg_id=?", (cmd.sender_id, cmd.client_msg_id)
    ).fetchone()
    if duplicate is None:  # a retry returns the original, whatever happened to the media since
        media = visible_media(conn, ref_media_id(cmd.body), cmd.sender_id)
        cmd = msgspec.structs.replace(cmd, body=checked_body(cmd.kind, media, cmd.body))
    return send_message(conn, cmd, service_ctx)


class SqliteMediaStore(MediaStore):
    def __init__(self, store: SqliteJobs) -> None:
        self._store = store

    async def blob_by_sha(self, sha256: str) -> BlobRec | None:
        return await self._store.read(blob_by_sha, sha256)

    async def create_media(
        self, media_id: int, uploader_id: int, kind: str, name: str, blob: BlobRec, now: int
    ) -> MediaRec:
        return await self._store.write(create_media, media_id, uploader_id, kind, name, blob, now)

    async def visible(self, media_id: int, user_id: int) -> MediaRec:
        return await self._store.read(visible_media, media_id, user_id, True)

    def send(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        return self._store.write(send_media_message, cmd, self._store.service.ctx)
