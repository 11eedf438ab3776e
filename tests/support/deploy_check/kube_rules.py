"""What the schemas cannot say about a rendered theodolite install on Kubernetes.

Per Deployment: images set, non-root, probes on /healthz and /readyz at the metrics port,
a grace period longer than the drain, URLs from Secrets, gpu workers holding an NVIDIA GPU, a
PodDisruptionBudget. Per install: a planner, a standby, a Deployment per device, no committed
Secret values, KEDA ScaledObjects that target a Deployment and scale on the right metric.
"""

from __future__ import annotations

import re
from typing import Any

from shared.settings import Settings
from tests.support.deploy_check import promql
from tests.support.deploy_check.kustomize import Manifest, pod_spec
from tests.support.deploy_check.metrics import known_series
from tests.support.deploy_check.pods import (
    EXTERNAL_SECRETS,
    EnvValue,
    by_name,
    environment,
    port_number,
    selector_matches,
    theodolite_containers,
)
from tests.support.deploy_check.problems import Problem

URL_VARIABLES = ("THEODOLITE_AMQP_URL", "THEODOLITE_MONGO_URL")
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
READY_METRIC = "theodolite_ready_steps"
REQUIRED_DEVICES = ("cpu", "gpu")


def default_drain_timeout_s() -> float:
    return float(Settings.model_fields["drain_timeout_s"].default)


def check(manifests: list[Manifest]) -> list[Problem]:
    problems: list[Problem] = []
    deployments = [m for m in manifests if m.kind == "Deployment"]
    budgets = [m for m in manifests if m.kind == "PodDisruptionBudget"]
    planners = 0
    devices: set[str] = set()
    for deployment in deployments:
        for container, (kind, device) in theodolite_containers(deployment):
            problems += _container(deployment, container, device, manifests)
            if kind == "planner":
                replicas = (deployment.obj.get("spec") or {}).get("replicas", 1)
                planners += replicas if isinstance(replicas, int) else 0
            elif device:
                devices.add(device)
        problems += _pod(deployment, budgets)
    if planners < 2:
        problems.append(Problem("k8s.planner-standby", "install",
                                f"{planners} planner replica(s); run 2 so that one stands by"))
    for device in REQUIRED_DEVICES:
        if device not in devices:
            problems.append(Problem("k8s.device-missing", "install", f"no worker Deployment for device {device!r}"))
    problems += _secrets(manifests)
    for scaled in (m for m in manifests if m.kind == "ScaledObject"):
        problems += _scaled_object(scaled, manifests)
    return problems


