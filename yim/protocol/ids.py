"""Ids on the wire: 63-bit snowflakes sent as decimal strings (docs/protocol.md §3)."""

from __future__ import annotations

from yim.protocol.errors import YimError

#: ids are signed 64-bit integers in both stores; anything larger names nothing
_ID_LIMIT = 2**63


def parse_id(value: str, what: str) -> int:
    """The id in ``value``, or ``not_found`` naming ``what`` when it cannot name a stored row.

    ``value`` has already passed the frame schema (digits only), so ``int`` cannot fail here.
    """
    n = int(value)
    if n >= _ID_LIMIT:
        raise YimError("not_found", f"no {what} {value}")
    return n
