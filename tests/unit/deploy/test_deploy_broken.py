"""Deliberately broken copies of the real deployment files fail the checks, each with its code.

Every case copies deploy/ to a temporary folder, breaks one thing in one file and runs the part
of the check that reads that file (the whole check takes longer than a case needs).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy_check import DEPLOY_DIR, check_kubernetes, compose, dockerfile, guide, prometheus
from tests.support.deploy_check.problems import Problem

Edit = Callable[[Path], None]


def yaml_edit(relative: str, change: Callable[[list[Any]], None]) -> Edit:
    """Load every document of ``relative``, let ``change`` mutate them, write them back."""
    def edit(deploy: Path) -> None:
        path = deploy / relative
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        change(documents)
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return edit


def text_edit(relative: str, old: str, new: str) -> Edit:
    def edit(deploy: Path) -> None:
        path = deploy / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is no longer in {relative}: update this case"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return edit


def container(documents: list[Any], index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = documents[index]["spec"]["template"]["spec"]["containers"][0]
    return result


def service(name: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    return yaml_edit("compose.yaml", lambda d: change(d[0]["services"][name]))


def base() -> Callable[[Path], list[Problem]]:
    return lambda deploy: check_kubernetes(deploy / "k8s" / "base", deploy / "schemas")


def overlay(name: str) -> Callable[[Path], list[Problem]]:
    return lambda deploy: check_kubernetes(deploy / "k8s" / "overlays" / name, deploy / "schemas")


def compose_check() -> Callable[[Path], list[Problem]]:
    return lambda deploy: compose.check(deploy, deploy / "schemas")


K8S: list[tuple[str, Edit, str]] = [
    ("replicas-not-a-number", yaml_edit("k8s/base/planner.yaml", lambda d: d[0]["spec"].update(replicas="two")), "k8s.schema"),
    ("unknown-field", yaml_edit("k8s/base/planner.yaml", lambda d: d[0]["spec"].update(replica=2)), "k8s.schema"),
    ("container-without-image", yaml_edit("k8s/base/worker-cpu.yaml", lambda d: container(d).pop("image")), "k8s.image-missing"),
    ("scaledobject-without-target", yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[1]["spec"].pop("scaleTargetRef")), "k8s.schema"),
    ("scaledobject-metadata-not-a-string",
     yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[0]["spec"]["triggers"][0]["metadata"].update(threshold=4)), "k8s.schema"),
    ("gpu-without-gpu-limit",
     yaml_edit("k8s/base/worker-gpu.yaml", lambda d: container(d)["resources"]["limits"].pop("nvidia.com/gpu")), "k8s.gpu-limit"),
    ("grace-shorter-than-drain",
     yaml_edit("k8s/base/worker-cpu.yaml", lambda d: d[0]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=60)),
     "k8s.grace-period"),
    ("gpu-grace-shorter-than-its-own-drain",
     yaml_edit("k8s/base/worker-gpu.yaml", lambda d: d[0]["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=120)),
     "k8s.grace-period"),
    ("readiness-on-healthz",
     yaml_edit("k8s/base/planner.yaml", lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz")), "k8s.probe"),
    ("liveness-on-another-port",
     yaml_edit("k8s/base/worker-cpu.yaml", lambda d: container(d)["livenessProbe"]["httpGet"].update(port=8080)), "k8s.probe"),
    ("no-liveness-probe", yaml_edit("k8s/base/worker-gpu.yaml", lambda d: container(d).pop("livenessProbe")), "k8s.probe"),
    ("no-budget-for-gpu-workers", yaml_edit("k8s/base/disruption-budgets.yaml", lambda d: d.pop(2)), "k8s.pdb-missing"),
    ("url-as-plain-value",
     yaml_edit("k8s/base/worker-cpu.yaml", lambda d: container(d)["env"].append(
         {"name": "THEODOLITE_AMQP_URL", "value": "amqp://theodolite:secret@rabbitmq:5672/"})), "k8s.url-not-secret"),
    ("secret-values-committed",
     yaml_edit("k8s/base/settings.yaml", lambda d: d.append(
         {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "theodolite-urls"},
          "stringData": {"THEODOLITE_AMQP_URL": "amqp://a:b@c/", "THEODOLITE_MONGO_URL": "mongodb://a:b@c/"}})),
     "k8s.secret-committed"),
    ("unknown-secret",
     yaml_edit("k8s/base/planner.yaml", lambda d: container(d)["envFrom"].append({"secretRef": {"name": "nowhere"}})),
     "k8s.secret-unknown"),
    ("one-planner", yaml_edit("k8s/base/planner.yaml", lambda d: d[0]["spec"].update(replicas=1)), "k8s.planner-standby"),
    ("run-as-root",
     yaml_edit("k8s/base/planner.yaml", lambda d: d[0]["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False)),
     "k8s.root"),
    ("keda-target-sets-replicas", yaml_edit("k8s/base/worker-cpu.yaml", lambda d: d[0]["spec"].update(replicas=3)),
     "k8s.replicas-owned-by-keda"),
    ("scaledobject-targets-nothing",
     yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[0]["spec"]["scaleTargetRef"].update(name="worker-tpu")), "k8s.scale-target"),
    ("gpu-not-to-zero", yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[1]["spec"].update(minReplicaCount=1)),
     "k8s.gpu-scale-to-zero"),
    ("trigger-on-another-device",
     yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[1]["spec"]["triggers"][0]["metadata"].update(
         query='max(theodolite_ready_steps{device="cpu"})')), "k8s.scale-trigger"),
    ("trigger-on-an-unknown-metric",
     yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[0]["spec"]["triggers"][0]["metadata"].update(
         query='max(theodolite_ready_step{device="cpu"})')), "k8s.scale-trigger"),
    ("queue-trigger-on-another-queue",
     yaml_edit("k8s/base/autoscaling.yaml", lambda d: d[1]["spec"]["triggers"].append(
         {"type": "rabbitmq", "metadata": {"queueName": "theodolite.steps.cpu", "mode": "QueueLength", "value": "1"}})),
     "k8s.scale-trigger"),
    ("kustomize-key-outside-the-subset",
     yaml_edit("k8s/base/kustomization.yaml", lambda d: d[0].update(commonLabels={"team": "ml"})), "kustomize.unsupported"),
    ("missing-resource", yaml_edit("k8s/base/kustomization.yaml", lambda d: d[0]["resources"].append("gone.yaml")),
     "kustomize.missing"),
]

OVERLAYS: list[tuple[str, str, Edit, str]] = [
    ("patch-of-a-missing-path", "production",
     text_edit("k8s/overlays/production/kustomization.yaml", "/spec/maxReplicaCount", "/spec/maxReplicas"), "kustomize.patch"),
    ("strategic-merge-patch", "production",
     text_edit("k8s/overlays/production/kustomization.yaml", "- {op: replace, path: /spec/maxReplicaCount, value: 8}",
               "spec: {maxReplicaCount: 8}"), "kustomize.unsupported"),
    ("query-in-another-namespace", "dev",
     text_edit("k8s/overlays/dev/kustomization.yaml", 'device="gpu", namespace="theodolite-dev"',
               'device="gpu", namespace="theodolite"'), "k8s.scale-trigger"),
]

COMPOSE: list[tuple[str, Edit, str]] = [
    ("unknown-service-key", service("planner", lambda s: s.update(restrat="always")), "compose.schema"),
    ("wrong-type", service("worker-cpu", lambda s: s["deploy"].update(replicas="two")), "compose.schema"),
    ("guest-credentials",
     service("planner", lambda s: s["environment"].update(THEODOLITE_AMQP_URL="amqp://guest:guest@rabbitmq:5672/")),
     "compose.guest"),
    ("broker-without-default-user", service("rabbitmq", lambda s: s["environment"].clear()), "compose.guest"),
    ("password-in-the-file", service("mongo", lambda s: s["environment"].update(MONGO_INITDB_ROOT_PASSWORD="hunter2")),
     "compose.literal-credential"),
    ("password-with-a-default",
     text_edit("compose.yaml", "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD in deploy/.env}", "${RABBITMQ_PASSWORD:-guest}"),
     "compose.env-optional"),
    ("variable-not-in-the-env-template",
     text_edit("compose.yaml", "${MONGO_ROOT_USER:?", "${MONGO_ADMIN_USER:?"), "compose.env-undefined"),
    ("no-healthcheck", service("mongo", lambda s: s.pop("healthcheck")), "compose.healthcheck"),
    ("one-planner", service("planner", lambda s: s["deploy"].update(replicas=1)), "compose.planner-standby"),
    ("gpu-worker-without-a-gpu", service("worker-gpu", lambda s: s.pop("deploy")), "compose.gpu-reservation"),
    ("grace-shorter-than-drain", service("worker-cpu", lambda s: s.update(stop_grace_period="30s")), "compose.grace-period"),
    ("port-on-every-interface", service("rabbitmq", lambda s: s["ports"].append("15692:15692")), "compose.port-exposed"),
    ("no-env-file", service("worker-cpu", lambda s: s.pop("env_file")), "compose.env-file"),
    ("wrong-build-target", service("worker-gpu", lambda s: s["build"].update(target="worker-cpu")), "compose.build-target"),
    ("mongo-not-a-replica-set", service("mongo", lambda s: s.update(command=["mongod", "--bind_ip_all"])), "compose.mongo"),
    ("mongo-6", service("mongo", lambda s: s.update(image="mongo:6")), "compose.mongo"),
    ("no-prometheus-plugin", text_edit("rabbitmq/enabled_plugins", ",rabbitmq_prometheus", ""), "compose.rabbitmq"),
    ("worker-not-scraped",
     yaml_edit("prometheus/prometheus.yml", lambda d: d[0]["scrape_configs"].pop(1)), "compose.scrape"),
]

DOCKERFILE: list[tuple[str, Edit, str]] = [
    ("runs-as-root", text_edit("Dockerfile", "USER 10001:10001", "USER root"), "docker.root"),
    ("no-healthcheck", text_edit("Dockerfile", "HEALTHCHECK --interval", "# HEALTHCHECK --interval"), "docker.healthcheck"),
    ("gpu-without-cuda", text_edit("Dockerfile", " 'jax[cuda12]'", ""), "docker.install"),
    ("target-missing", text_edit("Dockerfile", "AS worker-gpu", "AS worker-cuda"), "docker.target-missing"),
    ("copied-folder-ignored", text_edit("Dockerfile.dockerignore", "!plugins/\n", ""), "docker.context"),
]

RULES: list[tuple[str, Edit, str]] = [
    ("alert-on-an-unknown-metric",
     text_edit("prometheus/alerts.yml", "max(theodolite_planner_writer_backlog)", "max(theodolite_writer_backlog)"),
     "prometheus.unknown-metric"),
    ("unbalanced-expression",
     text_edit("prometheus/alerts.yml", "(max(theodolite_planner_lease_held) or vector(0))", "(max(theodolite_planner_lease_held)"),
     "prometheus.expr"),
    ("unknown-function", text_edit("prometheus/alerts.yml", "increase(theodolite_messages_rejected_total",
                                   "increse(theodolite_messages_rejected_total"), "prometheus.expr"),
    ("no-severity", text_edit("prometheus/alerts.yml", "severity: critical", "priority: critical"), "prometheus.rules"),
    ("bad-duration", text_edit("prometheus/alerts.yml", "for: 2m", "for: 2 minutes"), "prometheus.rules"),
    ("duplicate-job", yaml_edit("prometheus/prometheus.yml",
                                lambda d: d[0]["scrape_configs"].append(dict(d[0]["scrape_configs"][0]))), "prometheus.config"),
]

GUIDE: list[tuple[str, Edit, str]] = [
    ("metric-undocumented", text_edit("README.md", "| `theodolite_planner_active_jobs` |", "| active jobs |"),
     "guide.metric-undocumented"),
]


def _cases() -> list[Any]:
    def checker(group: str, check: Callable[[Path], list[Problem]], cases: list[tuple[str, Edit, str]]) -> list[Any]:
        return [pytest.param(edit, check, code, id=f"{group}-{name}") for name, edit, code in cases]

    return [
        *checker("k8s", base(), K8S),
        *[pytest.param(edit, overlay(where), code, id=f"{where}-{name}") for name, where, edit, code in OVERLAYS],
        *checker("compose", compose_check(), COMPOSE),
        *checker("dockerfile", lambda deploy: dockerfile.check(deploy / "Dockerfile"), DOCKERFILE),
        *checker("prometheus", prometheus.check, RULES),
        *checker("guide", guide.check, GUIDE),
    ]


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """A copy of deploy/ at tmp/deploy (the Compose build context `..` is tmp)."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, copy)
    return copy


@pytest.mark.parametrize(("edit", "check", "code"), _cases())
def test_a_broken_file_fails_the_check(deploy: Path, edit: Edit, check: Callable[[Path], list[Problem]], code: str) -> None:
    assert check(deploy) == [], "the unbroken copy must pass first"
    edit(deploy)
    problems = check(deploy)
    assert code in {p.code for p in problems}, "\n".join(map(str, problems)) or "no problem found"
