"""Fault-injection tests against real RabbitMQ and a Mongo-wire server (see tests/support)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.distributed import amqp_url, mongo_url, settings  # noqa: F401
from tests.support.fault_table import fault_table, pytest_terminal_summary  # noqa: F401
