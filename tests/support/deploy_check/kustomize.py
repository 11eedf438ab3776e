"""The part of Kustomize that deploy/k8s uses, rendered in Python (no kustomize binary here).

Supported, with kustomize's meaning: ``resources`` (files, and directories holding a
kustomization), ``namespace`` (set on every namespaced object), ``images`` (``newName``,
``newTag``, ``digest``) and ``patches`` whose body is an RFC 6902 JSON patch (inline ``patch``
or ``path``) with a ``target`` of ``kind``/``name``. Any other key, or a strategic-merge patch, is
a problem rather than silently ignored: keep the kustomizations within this subset, or extend it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploy_check.problems import Problem, load_yaml, load_yaml_all, shown

SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                            "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
                            "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                            "ClusterTriggerAuthentication"})


@dataclass
class Manifest:
    """One rendered object and the file it came from."""

    obj: dict[str, Any]
    source: str

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", "?"))

    @property
    def name(self) -> str:
        metadata = self.obj.get("metadata")
        return str(metadata.get("name", "?")) if isinstance(metadata, dict) else "?"

    @property
    def label(self) -> str:
        return f"{self.source}: {self.kind}/{self.name}"


def render(directory: Path, problems: list[Problem], _seen: tuple[Path, ...] = ()) -> list[Manifest]:
    """The objects ``directory``'s kustomization.yaml produces; problems are appended."""
    directory = directory.resolve()
    path = directory / "kustomization.yaml"
    where = shown(path)
    if directory in _seen:
        problems.append(Problem("kustomize.cycle", where, "includes itself"))
        return []
    if not path.is_file():
        problems.append(Problem("kustomize.missing", shown(directory), "no kustomization.yaml"))
        return []
    spec = load_yaml(path, problems, "kustomize.read")
    if not isinstance(spec, dict):
        problems.append(Problem("kustomize.read", where, "not a mapping"))
        return []
    for key in sorted(set(spec) - SUPPORTED_KEYS):
        problems.append(Problem("kustomize.unsupported", where, f"{key!r} is outside the supported subset"))
    manifests: list[Manifest] = []
    for entry in spec.get("resources") or []:
        target = directory / str(entry)
        if target.is_dir():
            manifests += render(target, problems, (*_seen, directory))
        elif target.is_file():
            for obj in load_yaml_all(target, problems, "kustomize.read"):
                if isinstance(obj, dict):
                    manifests.append(Manifest(obj, shown(target)))
                else:
                    problems.append(Problem("kustomize.read", shown(target), "a document that is not an object"))
        else:
            problems.append(Problem("kustomize.missing", where, f"resource {entry!r} does not exist"))
    for patch in spec.get("patches") or []:
        _patch(manifests, patch, directory, where, problems)
    if spec.get("namespace"):
        for manifest in manifests:
            if manifest.kind not in CLUSTER_SCOPED:
                manifest.obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images") or []:
        _set_image(manifests, image)
    return manifests


def _patch(manifests: list[Manifest], patch: dict[str, Any], directory: Path, where: str,
           problems: list[Problem]) -> None:
    target = patch.get("target") or {}
    if "path" in patch:
        body = load_yaml(directory / patch["path"], problems, "kustomize.read")
    else:
        try:
            body = yaml.safe_load(patch.get("patch", ""))
        except yaml.YAMLError as error:
            problems.append(Problem("kustomize.patch", where, f"unreadable patch: {error}"))
            return
    if not isinstance(body, list):
        problems.append(Problem("kustomize.unsupported", where,
                                "only JSON 6902 patches (a list of operations) are supported"))
        return
    matched = [m for m in manifests
               if all(str(getattr(m, key)) == str(target[key]) for key in ("kind", "name") if key in target)]
    if not matched:
        problems.append(Problem("kustomize.patch", where, f"the target {target} matches no object"))
    for manifest in matched:
        for operation in body:
            failure = apply_operation(manifest.obj, operation)
            if failure:
                problems.append(Problem("kustomize.patch", where, f"{manifest.kind}/{manifest.name}: {failure}"))


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not a JSON pointer")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def apply_operation(document: Any, operation: dict[str, Any]) -> str | None:
    """Apply one RFC 6902 ``add``/``remove``/``replace``/``test`` operation in place; the error, if any."""
    op = operation.get("op")
    try:
        *parents, last = _pointer(str(operation.get("path", "")))
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = copy.deepcopy(operation.get("value"))
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, value)
            elif op == "remove":
                del node[index]
            elif op == "replace":
                node[index] = value
            elif op == "test":
                return None if node[index] == value else f"test failed at {operation['path']}"
            else:
                return f"unsupported op {op!r}"
        elif isinstance(node, dict):
            if op in ("remove", "replace", "test") and last not in node:
                return f"{operation['path']} does not exist"
            if op in ("add", "replace"):
                node[last] = value
            elif op == "remove":
                del node[last]
            elif op == "test":
                return None if node[last] == value else f"test failed at {operation['path']}"
            else:
                return f"unsupported op {op!r}"
        else:
            return f"{operation['path']}: the parent is not an object or a list"
    except (KeyError, IndexError, ValueError, TypeError) as error:
        return f"{operation.get('path')!r}: {error!r}"
    return None


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object (Deployment, StatefulSet, Job, CronJob, Pod, ...)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    result = template.get("spec") if isinstance(template, dict) else None
    return result if isinstance(result, dict) else None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj) or {}
    return [c for key in ("initContainers", "containers") for c in spec.get(key) or [] if isinstance(c, dict)]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` as (name, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest or None


def _set_image(manifests: list[Manifest], image: dict[str, Any]) -> None:
    for manifest in manifests:
        for container in containers(manifest.obj):
            name, tag, digest = split_image(str(container.get("image", "")))
            if name != image.get("name"):
                continue
            new_name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new_name}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new_name}:{image['newTag']}"
            else:
                container["image"] = new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
