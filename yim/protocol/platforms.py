"""Device platforms and the class each belongs to. The per-class online limits (one mobile
at a time, ...) count devices by class, on one node (the hub) and across nodes (the bus),
so the mapping lives here where both can read it."""

from __future__ import annotations

from typing import Final

#: platform (as a device declares it in ``auth``) -> its class for the online limits
PLATFORM_CLASS: Final[dict[str, str]] = {"android": "mobile", "ios": "mobile", "desktop": "desktop", "web": "web"}
