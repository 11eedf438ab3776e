"""The metrics port must be reachable from outside a container: services bind 127.0.0.1 by
default (shared/settings.py), so every deployment says 0.0.0.0."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_the_default_binds_loopback_so_deployments_must_say_otherwise() -> None:
    assert Settings.model_fields["metrics_host"].default == "127.0.0.1"


def test_every_deployment_binds_the_metrics_port_on_all_interfaces() -> None:
    assert "THEODOLITE_METRICS_HOST=0.0.0.0" in (DEPLOY / "Dockerfile").read_text()
    assert "THEODOLITE_METRICS_HOST=0.0.0.0" in (DEPLOY / "theodolite.env").read_text().splitlines()
    settings = yaml.safe_load((DEPLOY / "k8s" / "base" / "settings.yaml").read_text())
    assert settings["data"]["THEODOLITE_METRICS_HOST"] == "0.0.0.0"
