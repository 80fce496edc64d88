"""The PostgreSQL store's search index lives apart from the send's transaction
(yim/storage/postgres/search.py): a send names its entries in ``search_pending`` and the
indexer moves them into ``message_search`` later. A search must answer the same at every
moment in between: what was committed before it is found whether indexed or still pending,
an edit is found by its new text only, a recall is gone at once, and once a pass has run
the index holds no trace of a recalled (or erased) text."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg

from yim.storage.postgres.search import INDEX_LOCK, index_pending
from yim.storage.postgres.store import PostgresStore
from yim.storage.records import SendCmd, UserRec

_ids = itertools.count(1 << 40)


async def _send(store: PostgresStore, a: int, b: int, text: str) -> tuple[int, int]:
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
    return res.message.conv_id, res.message.seq


async def _found(store: PostgresStore, user: int, *terms: str) -> list[str]:
    hits, _more = await store.search.search(user, None, list(terms), None, 50)
    return [h.text for h in hits]


async def _tables(conn: asyncpg.Connection) -> tuple[int, list[str]]:
    pending = await conn.fetchval("SELECT count(*) FROM search_pending")
    texts = [r[0] for r in await conn.fetch("SELECT text FROM message_search ORDER BY msg_id")]
    return pending, texts


async def test_found_while_pending_and_once_indexed_edits_and_recalls_follow(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, index_search=False)  # passes run by hand below
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        a, b = next(_ids), next(_ids)
        for uid, name in ((a, "alice"), (b, "bob")):
            await store.create_user(UserRec(id=uid, username=name, display_name="", password_hash="x", created_at=1))
        first = await _send(store, a, b, "支持亿级消息量 one")
        second = await _send(store, a, b, "亿级消息 two")
        assert await _tables(conn) == (2, [])
        # pending only: found through the pending rows, checked on the text itself
        assert await _found(store, b, "亿级消息") == ["亿级消息 two", "支持亿级消息量 one"]
        assert await _found(store, b, "亿级", "two") == ["亿级消息 two"]

        assert await store.read1(index_pending, 64) == (2, 2)
        assert await _tables(conn) == (0, ["支持亿级消息量 one", "亿级消息 two"])
        assert await _found(store, b, "亿级消息") == ["亿级消息 two", "支持亿级消息量 one"]
        assert await _found(store, a, "one") == ["支持亿级消息量 one"]

        # an edit: the old text is still indexed, but the entry answers by its new text,
        # once (not from the index and the pending rows both)
        await store.edit(
            first[0], a, first[1], '{"text":"支持亿级消息量 rewritten"}'.encode(), None, next(_ids), 2, 10**9
        )
        assert (await _tables(conn))[0] == 1
        assert await _found(store, b, "亿级消息") == ["亿级消息 two", "支持亿级消息量 rewritten"]
        assert await _found(store, b, "one") == []
        # a recall is gone from the results in its own transaction, indexed or not
        await store.recall(second[0], a, second[1], next(_ids), 3, 10**9)
        assert await _found(store, b, "亿级消息") == ["支持亿级消息量 rewritten"]
        assert await _found(store, b, "two") == []

        assert await store.read1(index_pending, 64) == (2, 2)
        assert await _tables(conn) == (0, ["支持亿级消息量 rewritten"])
        assert await _found(store, b, "亿级消息") == ["支持亿级消息量 rewritten"]
        assert await _found(store, b, "one") == []

        # one pass at a time in the cluster: another node's pass holds the lock
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", INDEX_LOCK)
            assert await store.read1(index_pending, 64) is None
    finally:
        await conn.close()
        await store.close()


async def test_the_indexer_drains_a_burst_by_itself(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)
    await store.open()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        a, b = next(_ids), next(_ids)
        for uid, name in ((a, "carol"), (b, "dave")):
            await store.create_user(UserRec(id=uid, username=name, display_name="", password_hash="x", created_at=1))
        # concurrent sends share batches, so a pending row names several entries

        await asyncio.gather(*(_send(store, a, b, f"burst number {i:03d}") for i in range(300)))
        async with asyncio.timeout(20):
            while (await _tables(conn))[0] or store.search_indexed < 300:
                await asyncio.sleep(0.05)
        assert len((await _tables(conn))[1]) == 300
        hits, more = await store.search.search(b, None, ["number 29"], None, 50)
        assert sorted(h.text for h in hits) == [f"burst number 29{i}" for i in range(10)] and not more
    finally:
        await conn.close()
        await store.close()
