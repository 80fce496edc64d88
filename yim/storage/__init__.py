"""Storage: one interface (:class:`yim.storage.base.Store`), an embedded SQLite backend and
(for clusters) a PostgreSQL backend. Domain code never writes SQL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# Only for the annotation below: a process that imports one storage module (the search
# indexer process's main, yim/storage/sqlite/indexer_process.py) loads no interface, no asyncio.
if TYPE_CHECKING:
    from yim.storage.base import Store


def open_store(
    url: str,
    data_dir: str,
    *,
    pool_min: int = 2,
    pool_max: int = 10,
    sqlite_synchronous: str = "NORMAL",
    batch_max: int = 512,
    indexer_process: bool = False,
) -> Store:
    """``sqlite`` (under data_dir), ``sqlite:///path/to/file.db``, or a PostgreSQL DSN
    (``postgres://`` / ``postgresql://``; pool sizes apply to it; ``indexer_process`` to SQLite's
    search indexer)."""
    # The backends are imported here, not at the top: this package's __init__ runs before
    # every yim.storage module is imported (the backends' own imports included), and a node
    # loads only the backend it opens (an SQLite node never imports asyncpg).
    if url.startswith(("postgres://", "postgresql://")):
        from yim.storage.postgres.store import PostgresStore

        return PostgresStore(url, pool_min=pool_min, pool_max=pool_max, batch_max=batch_max)
    from yim.storage.sqlite.store import SqliteStore

    if url == "sqlite" or url.startswith("sqlite:///"):
        path = str(Path(data_dir) / "yim.db") if url == "sqlite" else url.removeprefix("sqlite:///")
        return SqliteStore(path, synchronous=sqlite_synchronous, batch_max=batch_max, indexer_process=indexer_process)
    raise ValueError(f"unsupported store {url!r} (this build knows 'sqlite', 'sqlite:///PATH' and 'postgres://...')")