def _container(deployment: Manifest, container: dict[str, Any], device: str | None,
               manifests: list[Manifest]) -> list[Problem]:
    where = f"{deployment.label}: container {container.get('name')}"
    problems: list[Problem] = []
    if not container.get("image"):
        problems.append(Problem("k8s.image-missing", where, "no image"))
    env = environment(container, manifests)
    port_value = (env.get("THEODOLITE_METRICS_PORT") or EnvValue("unset")).value
    metrics_port = int(port_value) if port_value and port_value.isdigit() else 0
    if not metrics_port:
        problems.append(Problem("k8s.metrics-port", where, "THEODOLITE_METRICS_PORT is not set to a port"))
    annotations = ((deployment.obj.get("spec", {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if "prometheus.io/port" in annotations and str(annotations["prometheus.io/port"]) != str(metrics_port):
        problems.append(Problem("k8s.metrics-port", where,
                                f"prometheus.io/port {annotations['prometheus.io/port']} is not the metrics port {metrics_port}"))
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        spec = container.get(probe)
        if spec is None and probe == "startupProbe":
            continue
        http = (spec or {}).get("httpGet") or {}
        if http.get("path") != path or port_number(container, http.get("port")) != metrics_port:
            problems.append(Problem("k8s.probe", f"{where}: {probe}",
                                    f"must be an httpGet of {path} on the metrics port {metrics_port or '?'}"))
    drain = env.get("THEODOLITE_DRAIN_TIMEOUT_S")
    drain_s = float(drain.value) if drain and drain.value else default_drain_timeout_s()
    grace = (pod_spec(deployment.obj) or {}).get("terminationGracePeriodSeconds", 30)
    if not isinstance(grace, int) or grace <= drain_s:
        problems.append(Problem("k8s.grace-period", deployment.label,
                                f"terminationGracePeriodSeconds {grace} must exceed the drain timeout of {drain_s:g} s"))
    for variable in URL_VARIABLES:
        value = env.get(variable)
        if value is None or value.source != "secret":
            problems.append(Problem("k8s.url-not-secret", where,
                                    f"{variable} must come from a Secret, not {value.source if value else 'nowhere'}"))
    for name, value in env.items():
        if value.value and CREDENTIALS_IN_URL.search(value.value):
            problems.append(Problem("k8s.credentials-in-plain", where, f"{name} carries credentials outside a Secret"))
    if device == "gpu":
        limit = ((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
        if not str(limit or "").isdigit() or int(str(limit)) < 1:
            problems.append(Problem("k8s.gpu-limit", where, "a gpu worker needs resources.limits nvidia.com/gpu >= 1"))
    return problems


def _pod(deployment: Manifest, budgets: list[Manifest]) -> list[Problem]:
    problems: list[Problem] = []
    spec = pod_spec(deployment.obj) or {}
    security = spec.get("securityContext") or {}
    for container in spec.get("containers") or []:
        own = container.get("securityContext") or {}
        if not own.get("runAsNonRoot", security.get("runAsNonRoot")) or own.get("runAsUser", security.get("runAsUser")) == 0:
            problems.append(Problem("k8s.root", f"{deployment.label}: container {container.get('name')}",
                                    "must run with runAsNonRoot: true"))
    labels = ((deployment.obj.get("spec", {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    namespace = deployment.obj.get("metadata", {}).get("namespace")
    if not any(selector_matches(b.obj.get("spec", {}).get("selector") or {}, labels)
               and b.obj.get("metadata", {}).get("namespace") == namespace for b in budgets):
        problems.append(Problem("k8s.pdb-missing", deployment.label, "no PodDisruptionBudget selects its pods"))
    return problems


def _secrets(manifests: list[Manifest]) -> list[Problem]:
    problems: list[Problem] = []
    rendered = by_name(manifests, "Secret")
    for name, secret in rendered.items():
        if secret.get("data") or secret.get("stringData"):
            problems.append(Problem("k8s.secret-committed", f"Secret/{name}",
                                    "secret values are in the repository; create the Secret in the cluster instead"))
    for manifest in manifests:
        for container, _ in theodolite_containers(manifest):
            refs = [s["secretRef"].get("name") for s in container.get("envFrom") or [] if "secretRef" in s]
            refs += [((v.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") for v in container.get("env") or []]
            for ref in filter(None, refs):
                if ref not in rendered and ref not in EXTERNAL_SECRETS:
                    problems.append(Problem("k8s.secret-unknown", manifest.label,
                                            f"Secret {ref!r} is neither rendered nor one the guide tells to create"))
    return problems


def _scaled_object(scaled: Manifest, manifests: list[Manifest]) -> list[Problem]:
    spec = scaled.obj.get("spec") or {}
    target = spec.get("scaleTargetRef") or {}
    namespace = scaled.obj.get("metadata", {}).get("namespace")
    deployment = next((m for m in manifests if m.kind == target.get("kind", "Deployment") and m.name == target.get("name")
                       and m.obj.get("metadata", {}).get("namespace") == namespace), None)
    if deployment is None:
        return [Problem("k8s.scale-target", scaled.label, f"scaleTargetRef {target.get('name')!r} is no Deployment here")]
    problems: list[Problem] = []
    if "replicas" in (deployment.obj.get("spec") or {}):
        problems.append(Problem("k8s.replicas-owned-by-keda", deployment.label,
                                "sets spec.replicas although a ScaledObject scales it: each apply would reset KEDA's count"))
    devices = {device for _, (_, device) in theodolite_containers(deployment)}
    device = next(iter(devices), None)
    if device == "gpu" and spec.get("minReplicaCount", 0) != 0:
        problems.append(Problem("k8s.gpu-scale-to-zero", scaled.label, "gpu workers should scale to zero (minReplicaCount 0)"))
    env = next((environment(c, manifests) for c, _ in theodolite_containers(deployment)), {})
    prefix = (env.get("THEODOLITE_NAMESPACE") or EnvValue("configmap", "theodolite")).value
    for index, trigger in enumerate(spec.get("triggers") or []):
        where = f"{scaled.label}: triggers[{index}]"
        metadata = trigger.get("metadata") or {}
        if trigger.get("type") == "prometheus":
            problems += _prometheus_trigger(where, str(metadata.get("query", "")), device, namespace)
        elif trigger.get("type") == "rabbitmq" and metadata.get("queueName") != f"{prefix}.steps.{device}":
            problems.append(Problem("k8s.scale-trigger", where,
                                    f"queueName {metadata.get('queueName')!r} is not the device queue {prefix}.steps.{device}"))
    return problems


def _prometheus_trigger(where: str, query: str, device: str | None, namespace: str | None) -> list[Problem]:
    scan = promql.scan(query)
    problems = [Problem("k8s.scale-trigger", where, f"query: {error}") for error in scan.errors]
    for series in sorted(scan.series - known_series()):
        problems.append(Problem("k8s.scale-trigger", where, f"query names {series!r}, which theodolite does not export"))
    selectors = promql.matchers(query, READY_METRIC)
    if not selectors:
        problems.append(Problem("k8s.scale-trigger", where, f"query does not select {READY_METRIC}{{device=...}}"))
    for matcher in selectors:
        if matcher.get("device") != ("=", device):
            problems.append(Problem("k8s.scale-trigger", where, f"query must select device=\"{device}\", the target's device"))
        if namespace and "namespace" in matcher and matcher["namespace"] != ("=", namespace):
            problems.append(Problem("k8s.scale-trigger", where,
                                    f"query selects namespace {matcher['namespace'][1]!r}, the objects are in {namespace!r}"))
    return problems
