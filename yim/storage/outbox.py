"""The webhook outbox (``schema_sqlite_0005_webhooks.sql``, ``schema_postgres_0009_webhooks.sql``):
events waiting to be POSTed to the operator's hooks, durable across a crash.

A row is one event for one hook URL. Delivery is at least once: a node *claims* due rows
(pushes their ``next_at`` out by a lease, in PostgreSQL with ``FOR UPDATE SKIP LOCKED`` so
two nodes never claim one row), POSTs them, then deletes the delivered ones or reschedules
the failed ones; a node that dies holding a claim leaves rows that fall due again when the
lease ends, and another node (or the same one, restarted) delivers them again. On SQLite
the one deliverer takes back every claim when it starts (:meth:`OutboxStore.release_claims`).

A message's ``after_send`` events are written by the send itself, in its own transaction
(SQLite: the group commit that writes the message; PostgreSQL: the transaction of its send
batch): :class:`yim.storage.records.SendCmd` names the hooks' URLs and the store adds one row
per URL with :func:`after_send_payload`. So an ACKed message always has its events, and one
that is not stored has none.
"""

from __future__ import annotations

import abc

import msgspec

from yim.storage.records import MessageRec

_encoder = msgspec.json.Encoder()


class OutboxEvent(msgspec.Struct, frozen=True):
    """An event to add: its request body is ``payload`` (JSON), sent to ``url``."""

    url: str
    event: str
    event_id: int
    payload: bytes


def after_send_payload(m: MessageRec) -> bytes:
    """The request body of a message's ``after_send`` event (docs/operations.md §9.4); its
    event id is the message id, so a receiver de-duplicates a repeated delivery by it."""
    return _encoder.encode(
        {
            "event_id": str(m.msg_id),
            "event": "after_send",
            "created_at": m.created_at,
            "data": {
                "msg_id": str(m.msg_id),
                "conv_id": str(m.conv_id),
                "seq": m.seq,
                "sender_id": str(m.sender_id),
                "sender_device": m.sender_device,
                "kind": m.kind,
                "body": msgspec.Raw(m.body),
                "client_msg_id": m.client_msg_id,
            },
        }
    )


def after_send_rows(urls: tuple[str, ...], m: MessageRec) -> list[tuple[str, str, int, bytes, int]]:
    """The outbox rows (url, event, event_id, payload, next_at) of a stored message, due at
    once: one per hook URL."""
    payload = after_send_payload(m)
    return [(url, "after_send", m.msg_id, payload, m.created_at) for url in urls]


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

    async def release_claims(self, now: int) -> int:
        """Called by a deliverer as it starts, on a store where it is the only one: make every
        waiting row due at ``now``, so rows a killed deliverer had claimed are not held for
        the rest of their lease. Returns how many rows were made due.

        A store shared by several nodes (PostgreSQL) keeps its leases, which may be live
        nodes' claims: there a dead node's rows fall due when their lease ends, and this
        does nothing."""
        return 0
