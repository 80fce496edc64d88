"""The back-off rule of failed logins and registrations, written once.

A key (a username, an address) may fail ``free`` times; each failure after those locks it
for twice as long as the one before, from ``base_s``, up to ``max_s``. The gateway's own
:class:`~yim.gateway.limits.Backoff` (one node) and the workers' hub (yim/bus/workers_hub.py,
shared by a node's workers) keep the counters and call this; the cluster keeps them in
Redis, where the same rule is its Lua script's (yim/bus/cluster_state.py).
"""

from __future__ import annotations

#: doublings past which the lock stops growing (2 ** 40 is beyond any ``max_s``)
MAX_DOUBLINGS = 40


def locked_until(failures: int, free: int, base_s: float, max_s: float, now: float) -> float | None:
    """When a key that has failed ``failures`` times may try again, or None while it is
    still within its ``free`` failures."""
    over = failures - free
    if over <= 0:
        return None
    return now + min(max_s, base_s * 2 ** min(over - 1, MAX_DOUBLINGS))
