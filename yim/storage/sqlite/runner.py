"""What the SQLite concept stores (relations, customer service, media, search) need of the
store, and the runner the shared adapters (:mod:`yim.storage.adapters`) call.

A module of its own, below the job modules and the store: the store builds the concept
stores, so a concept store that named :class:`~yim.storage.sqlite.store.SqliteStore` would
import its own importer. :class:`SqliteJobs` is the narrow part they use instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from yim.storage.service import ServiceStore


class SqliteJobs(Protocol):
    """The doors of :class:`~yim.storage.sqlite.store.SqliteStore` a concept store uses."""

    def write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(conn, *args)`` on the writer thread inside the next group commit."""
        ...

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` on a reader thread, in one read transaction."""
        ...

    async def index_barrier(self) -> None:
        """Return once everything committed before this call is in the search index (search
        waits for it: the indexer is a thread or a process)."""
        ...

    @property
    def service(self) -> ServiceStore:
        """The customer-service store, whose routing context a send may need."""
        ...


class SqliteRunner:
    """One writer thread runs every write in turn; nothing to declare before it runs."""

    def __init__(self, store: SqliteJobs) -> None:
        self._s = store

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None) -> Awaitable[Any]:
        return self._s.write(fn, *args)

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return self._s.read(fn, *args)
