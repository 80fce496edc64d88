"""Storage: one interface (:class:`yim.storage.base.Store`), an embedded SQLite backend and
(for clusters) a PostgreSQL backend. Domain code never writes SQL."""

from __future__ import annotations

from pathlib import Path

from yim.storage.base import Store


def open_store(
    url: str,
    data_dir: str,
    *,
    pool_min: int = 2,
    pool_max: int = 10,
    sqlite_synchronous: str = "NORMAL",
    batch_max: int = 512,
) -> Store:
    """``sqlite`` (under data_dir), ``sqlite:///path/to/file.db``, or a PostgreSQL DSN
    (``postgres://`` / ``postgresql://``; pool sizes apply to it)."""
    # The backends are imported here, not at the top: this package's __init__ runs before
    # every yim.storage module is imported (the backends' own imports included), and a node
    # loads only the backend it opens (an SQLite node never imports asyncpg).
    if url.startswith(("postgres://", "postgresql://")):
        from yim.storage.postgres.store import PostgresStore

        return PostgresStore(url, pool_min=pool_min, pool_max=pool_max, batch_max=batch_max)
    from yim.storage.sqlite.store import SqliteStore

    if url == "sqlite":
        return SqliteStore(str(Path(data_dir) / "yim.db"), synchronous=sqlite_synchronous, batch_max=batch_max)
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///"), synchronous=sqlite_synchronous, batch_max=batch_max)
    raise ValueError(f"unsupported store {url!r} (this build knows 'sqlite', 'sqlite:///PATH' and 'postgres://...')")
