"""A user's data as a zip archive: for a server admin (``admin_export``, ``yim admin export``)
and for the user themself ("download my data"). The archive's layout is a documented format
(docs/protocol.md §19.7) that outside tools read.

What goes in is what the user can see, read through the same store reads their own client
uses — nothing here decides visibility again:

- messages: ``Store.history`` pages, which apply the timeline's read rules (a member's
  window from their join to their leave, entries they hid left out, a recalled message's
  body already erased, an edited message with its latest body); ``edit`` entries are left
  out, since the message they edit already carries the latest version;
- media: ``MediaStore.visible`` (the one rule of who may download a media id) for each media
  a message in the archive carries, with its bytes from the blob store.

The archive is written to a temporary file under ``<data_dir>/tmp/exports`` (the zip's
writes run in worker threads), one page of history at a time, so memory stays bounded
whatever the history's size; the caller streams the file and removes it. A node builds at
most ``export_max_concurrent`` at once (:class:`ExportGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from yim.protocol.errors import YimError
from yim.services.accounts import user_out
from yim.services.admin import account_out
from yim.services.groups import group_out
from yim.services.media import media_out
from yim.services.relations import request_out
from yim.services.wire import message_out
from yim.storage.admin import AuditEntry
from yim.storage.media import MEDIA_KINDS, carried_media_id
from yim.storage.rules.admin import require_admin

if TYPE_CHECKING:
    from yim.storage.base import Store
    from yim.storage.blobs import BlobStore

#: the archive format's name and version (manifest.json); a change that removes or renames a
#: field raises the version
FORMAT = "yim-export"
VERSION = 1
#: rows read per store call: one page of history is the most held in memory at once
PAGE = 500
_USERS_BATCH = 1000
_json = msgspec.json.Encoder()

README = """\
This archive holds one account's data on a yim server, as that account could see it when it
was made. All files are UTF-8 JSON (or JSON Lines: one JSON object per line); ids are
strings, times are milliseconds since 1970-01-01 UTC. The format is described field by field
in the server's protocol documentation, section 19.7 ("Data export").

manifest.json        what this archive is: format, version, the account, when, by whom, counts
profile.json         the account: id, username, display name, created_at, admin, disabled_at,
                     and its privacy settings
devices.json         the devices with a live session
relations.json       friends, following, followers, blocked users, pending friend requests
groups.json          the groups the account is or was a member of
conversations.json   every conversation the account is or was in, and its file of messages
conversations/<conv_id>.jsonl
                     the messages of one conversation the account could see, in seq order:
                     from when it joined to when it left, without what it hid; a recalled
                     message is there without its content; an edited message has its latest
                     text (edited_at says when)
media.json           the media those messages carry, and the file of each
media/<media_id>.<ext>
                     the bytes of each media
