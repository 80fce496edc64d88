"""Media jobs of the PostgreSQL store; mirrors :mod:`yim.storage.sqlite.media`.

Tables and the ``media_refs`` triggers: ``schema_postgres_0004_media_search.sql``.

A media send is a Python job of the writer (not a pipelined ``yim_send`` call): it runs in
the batch transaction, in submission order — so it keeps its place in the sender's order
— inside a savepoint of its own. It resolves the media, then appends through ``yim_send``
(or the customer-service job), all in that savepoint: the check and the append commit
together. Text sends stay on the pipelined fast path.

Several nodes write at once, so the access check locks the ``media_refs`` row that grants
access (``FOR SHARE``): a recall on another node deletes that row (trigger), so either the
recall waits for this send to commit, or this send sees the row gone — never a message
carrying media its sender could no longer see.
"""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec

from yim.storage.media import MAX_MEDIA_ID, BlobRec, MediaRec, MediaStore, checked_body, not_found, ref_media_id
from yim.storage.postgres import timeline as timeline
from yim.storage.postgres.locks import NO_ANCHORS, send_anchors
from yim.storage.postgres.runner import PgJobs
from yim.storage.postgres.send import send_job
from yim.storage.records import SendCmd, SendResult
from yim.storage.service import ServiceStore

_BLOB_COLS = "b.sha256, b.size, b.mime, b.width, b.height, b.thumb_sha256, b.thumb_size, b.created_at"


async def blob_by_sha(conn: asyncpg.Connection, sha256: str) -> BlobRec | None:
    row = await conn.fetchrow(f"SELECT {_BLOB_COLS} FROM media_blobs b WHERE b.sha256=$1", sha256)
    return BlobRec(*row) if row else None


async def create_media(
    conn: asyncpg.Connection, media_id: int, uploader_id: int, kind: str, name: str, blob: BlobRec, now: int
) -> MediaRec:
    await conn.execute(
        "INSERT INTO media_blobs (sha256, size, mime, width, height, thumb_sha256, thumb_size, created_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (sha256) DO UPDATE SET"
        # bytes first stored as a file that was not described as an image, now described
        " width=excluded.width, height=excluded.height, thumb_sha256=excluded.thumb_sha256,"
        " thumb_size=excluded.thumb_size WHERE media_blobs.width IS NULL AND excluded.width IS NOT NULL",
        blob.sha256,
        blob.size,
        blob.mime,
        blob.width,
        blob.height,
        blob.thumb_sha256,
        blob.thumb_size,
        now,
    )
    await conn.execute(
        "INSERT INTO media (id, sha256, uploader_id, kind, name, created_at) VALUES ($1,$2,$3,$4,$5,$6)",
        media_id,
        blob.sha256,
        uploader_id,
        kind,
        name,
        now,
    )
    stored = await blob_by_sha(conn, blob.sha256)
    assert stored is not None
    return MediaRec(id=media_id, uploader_id=uploader_id, kind=kind, name=name, created_at=now, blob=stored)


_GRANT_SQL = (
    "SELECT 1 FROM media_refs r JOIN user_conversations uc ON uc.conv_id = r.conv_id AND uc.user_id = $1"
    " WHERE r.media_id = $2 AND r.seq > uc.joined_seq AND (uc.left_seq IS NULL OR r.seq <= uc.left_seq) LIMIT 1"
)


async def visible_media(
    conn: asyncpg.Connection, media_id: int, user_id: int, lock: bool = False, avatars: bool = False
) -> MediaRec:
    """The media, if ``user_id`` uploaded it or can see an entry carrying it (``avatars``: or
    it is some user's avatar); else ``media_not_found``. ``lock``: hold the granting ref until
    commit (sends)."""
    if media_id > MAX_MEDIA_ID:
        raise not_found(media_id)
    row = await conn.fetchrow(
        f"SELECT m.id, m.uploader_id, m.kind, m.name, m.created_at, {_BLOB_COLS}"
        " FROM media m JOIN media_blobs b ON b.sha256 = m.sha256 WHERE m.id=$1",
        media_id,
    )
    if row is not None and row[1] != user_id:
        # NOWAIT: the granting ref belongs to another conversation than the send's, so it is
        # no anchor of the send (postgres_locks); a recall holding it makes the send retry
        # (LockNotAvailableError is retryable) instead of waiting in a possible cycle.
        grant = _GRANT_SQL + (" FOR SHARE OF r NOWAIT" if lock else "")
        granted = await conn.fetchval(grant, user_id, media_id) is not None
        if not granted and avatars:
            granted = await conn.fetchval("SELECT 1 FROM users WHERE avatar_media_id=$1 LIMIT 1", media_id) is not None
        if not granted:
            row = None
    if row is None:
        raise not_found(media_id)
    return MediaRec(id=row[0], uploader_id=row[1], kind=row[2], name=row[3], created_at=row[4], blob=BlobRec(*row[5:]))


async def send_media_message(conn: asyncpg.Connection, cmd: SendCmd, service: ServiceStore) -> SendResult:
    # Idempotency first: a retry returns the original, whatever happened to the media since.
    duplicate = await timeline.find_duplicate(conn, cmd.sender_id, cmd.client_msg_id)
    if duplicate is not None:
        return duplicate
    media = await visible_media(conn, ref_media_id(cmd.body), cmd.sender_id, lock=True)
    cmd = msgspec.structs.replace(cmd, body=checked_body(cmd.kind, media, cmd.body))
    return await send_job(conn, cmd, service)


class PgMediaStore(MediaStore):
    def __init__(self, store: PgJobs) -> None:
        self._store = store

    async def blob_by_sha(self, sha256: str) -> BlobRec | None:
        return await self._store.read1(blob_by_sha, sha256)

    async def create_media(
        self, media_id: int, uploader_id: int, kind: str, name: str, blob: BlobRec, now: int
    ) -> MediaRec:
        return await self._store.write(create_media, media_id, uploader_id, kind, name, blob, now, anchors=NO_ANCHORS)

    async def visible(self, media_id: int, user_id: int) -> MediaRec:
        return await self._store.read(visible_media, media_id, user_id, False, True)

    def send(self, cmd: SendCmd) -> asyncio.Future[SendResult]:
        # A customer-service send routes inside the job: opaque (postgres_locks).
        service = cmd.shop_id is not None or self._store.is_service_conv(cmd.conv_id)
        anchors = None if service else send_anchors(cmd)
        return self._store.write(send_media_message, cmd, self._store.service, anchors=anchors)
