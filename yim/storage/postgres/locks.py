"""The lock order of the PostgreSQL store: what a write job may wait for, declared up front.

Several nodes write to one database at once, each in batched transactions that hold their
row locks until COMMIT. Two transactions that lock the same rows in different orders
deadlock, and PostgreSQL only notices after ``deadlock_timeout`` (1 s by default), during
which both nodes' writers — and every client waiting for an ACK from them — stand still.
So yim never lets that happen:

- **Anchors.** The rows a transaction may have to *wait* for are its anchors: conversation
  rows (the timeline head and the membership guard) and user rows (the inbox seq). A write
  job declares its anchors (:class:`Anchors`) when it is submitted.
- **Prelude.** A transaction first locks the union of its jobs' anchors with one call of
  ``yim_lock`` (postgres_functions.sql): conversations in id order, then users in id order.
- **Guarded rows.** Every other row a job writes (messages, inbox entries, membership and
  read-marker rows, idempotency keys, relation rows under their pair lock) is written only
  while holding an anchor that guards it, so no two transactions past their preludes ever
  wait for each other; and transactions inside their preludes wait in one global order.
  No cycle can form, so no deadlock.
- **Opaque jobs.** A job that cannot name its anchors before it is submitted runs in a
  transaction of its own, never batched with others. If it learns them before its first
  lock (a friend request answered by id), it takes its own prelude then. If it only
  discovers them as it goes (customer-service routing picks an agent and then serves the
  queue, conversation by conversation), it first locks its shop — shops come before
  conversations in the order — and from then on waits at most ``DYNAMIC_LOCK_TIMEOUT_MS``
  for any further lock (:func:`bound_dynamic_waits`): a wait that would close a cycle
  fails in well under PostgreSQL's ``deadlock_timeout``, the job rolls back and the
  writer reruns it, while the transactions it blocked go on.

The rule each anchor keeps (docs/architecture.md, "Lock order", has the table):

======================  ===========================================================
row                     written only while holding
======================  ===========================================================
messages (c, seq)       conversation c, exclusively
user_conversations      conversation c: exclusively (membership, mentions, the sender's
(u, c)                  own read marker) or shared together with user u (read markers)
inbox (u, seq)          user u (its seq comes from ``users.inbox_seq``)
hidden_messages (u, …)  user u (delete for me: the user's own hidden set)
direct_pairs (a, b)     users a and b
client_msg_ids (s, k)   user s, the sender (every send anchors its sender)
======================  ===========================================================

Two rows outside the anchors are locked without waiting (``NOWAIT``; busy means the work
is rerun): a direct pair's conversation created by another node while the prelude waited
for the pair's users (``yim_lock`` checks again), and the ``media_refs`` row that lets a
sender forward a file seen in another conversation.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import NamedTuple

import asyncpg

from yim.storage.records import SendCmd

LOCK_SQL = "SELECT yim_lock($1, $2, $3, $4, $5, $6, $7, $8, $9)"


class Anchors(NamedTuple):
    """What one write job may lock; see the module docstring."""

    #: conversations appended to, or whose membership or settings change (exclusive)
    convs: tuple[int, ...] = ()
    #: conversations whose read marker moves (shared)
    read_convs: tuple[int, ...] = ()
    #: conversations whose current members get the entry in their inbox (write fan-out)
    members_of: tuple[int, ...] = ()
    #: users whose inbox seq moves, named directly
    users: tuple[int, ...] = ()
    #: direct pairs (sender, recipient): their conversation if it exists, and both users
    pairs: tuple[tuple[int, int], ...] = ()
    #: (user, direct conversation): the peer, who gets a read receipt
    peers_of: tuple[tuple[int, int], ...] = ()
    #: conversations whose current members all get an entry, whatever the fan-out (dissolve)
    all_members_of: tuple[int, ...] = ()


#: A job that locks no anchor (accounts, sessions, device last-seen times): batchable.
NO_ANCHORS = Anchors()

#: True while the writer runs a job submitted without anchors (alone, no prelude).
running_opaque: ContextVar[bool] = ContextVar("yim_pg_running_opaque", default=False)


class OpaqueAfterAll(Exception):
    """Raised by a job that declared anchors and found it must discover its locks as it
    goes after all (its conversation is a customer-service one): the writer rolls it back
    and runs it again alone, without anchors."""

    def __init__(self, conv_id: int) -> None:
        super().__init__(f"conversation {conv_id} is a customer-service one")
        self.conv_id = conv_id


async def lock_anchors(conn: asyncpg.Connection, anchors: Iterable[Anchors]) -> None:
    """The prelude: lock the union of ``anchors`` in the global order, in one round trip."""
    convs: set[int] = set()
    read_convs: set[int] = set()
    members_of: set[int] = set()
    users: set[int] = set()
    pairs: set[tuple[int, int]] = set()
    peers: set[tuple[int, int]] = set()
    everyone_of: set[int] = set()
    for a in anchors:
        convs.update(a.convs)
        read_convs.update(a.read_convs)
        members_of.update(a.members_of)
        users.update(a.users)
        pairs.update((min(x, y), max(x, y)) for x, y in a.pairs)
        peers.update(a.peers_of)
        everyone_of.update(a.all_members_of)
    if not (convs or read_convs or members_of or users or pairs or peers or everyone_of):
        return
    ordered_pairs = sorted(pairs)
    ordered_peers = sorted(peers)
    await conn.execute(
        LOCK_SQL,
        sorted(convs),
        sorted(read_convs - convs),
        sorted(members_of),
        sorted(users),
        [p[0] for p in ordered_pairs],
        [p[1] for p in ordered_pairs],
        [p[0] for p in ordered_peers],
        [p[1] for p in ordered_peers],
        sorted(everyone_of),
    )


def send_anchors(cmd: SendCmd) -> Anchors:
    """A send locks its conversation, the inboxes it fans out to, and its sender (whose
    client_msg_id it claims). A direct send by user id locks the pair's conversation, if any."""
    if cmd.to is not None:
        return Anchors(pairs=((cmd.sender_id, cmd.to),), users=(cmd.sender_id,))
    assert cmd.conv_id is not None
    return Anchors(convs=(cmd.conv_id,), members_of=(cmd.conv_id,), users=(cmd.sender_id,))


#: How long a job that discovers its locks as it goes (see the module docstring) waits for
#: one: far below deadlock_timeout (1 s), far above a batch's usual lock hold (~1-5 ms).
DYNAMIC_LOCK_TIMEOUT_MS = 100


async def bound_dynamic_waits(conn: asyncpg.Connection) -> None:
    """From here to the end of the transaction, give up on any lock after a short wait."""
    await conn.execute(f"SET LOCAL lock_timeout = {DYNAMIC_LOCK_TIMEOUT_MS}")
