"""Which port each service serves its metrics on: `--metrics-port`, THEODOLITE_METRICS_PORT, and
a free one per service in a LocalCluster with ``metrics=True`` (as ``theodolite up`` runs it)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from services.cluster import METRICS_PORT_OPTION, Child, LocalCluster
from services.distributed_cli import planner, worker
from shared.settings import Settings


class _Process:
    pid = 1

    def poll(self) -> None:
        return None


def _child(args: list[str]) -> Child:
    return Child("worker-cpu-0", _Process(), args=args, role="worker")  # type: ignore[arg-type]


def test_a_metrics_cluster_gives_each_service_a_port_of_its_own() -> None:
    cluster = LocalCluster(Settings(), {"cpu": 2}, start_mongo=False, metrics=True)
    ports = {int(cluster._metrics_args()[1]) for _ in range(5)}
    assert len(ports) == 5 and all(port > 0 for port in ports)
    child = _child(["worker", "--device", "cpu", METRICS_PORT_OPTION, "41234"])
    assert child.metrics_port == 41234 and child.base_url == "http://127.0.0.1:41234"


def test_without_metrics_a_cluster_turns_the_endpoints_off_whatever_the_environment_says() -> None:
    cluster = LocalCluster(Settings(metrics_port=9100), {"cpu": 2}, start_mongo=False)
    assert cluster._metrics_args() == [METRICS_PORT_OPTION, "0"], "two services of one machine cannot share port 9100"
    child = _child(["worker", "--device", "cpu", METRICS_PORT_OPTION, "0"])
    assert child.metrics_port == 0 and child.base_url is None
    assert _child(["planner"]).base_url is None


@pytest.mark.parametrize("command", [planner, worker])
def test_planner_and_worker_take_a_metrics_port(command: object) -> None:
    result = CliRunner().invoke(command, ["--help"])  # type: ignore[arg-type]
    assert result.exit_code == 0 and "--metrics-port" in result.output


def test_the_metrics_port_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEODOLITE_METRICS_PORT", "9100")
    monkeypatch.setenv("THEODOLITE_METRICS_HOST", "0.0.0.0")
    settings = Settings()
    assert (settings.metrics_port, settings.metrics_host) == (9100, "0.0.0.0")
    assert Settings(metrics_port=0).metrics_port == 0
    with pytest.raises(ValueError, match="metrics_port"):
        Settings(metrics_port=70000)
