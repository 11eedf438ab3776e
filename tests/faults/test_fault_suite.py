"""The fault suite: every scenario of tests/support/fault_suite.py, run several times.

Each scenario runs ``THEODOLITE_FAULT_RUNS`` times (default 3) with its fault at a point drawn
from a seeded RNG (``THEODOLITE_FAULT_SEED``; the seed is printed with the table), each run on
a fresh cluster: planner and workers as separate processes, real RabbitMQ, a Mongo-wire
server. After each run the common invariants are checked straight from MongoDB and RabbitMQ
(every job terminal, every succeeded step's result present, no step recorded twice, no
message left in the queues, no service dead that was not killed on purpose), then the
scenario's own expectations. The table (scenario, runs, faults injected, jobs completed,
results lost, duplicated, recovery time) is printed at the end of the session and written as
markdown to ``THEODOLITE_FAULT_TABLE`` when set. See docs/fault-suite.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fault_suite
from tests.support.fault_scenarios import selected_scenarios
from tests.support.fault_suite import Scenario
from tests.support.fault_table import Table

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]

SCENARIOS = selected_scenarios()
RUNS = fault_suite.configured_runs()


def _budget(scenario: Scenario) -> float:
    """pytest-timeout for one scenario: every run at its worst, plus start and stop."""
    return RUNS * (scenario.timeout_s + 45) + 60


@pytest.mark.parametrize("scenario", [pytest.param(s, id=type(s).__name__, marks=pytest.mark.timeout(_budget(s)))
                                      for s in SCENARIOS])
def test_fault_scenario(scenario: Scenario, amqp_url: str, mongo_url: str, tmp_path: Path, fault_table: Table) -> None:
    row = fault_suite.run_scenario(scenario, amqp_url, mongo_url, tmp_path, runs=RUNS)
    fault_table.add(row)
    assert row.passed, row.report()
