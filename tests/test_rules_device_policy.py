"""The multi-device policy as one pure rule (yim/protocol/platforms.py ``signed_out``), the
one the gateway's Hub, the workers' hub and the cluster bus all call: a table, no node."""

from __future__ import annotations

import pytest

from yim.protocol.platforms import signed_out

LIMITS = {"mobile": 1, "desktop": 0, "web": 2}


@pytest.mark.parametrize(
    ("newest", "others", "max_per_user", "out"),
    [
        # alone: nothing to sign out
        ("android", [], 4, []),
        # one mobile at a time, whichever of the others is older by far
        ("ios", [("p", "android", 5)], 4, [("p", "signed in on another mobile device")]),
        # the registering device's own age does not matter: it is never among the others
        ("android", [("t", "ios", 99)], 4, [("t", "signed in on another mobile device")]),
        # a class without a limit: only the per-user limit counts
        ("desktop", [("a", "desktop", 1), ("b", "desktop", 2)], 4, []),
        # web allows two: the oldest of three goes
        ("web", [("w2", "web", 2), ("w1", "web", 1)], 4, [("w1", "signed in on another web device")]),
        # beyond the per-user limit, the oldest of the rest, after the class's own
        (
            "ios",
            [("d1", "desktop", 1), ("p", "android", 2), ("d2", "desktop", 3)],
            2,
            [("p", "signed in on another mobile device"), ("d1", "too many devices online")],
        ),
        # a platform of no known class has no class limit
        ("tv", [("x", "tv", 1)], 4, []),
    ],
)
def test_signed_out_by_the_rules_of_the_multi_device_policy(
    newest: str, others: list[tuple[str, str, int]], max_per_user: int, out: list[tuple[str, str]]
) -> None:
    got = signed_out(newest, others, LIMITS, max_per_user, platform=lambda d: d[1], made=lambda d: d[2])
    assert [(d[0], reason) for d, reason in got] == out
