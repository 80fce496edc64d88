"""The bench scenarios by name, one module each with a
:class:`~yimbench.scenarios.base.Scenario` subclass."""

from __future__ import annotations

from yimbench.scenarios.base import Scenario
from yimbench.scenarios.fanout_sweep import FanoutSweepScenario
from yimbench.scenarios.group import GroupScenario
from yimbench.scenarios.idle import IdleScenario
from yimbench.scenarios.mixed import MixedScenario
from yimbench.scenarios.pairs import PairsScenario
from yimbench.scenarios.react import ReactScenario
from yimbench.scenarios.sync import SyncScenario

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (
        PairsScenario,
        GroupScenario,
        MixedScenario,
        FanoutSweepScenario,
        IdleScenario,
        SyncScenario,
        ReactScenario,
    )
}

__all__ = ["SCENARIOS", "Scenario"]
