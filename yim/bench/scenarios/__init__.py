"""The bench scenarios by name, one module each with a
:class:`~yim.bench.scenarios.base.Scenario` subclass."""

from __future__ import annotations

from yim.bench.scenarios.base import Scenario
from yim.bench.scenarios.fanout_sweep import FanoutSweepScenario
from yim.bench.scenarios.group import GroupScenario
from yim.bench.scenarios.idle import IdleScenario
from yim.bench.scenarios.mixed import MixedScenario
from yim.bench.scenarios.pairs import PairsScenario
from yim.bench.scenarios.sync import SyncScenario

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s for s in (PairsScenario, GroupScenario, MixedScenario, FanoutSweepScenario, IdleScenario, SyncScenario)
}

__all__ = ["SCENARIOS", "Scenario"]
