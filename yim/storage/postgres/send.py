"""The PostgreSQL send jobs that run in Python rather than in a ``yim_send_batch`` run: a
reply (its quote is read in the send's own transaction), a media message (its media is
checked first) and a customer-service send (routing). Each checks idempotency itself, then
ends in :func:`send_job`, which also writes the message's after_send events to the outbox.

A module above both the timeline and customer service because a send routes to either, as
on SQLite (:mod:`yim.storage.sqlite.send`).
"""

from __future__ import annotations

import asyncpg

from yim.storage.postgres import timeline
from yim.storage.postgres.locks import OpaqueAfterAll, running_opaque
from yim.storage.postgres.outbox import add_after_send
from yim.storage.postgres.service import service_send
from yim.storage.records import SendCmd, SendResult
from yim.storage.rules.quotes import quoted
from yim.storage.service import ServiceStore


async def send_job(
    conn: asyncpg.Connection, cmd: SendCmd, service: ServiceStore, *, routed: bool = False
) -> SendResult:
    """A send whose idempotency its caller checked: the quote of a reply, checked and taken
    in this transaction (docs/architecture.md §2.1), then customer-service routing
    (``routed``: a conversation known to be a service one; or a send to a shop) or
    ``yim_send`` — which may find the conversation is a service one after all."""
    if cmd.reply_to is not None:
        assert cmd.conv_id is not None  # a reply names its conversation (services/messages.py)
        cmd = quoted(cmd, await timeline.read_quotable(conn, cmd.conv_id, cmd.sender_id, [cmd.reply_to]))
    if routed or cmd.shop_id is not None:
        return await _with_events(conn, cmd, await service_send(conn, cmd, service.ctx))
    row = await conn.fetchrow(timeline.SEND_SQL, *timeline.send_args(cmd))
    if row["o_err"] == timeline.SERVICE_CONV:
        if not running_opaque.get():  # routing finds its locks as it goes: not in a batch
            raise OpaqueAfterAll(row["o_conv"])
        return await _with_events(conn, cmd, await service_send(conn, cmd, service.ctx))
    result, refusal = timeline.send_outcome(cmd, row)
    if refusal is not None:
        raise refusal
    assert result is not None
    return await _with_events(conn, cmd, result)


async def _with_events(conn: asyncpg.Connection, cmd: SendCmd, result: SendResult) -> SendResult:
    """The message's after_send events in the outbox, in the send's transaction."""
    await add_after_send(conn, [(cmd, result)])
    return result