users.json           the id, username and display name of every user named in this archive
"""


class ExportCounts(msgspec.Struct):
    conversations: int = 0
    messages: int = 0
    media: int = 0
    media_missing: int = 0  # media whose bytes the blob store could not give


class ExportGate:
    """At most ``limit`` exports at once on this node: more are refused with
    ``export_busy`` rather than queued (an export holds a temp file and a store reader)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.running >= self.limit:
            raise YimError(
                "export_busy",
                f"this node is building {self.running} data exports already; try again later",
                retry_after=30.0,
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


def export_dir(data_path: Path) -> Path:
    return data_path / "tmp" / "exports"


def clear_leftovers(data_path: Path) -> None:
    """Archives a crash left behind (none is in use when a node starts)."""
    folder = export_dir(data_path)
    if folder.is_dir():
        for p in folder.glob("export-*.zip"):
            with contextlib.suppress(OSError):
                p.unlink()


def archive_name(username: str, now_ms: int) -> str:
    """The file name a download suggests: ``yim-export-<username>-<YYYYMMDD>.zip``."""
    day = time.strftime("%Y%m%d", time.gmtime(now_ms / 1000))
    return f"yim-export-{username}-{day}.zip"


def _ext(mime: str, name: str) -> str:
    guessed = mimetypes.guess_extension(mime, strict=False)
    if guessed:
        return guessed
    suffix = Path(name).suffix
    ok = suffix[1:].isascii() and suffix[1:].isalnum() and len(suffix) <= 9  # never a path of its own
    return suffix if ok else ".bin"


class _Zip:
    """The archive being written: every write to the file runs in a worker thread, one at a
    time (a ZipFile is used by one thread at a time, never concurrently)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf

    async def json(self, name: str, obj: Any) -> None:
        await asyncio.to_thread(self.zf.writestr, name, _json.encode(obj))

    async def open(self, name: str, *, compress: bool = True) -> IO[bytes]:
        info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        return await asyncio.to_thread(self.zf.open, info, "w", force_zip64=True)

    async def write(self, entry: IO[bytes], data: bytes) -> None:
        await asyncio.to_thread(entry.write, data)

    async def close_entry(self, entry: IO[bytes]) -> None:
        await asyncio.to_thread(entry.close)


async def _pages(fetch: Any, cursor_of: Any, start: Any) -> AsyncIterator[list[Any]]:
    """Every row of a paged store read: ``fetch(cursor)`` returns up to PAGE rows."""
    cursor = start
    while True:
        rows = await fetch(cursor)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        cursor = cursor_of(rows[-1])


class _Writer:
    def __init__(self, store: Store, blobs: BlobStore, user_id: int, z: _Zip) -> None:
        self.store = store
        self.blobs = blobs
        self.user_id = user_id
        self.z = z
        self.counts = ExportCounts()
        self.named: set[int] = set()  # every user the archive names (users.json)
        self.media_done: set[int] = set()
        self.media_rows: list[dict[str, Any]] = []

    async def profile(self) -> str:
        account = await self.store.admin.account(self.user_id)
        if account is None:
            raise YimError("not_found", f"no user {self.user_id}")
        privacy = await self.store.relations.privacy(self.user_id)
        profile = msgspec.structs.asdict(account_out(account))
        profile["privacy"] = {"dm_policy": privacy.dm_policy, "presence": privacy.presence}
        await self.z.json("profile.json", profile)
        devices = await self.store.list_devices(self.user_id)
        await self.z.json(
            "devices.json",
            {
                "devices": [
                    {
                        "device_id": d.device_id,
                        "platform": d.platform,
                        "name": d.name,
                        "created_at": d.created_at,
                        "last_seen_at": d.last_seen_at,
                    }
                    for d in devices
                ]
            },
        )
        return account.username

    async def relations(self) -> None:
        rel = self.store.relations
        uid = self.user_id
        friends: list[dict[str, Any]] = []
        async for rows in _pages(lambda after: rel.friends(uid, after, PAGE), lambda r: r.friend_id, 0):
            friends += [
                {"user_id": str(r.friend_id), "remark": r.remark, "tags": r.tags, "since": r.created_at} for r in rows
            ]
            self.named.update(r.friend_id for r in rows)
        out: dict[str, Any] = {"friends": friends}
        for kind in ("following", "followers", "blocks"):
            edges: list[dict[str, Any]] = []
            async for rows in _pages(lambda after, k=kind: rel.edges(uid, k, after, PAGE), lambda r: r.user_id, 0):
                edges += [{"user_id": str(r.user_id), "since": r.created_at} for r in rows]
                self.named.update(r.user_id for r in rows)
            out[kind] = edges
        requests: dict[str, list[Any]] = {}
        for direction in ("incoming", "outgoing"):
            found: list[Any] = []
            async for rows in _pages(
                lambda before, d=direction: rel.friend_requests(uid, d == "incoming", before, PAGE),
                lambda r: r.id,
                None,
            ):
                found += [request_out(r) for r in rows]
                self.named.update(x for r in rows for x in (r.from_id, r.to_id))
            requests[direction] = found
        out["friend_requests"] = requests
        await self.z.json("relations.json", out)

    async def conversations(self) -> None:
        # The list first (ids and heads), then each conversation's messages page by page.
        convs: dict[int, Any] = {}
        before: int | None = None
        while True:
            rows, _ = await self.store.conversations(self.user_id, before, PAGE)
            for r in rows:
                convs.setdefault(r.conv_id, r)
            if len(rows) < PAGE:
                break
            before = rows[-1].last_msg_id
        listed: list[dict[str, Any]] = []
        groups: list[Any] = []
        for conv_id in sorted(convs):
            r = convs[conv_id]
            file = f"conversations/{conv_id}.jsonl"
            count = await self._messages(conv_id, file)
            if r.peer_id is not None:
                self.named.add(r.peer_id)
            listed.append(
                {
                    "conv_id": str(conv_id),
                    "type": r.type,
                    "name": r.name,
                    "peer_id": None if r.peer_id is None else str(r.peer_id),
                    "shop_id": str(r.shop_id) if r.shop_id else None,
                    "customer_id": str(r.customer_id) if r.customer_id else None,
                    "active": r.active,
                    "member_count": r.member_count,
                    "last_seq": r.last_seq,
                    "read_seq": r.read_seq,
                    "messages": count,
                    "file": file,
                }
            )
            if r.type == "group":
                try:
                    groups.append(group_out(await self.store.group_info(conv_id, self.user_id)))
                except YimError:
                    pass  # gone since the list was read
        self.counts.conversations = len(listed)
        await self.z.json("conversations.json", {"conversations": listed})
        await self.z.json("groups.json", {"groups": groups})

    async def _messages(self, conv_id: int, file: str) -> int:
        entry = await self.z.open(file)
        count = 0
        media: list[int] = []  # written once this entry is closed (a zip writes one entry at a time)
        try:
            after = 0
            while True:
                msgs, more = await self.store.history(self.user_id, conv_id, None, after, PAGE)
                lines = bytearray()
                for m in msgs:
                    if m.kind == "edit":  # the message it edits carries the latest version
                        continue
                    lines += _json.encode(message_out(m)) + b"\n"
                    count += 1
                    self.named.add(m.sender_id)
                    if m.kind in MEDIA_KINDS and not m.recalled:
                        media_id = carried_media_id(m.body)
                        if media_id is not None and media_id not in self.media_done:
                            self.media_done.add(media_id)
                            media.append(media_id)
                if lines:
                    await self.z.write(entry, bytes(lines))
                if not more or not msgs:
                    break
                after = msgs[-1].seq
        except YimError as exc:
            if exc.code != "not_member":  # left the list since it was read: nothing more to see
                raise
        finally:
            await self.z.close_entry(entry)
        self.counts.messages += count
        for media_id in media:
            await self._media(media_id)
        return count

    async def _media(self, media_id: int) -> None:
        try:
            media = await self.store.media.visible(media_id, self.user_id)
        except YimError:
            return  # not (or no longer) visible to this user: not theirs to take
        out: dict[str, Any] = msgspec.structs.asdict(media_out(media))
        if not await self.blobs.has(media.blob.sha256):
            # The record outlived its bytes (a blob store restored from an older backup):
            # the archive says so rather than failing the whole export.
            self.counts.media_missing += 1
            out["file"] = None
        else:
            file = f"media/{media_id}{_ext(media.blob.mime, media.name)}"
            entry = await self.z.open(file, compress=False)  # media is mostly compressed already
            try:
                chunks = self.blobs.read(media.blob.sha256, 0, media.blob.size)
                try:
                    async for chunk in chunks:
                        await self.z.write(entry, chunk)
                finally:
                    await chunks.aclose()
            finally:
                await self.z.close_entry(entry)
            self.counts.media += 1
            out["file"] = file
        self.media_rows.append(out)

    async def users(self) -> None:
        ids = sorted(self.named | {self.user_id})
        out: list[Any] = []
        for i in range(0, len(ids), _USERS_BATCH):
            found = await self.store.users_by_ids(ids[i : i + _USERS_BATCH])
            out += [user_out(found[u]) for u in ids[i : i + _USERS_BATCH] if u in found]
        await self.z.json("users.json", {"users": out})


async def write_archive(
    store: Store, blobs: BlobStore, user_id: int, folder: Path, exported_by: str
) -> tuple[Path, str, ExportCounts]:
    """Write ``user_id``'s archive to a new file in ``folder``; returns its path (the caller
    removes it), the suggested file name and the counts. ``exported_by``: ``self``,
    ``admin`` or ``operator`` (manifest.json). On failure nothing is left behind."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    fd, tmp = await asyncio.to_thread(tempfile.mkstemp, dir=folder, prefix="export-", suffix=".zip")
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as raw:
            zf = zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
            try:
                z = _Zip(zf)
                now = int(time.time() * 1000)
                await asyncio.to_thread(zf.writestr, "README.txt", README.encode())
                w = _Writer(store, blobs, user_id, z)
                username = await w.profile()
                await w.relations()
                await w.conversations()
                await z.json("media.json", {"media": w.media_rows})
                await w.users()
                manifest = {
                    "format": FORMAT,
                    "version": VERSION,
                    "user_id": str(user_id),
                    "username": username,
                    "exported_at": now,
                    "exported_by": exported_by,
                    **msgspec.structs.asdict(w.counts),
                }
                await z.json("manifest.json", manifest)
            finally:
                await asyncio.to_thread(zf.close)
    except BaseException:
        # not awaited: this also runs when the export is cancelled (the client went away)
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    return path, archive_name(username, now), w.counts


async def begin_admin_export(store: Store, actor_id: int | None, user_id: int, reason: str, source: str) -> None:
    """An admin's export of ``user_id``: the actor is checked and the audit row written (in
    one transaction) before any of the data is read; ``forbidden`` / ``not_found`` otherwise."""
    detail = _json.encode({"reason": reason} if reason else {})
    entry = AuditEntry(
        at=int(time.time() * 1000), source=source, action="export", target=f"user:{user_id}", detail=detail
    )
    await store.admin.record_export(actor_id, user_id, entry)


async def check_admin(store: Store, actor_id: int) -> None:
    """Refuse a non-admin before anything else (the busy check included): ``forbidden``."""
    require_admin(actor_id, await store.admin.account(actor_id))
