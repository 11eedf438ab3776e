"""The services of deploy/compose.yaml: what each must be for a working, observable cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.deploy_check import dockerfile, prometheus
from tests.support.deploy_check.compose_model import duration_s, environment_of, mounts, role
from tests.support.deploy_check.kube_rules import default_drain_timeout_s
from tests.support.deploy_check.problems import Problem

LOOPBACK = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})


def check(compose: dict[str, Any], deploy_dir: Path, where: str) -> list[Problem]:
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    problems: list[Problem] = []
    planners = 0
    devices: set[str] = set()
    healthy: set[str] = set()
    for name, service in services.items():
        at = f"{where}: services.{name}"
        if _healthcheck(service, deploy_dir):
            healthy.add(name)
        else:
            problems.append(Problem("compose.healthcheck", at, "no health check (its own or its image's)"))
        for published in service.get("ports") or []:
            if not _on_loopback(published):
                problems.append(Problem("compose.port-exposed", at, f"port {published!r} is published beyond loopback"))
        kind = role(service)
        if kind is None:
            continue
        problems += _theodolite(name, service, kind, deploy_dir, at)
        if kind[0] == "planner":
            replicas = (service.get("deploy") or {}).get("replicas", 1)
            planners += replicas if isinstance(replicas, int) else 1
        elif kind[1]:
            devices.add(kind[1])
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other, condition in (depends.items() if isinstance(depends, dict) else []):
            if condition.get("condition") == "service_healthy" and other not in healthy:
                problems.append(Problem("compose.healthcheck", f"{where}: services.{name}.depends_on",
                                        f"waits for {other} to be healthy, which has no health check"))
    if planners < 2:
        problems.append(Problem("compose.planner-standby", where, f"{planners} planner(s); run 2 so that one stands by"))
    for device in ("cpu", "gpu"):
        if device not in devices:
            problems.append(Problem("compose.device-missing", where, f"no worker for device {device!r}"))
    problems += _infrastructure(services, deploy_dir, where)
    problems += prometheus.check_compose_scraping(services, deploy_dir, where)
    return problems


def _healthcheck(service: dict[str, Any], deploy_dir: Path) -> bool:
    own = service.get("healthcheck")
    if own is not None:
        return not own.get("disable") and bool(own.get("test")) and own.get("test") != ["NONE"]
    build = service.get("build")
    if isinstance(build, dict):
        path = deploy_dir / str(build.get("context", ".")) / str(build.get("dockerfile", "Dockerfile"))
        return dockerfile.healthcheck_of(path, build.get("target")) is not None
    return False


def _on_loopback(published: Any) -> bool:
    if not isinstance(published, str):
        return False  # a bare number or the long syntax: every interface
    parts = published.split("/")[0].rsplit(":", 2)
    return len(parts) == 3 and parts[0] in LOOPBACK


def _theodolite(name: str, service: dict[str, Any], kind: tuple[str, str | None], deploy_dir: Path,
                at: str) -> list[Problem]:
    problems: list[Problem] = []
    files = service.get("env_file")
    if not files:
        problems.append(Problem("compose.env-file", at, "no env_file with the THEODOLITE_* settings"))
    for file in [files] if isinstance(files, str) else files or []:
        if not (deploy_dir / file).is_file():
            problems.append(Problem("compose.env-file", at, f"env_file {file!r} does not exist"))
    environment = environment_of(service, deploy_dir)
    port = environment.get("THEODOLITE_METRICS_PORT", "")
    if not port.isdigit() or int(port) == 0:
        problems.append(Problem("compose.metrics-port", at, "THEODOLITE_METRICS_PORT is not set to a port"))
    drain_text = environment.get("THEODOLITE_DRAIN_TIMEOUT_S")
    drain = float(drain_text) if drain_text else default_drain_timeout_s()
    grace = duration_s(str(service.get("stop_grace_period", "10s")))
    if grace is None or grace <= drain:
        problems.append(Problem("compose.grace-period", at,
                                f"stop_grace_period {service.get('stop_grace_period', '10s (default)')} "
                                f"must exceed the drain timeout of {drain:g} s"))
    build: dict[str, Any] = service["build"] if isinstance(service.get("build"), dict) else {}
    wanted = "planner" if kind[0] == "planner" else f"worker-{kind[1]}"
    if build.get("target") != wanted:
        problems.append(Problem("compose.build-target", at, f"builds target {build.get('target')!r}, not {wanted!r}"))
    if kind == ("worker", "gpu"):
        devices = ((((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {})
                   .get("devices") or [])
        if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
            problems.append(Problem("compose.gpu-reservation", at, "reserves no NVIDIA GPU (deploy.resources.reservations.devices)"))
    elif kind[0] == "worker" and ("container_name" in service or service.get("ports")):
        problems.append(Problem("compose.not-scalable", at, "container_name or published ports prevent --scale"))
    return problems


def _infrastructure(services: dict[str, dict[str, Any]], deploy_dir: Path, where: str) -> list[Problem]:
    problems: list[Problem] = []
    mongo = [(n, s) for n, s in services.items() if re.match(r"mongo:(7|8)(\D|$)", str(s.get("image", "")))]
    if not mongo:
        problems.append(Problem("compose.mongo", where, "no MongoDB 7 or 8 service"))
    for name, service in mongo:
        command = service.get("command")
        argv = command.split() if isinstance(command, str) else [str(c) for c in command or []]
        if "--replSet" not in argv:
            problems.append(Problem("compose.mongo", f"{where}: services.{name}", "not started as a replica set (--replSet)"))
        if not any(target == "/data/db" and source and not source.startswith((".", "/")) for source, target in mounts(service)):
            problems.append(Problem("compose.mongo", f"{where}: services.{name}", "/data/db is not on a named volume"))
    rabbit = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("rabbitmq:")]
    if not rabbit:
        problems.append(Problem("compose.rabbitmq", where, "no RabbitMQ service"))
    for name, service in rabbit:
        at = f"{where}: services.{name}"
        if "management" not in str(service.get("image")):
            problems.append(Problem("compose.rabbitmq", at, "not a -management image"))
        plugins = [deploy_dir / s for s, t in mounts(service) if t == "/etc/rabbitmq/enabled_plugins"]
        text = plugins[0].read_text(encoding="utf-8") if plugins and plugins[0].is_file() else ""
        for plugin in ("rabbitmq_management", "rabbitmq_prometheus"):
            if plugin not in text:
                problems.append(Problem("compose.rabbitmq", at, f"{plugin} is not in a mounted enabled_plugins file"))
    return problems
