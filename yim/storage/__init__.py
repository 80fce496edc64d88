"""Storage: one interface (:class:`yim.storage.base.Store`), an embedded SQLite backend and
(for clusters) a PostgreSQL backend. Domain code never writes SQL."""

from __future__ import annotations

from yim.storage.base import Store


def open_store(url: str, data_dir: str) -> Store:
    """``sqlite`` (under data_dir) or ``sqlite:///path/to/file.db``."""
    from yim.storage.sqlite import SqliteStore

    if url == "sqlite":
        from pathlib import Path

        return SqliteStore(str(Path(data_dir) / "yim.db"))
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///"))
    raise ValueError(f"unsupported store {url!r} (this build knows 'sqlite' and 'sqlite:///PATH')")
