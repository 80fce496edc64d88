"""Device platforms, the class each belongs to, and the multi-device policy over them. The
per-class online limits (one mobile at a time, ...) count devices by class, on one node (the
gateway's Hub) and across workers and nodes (the buses), so the rule lives here, once, where
all three can call it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

_D = TypeVar("_D")

#: platform (as a device declares it in ``auth``) -> its class for the online limits
PLATFORM_CLASS: Final[dict[str, str]] = {"android": "mobile", "ios": "mobile", "desktop": "desktop", "web": "web"}


def signed_out(
    newest_platform: str,
    others: Iterable[_D],
    class_limits: Mapping[str, int],
    max_per_user: int,
    platform: Callable[[_D], str],
    made: Callable[[_D], float],
) -> list[tuple[_D, str]]:
    """The multi-device policy (close code 4006): which of a user's ``others`` (their other
    live devices) a registration on ``newest_platform`` signs out, each with the reason it is
    told. The newest wins: beyond its class's limit (``class_limits``, 0 or absent: none)
    the oldest of that class go, then beyond ``max_per_user`` in all the oldest of the rest.
    ``made`` orders devices oldest first; the registering device is never among ``others``."""
    older = sorted(others, key=made)
    cls = PLATFORM_CLASS.get(newest_platform, newest_platform)
    limit = class_limits.get(cls, 0)
    out: list[tuple[_D, str]] = []
    if limit:
        same = [d for d in older if PLATFORM_CLASS.get(platform(d), platform(d)) == cls]
        out = [(d, f"signed in on another {cls} device") for d in same[: max(0, len(same) + 1 - limit)]]
    gone = {id(d) for d, _ in out}
    rest = [d for d in older if id(d) not in gone]
    out += [(d, "too many devices online") for d in rest[: max(0, len(rest) + 1 - max_per_user)]]
    return out
