"""Each rendered object against its schema: Kubernetes' own kinds with the schemas the
``kubernetes-validate`` package ships (strict: unknown fields are errors), KEDA's against the CRD
schema in deploy/schemas/keda. Everything offline."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from tests.support.deploy_check.kustomize import Manifest
from tests.support.deploy_check.problems import Problem, json_path

KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobject_v1alpha1.json"}


@cache
def _crd_validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _crd_problems(manifest: Manifest, schema: Path) -> Iterable[Problem]:
    errors = sorted(_crd_validator(schema).iter_errors(manifest.obj), key=lambda e: list(e.absolute_path))
    for error in errors:
        yield Problem("k8s.schema", f"{manifest.label}: {json_path(error.absolute_path)}",
                      f"{error.message} (CRD schema {schema.name})")


def check(manifests: list[Manifest], schemas_dir: Path) -> list[Problem]:
    """One problem per object that its schema refuses (the first error, for Kubernetes' kinds)."""
    problems: list[Problem] = []
    for manifest in manifests:
        key = (str(manifest.obj.get("apiVersion")), manifest.kind)
        if key in CRD_SCHEMAS:
            problems += _crd_problems(manifest, (schemas_dir / CRD_SCHEMAS[key]).resolve())
            continue
        if not isinstance(manifest.obj.get("apiVersion"), str) or "kind" not in manifest.obj:
            problems.append(Problem("k8s.schema", manifest.label, "no apiVersion or kind"))
            continue
        try:
            kubernetes_validate.validate(manifest.obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(Problem("k8s.schema", f"{manifest.label}: {json_path(error.path)}",
                                    f"{_short(error.message)} (Kubernetes {error.version})"))
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(Problem("k8s.unknown-kind", manifest.label, error.message))
    return problems


def _short(message: Any) -> str:
    text = str(message)
    return text if len(text) <= 300 else text[:300] + "..."
