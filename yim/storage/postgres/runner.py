"""What the PostgreSQL concept stores (relations, customer service, media, search) need of
the store, and the runner the shared adapters (:mod:`yim.storage.adapters`) call.

A module of its own, below the job modules and the store: the store builds the concept
stores, so a concept store that named :class:`~yim.storage.postgres.store.PostgresStore`
would import its own importer. :class:`PgJobs` is the narrow part they use instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from yim.storage.postgres.locks import Anchors
from yim.storage.service import ServiceStore


class PgJobs(Protocol):
    """The doors of :class:`~yim.storage.postgres.store.PostgresStore` a concept store uses.
    A job is ``async fn(conn, *args)``."""

    def write(self, fn: Callable[..., Awaitable[Any]], *args: Any, anchors: Anchors | None) -> asyncio.Future[Any]:
        """Run the job in the next batch; ``anchors``: what it may lock (None: it cannot
        tell before it runs, and gets a transaction alone)."""
        ...

    async def read(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run the job in one repeatable-read, read-only transaction."""
        ...

    async def read1(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run the job outside a transaction (single-statement reads)."""
        ...

    def is_service_conv(self, conv_id: int | None) -> bool:
        """Known to be a customer-service conversation."""
        ...

    @property
    def service(self) -> ServiceStore:
        """The customer-service store, whose routing context a send may need."""
        ...


class PgRunner:
    """Writes declare the users they lock (postgres_locks); reads of one statement
    (``one_statement``) skip the transaction of their own."""

    def __init__(self, store: PgJobs, one_statement: frozenset[Callable[..., Awaitable[Any]]]) -> None:
        self._s = store
        self._one_statement = one_statement

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...], users: tuple[int, ...] | None) -> Awaitable[Any]:
        return self._s.write(fn, *args, anchors=None if users is None else Anchors(users=users))

    def read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Awaitable[Any]:
        return (self._s.read1 if fn in self._one_statement else self._s.read)(fn, *args)
