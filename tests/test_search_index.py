"""The embedded store's search index lives in its own file, written after the message commit
(yim/storage/sqlite/indexer.py). What a crash can leave behind — an index missing the last
messages, a recall not yet applied, no index file at all — is repaired on the next start,
and a search never misses a message committed before it."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

from yim.storage.records import SendCmd, UserRec
from yim.storage.sqlite.store import SqliteStore

_ids = itertools.count(1 << 40)


async def _store(folder: Path) -> SqliteStore:
    store = SqliteStore(str(folder / "yim.db"))
    await store.open()
    return store


async def _users(store: SqliteStore) -> tuple[int, int]:
    a, b = next(_ids), next(_ids)
    for uid, name in ((a, "alice"), (b, "bob")):
        await store.create_user(UserRec(id=uid, username=name, display_name="", password_hash="x", created_at=1))
    return a, b


async def _send(store: SqliteStore, a: int, b: int, text: str) -> tuple[int, int, int]:
    res = await store.send_message(
        SendCmd(
            msg_id=next(_ids),
            new_conv_id=next(_ids),
            sender_id=a,
            sender_device="d",
            kind="text",
            body=('{"text":"' + text + '"}').encode(),
            client_msg_id=f"c{next(_ids)}",
            created_at=1,
            to=b,
        )
    )
    return res.message.conv_id, res.message.seq, res.message.msg_id


async def _found(store: SqliteStore, user: int, term: str) -> list[str]:
    hits, _more = await store.search.search(user, None, [term], None, 50)
    return [h.text for h in hits]


async def test_a_search_sees_every_message_committed_before_it(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        a, b = await _users(store)
        # no await between send and search: the index must catch up before the search reads
        sends = [asyncio.ensure_future(_send(store, a, b, f"亿级消息 number {i:04d}")) for i in range(3000)]
        await asyncio.gather(*sends)
        hits, more = await store.search.search(b, None, ["number 2999"], None, 50)
        assert [h.text for h in hits] == ["亿级消息 number 2999"] and not more
        assert len(await _found(store, b, "亿级消息")) == 50
    finally:
        await store.close()


async def test_restart_indexes_what_a_crash_left_out_and_drops_what_was_recalled(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    a, b = await _users(store)
    kept = [await _send(store, a, b, f"kept message {i}") for i in range(5)]
    recalled = kept[0]
    await store.close()

    # What a kill between the message commit and the index commit leaves: the newest
    # messages missing from the index (indexed_upto stays where it was), and a recall whose
    # removal never reached the index.
    index = sqlite3.connect(tmp_path / "yim-search.db", isolation_level=None)
    index.execute("DELETE FROM message_fts WHERE rowid IN (?, ?)", (kept[3][2], kept[4][2]))
    index.close()
    store = await _store(tmp_path)
    try:
        await store.recall(recalled[0], a, recalled[1], next(_ids), 2, 120_000)
    finally:
        await store.close()
    index = sqlite3.connect(tmp_path / "yim-search.db", isolation_level=None)
    index.execute("INSERT INTO message_fts (rowid, text) VALUES (?, 'kept message 0')", (recalled[2],))
    index.close()

    store = await _store(tmp_path)
    try:
        assert sorted(await _found(store, b, "kept message")) == [f"kept message {i}" for i in range(1, 5)]
        index = sqlite3.connect(tmp_path / "yim-search.db")
        assert index.execute("SELECT COUNT(*) FROM message_fts WHERE rowid=?", (recalled[2],)).fetchone() == (0,)
        index.close()
    finally:
        await store.close()


async def test_a_lost_or_outdated_index_file_is_rebuilt_from_the_messages(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    a, b = await _users(store)
    for i in range(12):
        await _send(store, a, b, f"支持亿级消息量 {i}")
    await store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"yim-search.db{suffix}").unlink(missing_ok=True)

    store = await _store(tmp_path)
    try:
        assert len(await _found(store, a, "亿级消息")) == 12
        assert store.indexer.indexed == 12
    finally:
        await store.close()

    # an index file of another layout (an older release) is replaced, not misread
    index = sqlite3.connect(tmp_path / "yim-search.db", isolation_level=None)
    index.execute("PRAGMA user_version = 1")
    index.close()
    store = await _store(tmp_path)
    try:
        assert len(await _found(store, a, "亿级消息")) == 12
        assert store.indexer.indexed == 12
    finally:
        await store.close()


async def test_a_search_waits_for_the_index_to_hold_what_was_sent_before_it(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    blocker = sqlite3.connect(tmp_path / "yim-search.db", isolation_level=None)
    try:
        a, b = await _users(store)
        blocker.execute("BEGIN IMMEDIATE")  # the indexer cannot commit while this holds the lock
        await _send(store, a, b, "waiting for the index")
        search = asyncio.ensure_future(_found(store, b, "for the index"))
        await asyncio.sleep(0.3)
        assert not search.done()  # it would have answered [] from an index lagging behind
        blocker.execute("COMMIT")
        assert await search == ["waiting for the index"]
    finally:
        blocker.close()
        await store.close()
