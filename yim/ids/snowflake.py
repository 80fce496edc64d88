"""Snowflake ids: 41 bits of milliseconds since 2024-01-01, 10 bits of node, 12 bits of sequence.

Why: message ids must be unique across every node without a round trip, and should grow
with time so that rows written together sit together in storage (random ids scatter the
B-tree). They are *not* gap-free and order only roughly across nodes; the gap-free order
of a timeline is its own ``seq`` (see docs/architecture.md).

Invariants kept here:
- an id is never issued twice by one generator: the (millisecond, sequence) pair only
  grows, because the generator's clock is ``max(wall clock, last issued millisecond)``;
- the clock going backwards (NTP step, VM migration) therefore never repeats an id — the
  generator keeps issuing from its last millisecond, borrowing future milliseconds when a
  millisecond's 4,096 sequence numbers run out, until the wall clock catches up;
- across restarts the caller seeds ``floor`` with the largest id already stored, so a node
  restarted on a clock that went back does not reissue;
- across nodes uniqueness rests on distinct node ids (configured, or leased in cluster mode).
"""

from __future__ import annotations

import time
from typing import Final

EPOCH_MS: Final = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS: Final = 10
SEQ_BITS: Final = 12
MAX_NODE: Final = (1 << NODE_BITS) - 1
_SEQ_MASK: Final = (1 << SEQ_BITS) - 1
_TS_SHIFT: Final = NODE_BITS + SEQ_BITS


class Snowflake:
    __slots__ = ("_clock", "_last_ms", "_node_bits", "_seq", "node_id")

    def __init__(self, node_id: int, *, floor: int = 0, clock=time.time) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be in 0..{MAX_NODE}, got {node_id}")
        self.node_id = node_id
        self._node_bits = node_id << SEQ_BITS
        self._clock = clock
        self._last_ms = (floor >> _TS_SHIFT) if floor else -1
        self._seq = _SEQ_MASK  # so the first id after a floor moves to the next millisecond

    def next_id(self) -> int:
        now = int(self._clock() * 1000) - EPOCH_MS
        if now > self._last_ms:
            self._last_ms = now
            self._seq = 0
        else:
            # Same millisecond, or the clock went back: keep counting from the last one.
            self._seq = (self._seq + 1) & _SEQ_MASK
            if self._seq == 0:
                self._last_ms += 1  # borrow the next millisecond rather than block
        return (self._last_ms << _TS_SHIFT) | self._node_bits | self._seq


def timestamp_ms(snowflake_id: int) -> int:
    """Unix milliseconds encoded in an id."""
    return (snowflake_id >> _TS_SHIFT) + EPOCH_MS


def node_of(snowflake_id: int) -> int:
    return (snowflake_id >> SEQ_BITS) & MAX_NODE
