"""What a theodolite container in a rendered manifest is: its role, device and environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.deploy_check.kustomize import Manifest, containers

# Secrets the operator creates (deploy/README.md tells how): never in the repository.
EXTERNAL_SECRETS: dict[str, frozenset[str]] = {
    "theodolite-urls": frozenset({"THEODOLITE_AMQP_URL", "THEODOLITE_MONGO_URL"}),
}


@dataclass(frozen=True)
class EnvValue:
    """Where a variable comes from: ``literal``, ``configmap``, ``secret`` or ``other``
    (a field or resource reference); ``ref`` names the ConfigMap or Secret."""

    source: str
    value: str | None = None
    ref: str | None = None


def role(container: dict[str, Any]) -> tuple[str, str | None] | None:
    """("planner", None), ("worker", DEVICE), or None for a container that is not theodolite."""
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    if argv and argv[0].endswith("theodolite"):
        argv = argv[1:]
    if not argv:
        return None
    if argv[0] == "planner":
        return "planner", None
    if argv[0] == "worker":
        return "worker", device_of(argv)
    return None


def device_of(argv: list[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg == "--device" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return None


def theodolite_containers(manifest: Manifest) -> list[tuple[dict[str, Any], tuple[str, str | None]]]:
    found = []
    for container in containers(manifest.obj):
        kind = role(container)
        if kind is not None:
            found.append((container, kind))
    return found


def by_name(manifests: list[Manifest], kind: str) -> dict[str, dict[str, Any]]:
    return {m.name: m.obj for m in manifests if m.kind == kind}


def environment(container: dict[str, Any], manifests: list[Manifest]) -> dict[str, EnvValue]:
    """The container's variables as Kubernetes sets them: ``envFrom`` in order, then ``env``."""
    config_maps = by_name(manifests, "ConfigMap")
    secrets = by_name(manifests, "Secret")
    values: dict[str, EnvValue] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        if "configMapRef" in source:
            name = source["configMapRef"].get("name")
            for key, value in ((config_maps.get(name) or {}).get("data") or {}).items():
                values[prefix + key] = EnvValue("configmap", str(value), name)
        if "secretRef" in source:
            name = source["secretRef"].get("name")
            secret = secrets.get(name) or {}
            keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {}) | EXTERNAL_SECRETS.get(name, set())
            for key in keys:
                values[prefix + key] = EnvValue("secret", None, name)
    for variable in container.get("env") or []:
        name = str(variable.get("name"))
        source = variable.get("valueFrom") or {}
        if "value" in variable:
            values[name] = EnvValue("literal", str(variable["value"]))
        elif "secretKeyRef" in source:
            values[name] = EnvValue("secret", None, source["secretKeyRef"].get("name"))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = (config_maps.get(ref.get("name")) or {}).get("data") or {}
            values[name] = EnvValue("configmap", data.get(ref.get("key")), ref.get("name"))
        else:
            values[name] = EnvValue("other")
    return values


def port_number(container: dict[str, Any], port: Any) -> int | None:
    """A probe's ``port`` (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared.get("containerPort"))
    return int(port) if isinstance(port, str) and port.isdigit() else None


def selector_matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    """A label selector (``matchLabels`` and ``matchExpressions``) against ``labels``."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if ((operator == "In" and labels.get(key) not in values)
                or (operator == "NotIn" and present and labels.get(key) in values)
                or (operator == "Exists" and not present) or (operator == "DoesNotExist" and present)):
            return False
    return True
