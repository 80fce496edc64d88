"""The webhook outbox (``schema_sqlite_0005_webhooks.sql``, ``schema_postgres_0009_webhooks.sql``):
events waiting to be POSTed to the operator's hooks, durable across a crash.

A row is one event for one hook URL. Delivery is at least once: a node *claims* due rows
(pushes their ``next_at`` out by a lease, in PostgreSQL with ``FOR UPDATE SKIP LOCKED`` so
two nodes never claim one row), POSTs them, then deletes the delivered ones or reschedules
the failed ones; a node that dies holding a claim leaves rows that fall due again when the
lease ends, and another node (or the same one, restarted) delivers them again.
"""

from __future__ import annotations

import abc

import msgspec


class OutboxEvent(msgspec.Struct, frozen=True):
    """An event to add: its request body is ``payload`` (JSON), sent to ``url``."""

    url: str
    event: str
    event_id: int
    payload: bytes


class OutboxRow(msgspec.Struct, frozen=True):
    id: int
    url: str
    event: str
    event_id: int
    payload: bytes
    attempts: int  # failed attempts so far


class OutboxStore(abc.ABC):
    @abc.abstractmethod
    async def add(self, events: list[OutboxEvent], now: int) -> None:
        """Append events, due at once."""

    @abc.abstractmethod
    async def claim(self, now: int, lease_ms: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` due rows (oldest due first), leased to the caller until
        ``now + lease_ms``."""

    @abc.abstractmethod
    async def delivered(self, ids: list[int]) -> None:
        """Forget delivered rows."""

    @abc.abstractmethod
    async def failed(self, row_id: int, attempts: int, next_at: int | None, error: str, now: int) -> None:
        """A failed attempt: due again at ``next_at``, or, if None, a dead letter from ``now``."""

    @abc.abstractmethod
    async def counts(self) -> tuple[int, int]:
        """(rows waiting, dead letters)."""
