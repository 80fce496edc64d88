"""The local half of rate-limit buckets that several processes share: the nodes of a
cluster (through Redis, yim/bus/cluster_state.py) and the workers of one node (through the
store process, yim/bus/workers.py).

The rule, kept here once for both: a process limits from its own in-memory buckets at once
(no round trip per send), records what it took, and every sync period adds that to the
shared buckets in one round trip and sets its own buckets to the shared levels, less what it
took while the round trip was in flight (that is already recorded for the next round). While
the shared state is unreachable nothing is recorded: the limit is per process until it is
back, and no debt piles up for later.

Memory: one float per (bucket, key) spent from since the last flush, so at most the keys
one process saw in one sync period.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

#: (bucket name, key, what was spent) as one flush sends them
Spending = tuple[str, Any, float]


class SharedSpending(abc.ABC):
    """Mixed into a process's shared state; it gives :meth:`healthy`, :meth:`unavailable`
    and :meth:`_debit`, the one round trip of a flush."""

    healthy: bool
    _sync_s: float

    def _init_spending(self) -> None:
        self._spent: dict[str, dict[Any, float]] = {}
        self._buckets: dict[str, Any] = {}  # name -> yim.gateway.limits.TokenBuckets

    @abc.abstractmethod
    def unavailable(self, exc: BaseException) -> None: ...

    @abc.abstractmethod
    async def _debit(self, order: list[Spending]) -> list[float]:
        """Add each spending to its shared bucket; the shared levels after, in order."""

    def share_buckets(self, name: str, buckets: Any) -> None:
        """Keep this process's in-memory TokenBuckets ``name`` in step with the shared one."""
        self._buckets[name] = buckets
        self._spent[name] = {}
        buckets.record_to(self, name)  # each take from them is recorded for the next flush

    def spent(self, name: str, key: Any, cost: float) -> None:
        """``cost`` was just taken from the local bucket ``name`` for ``key``."""
        if not self.healthy:
            return  # the shared state is away: the limit is per process until it is back
        spent = self._spent[name]
        spent[key] = spent.get(key, 0.0) + cost

    def set_level(self, name: str, key: Any, level: float) -> None:
        """The shared level of a bucket: this process's copy follows, less what it spent
        since (already recorded for the next flush)."""
        buckets = self._buckets.get(name)
        if buckets is not None:
            buckets.set_level(key, level - self._spent[name].get(key, 0.0))

    async def _limits_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self._flush_spent()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the local buckets keep limiting, per process
                self.unavailable(exc)

    async def _flush_spent(self) -> None:
        order: list[Spending] = []
        for name, spent in self._spent.items():
            if spent:
                order += [(name, key, cost) for key, cost in spent.items()]
                self._spent[name] = {}
        if not order:
            return
        # If this fails, that spending stays per process (as everything does while the
        # shared state is away), and nothing piles up for later.
        levels = await self._debit(order)
        for (name, key, _cost), level in zip(order, levels, strict=False):
            self.set_level(name, key, float(level))
