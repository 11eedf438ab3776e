"""Binding run-time parameter values (``-p name=value``) to a document's parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from shared.document.issues import Issue, error, warning
from shared.document.model import JobDocument
from shared.document.types import TypeRegistry, compatible, infer_type


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"n=3"`` -> ``("n", 3)``: the value is read as YAML (``3``, ``0.5``, ``true``, ``[1, 2]``)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


def bind_parameters(
    document: JobDocument,
    given: Mapping[str, Any],
    registry: TypeRegistry | None = None,
    *,
    require_all: bool = True,
) -> tuple[dict[str, Any], list[Issue]]:
    """Defaults filled in, given values checked; every missing parameter reported at once."""
    values: dict[str, Any] = {}
    issues: list[Issue] = []
    for name, parameter in document.parameters.items():
        path = ("parameters", name)
        if name in given:
            value = given[name]
            declared = registry.types.get(parameter.type) if registry is not None and parameter.type else None
            if declared is not None and not compatible(infer_type(value), declared):
                issues.append(error("parameters.value-type", path, f"value {value!r} given for {name!r} is not of its declared type {parameter.type}", key=True))
                continue
            values[name] = value
        elif parameter.has_default:
            values[name] = parameter.default
        elif require_all:
            issues.append(error("parameters.missing", path, f"parameter {name!r} has no default and was not given: pass -p {name}=VALUE", key=True))
        else:
            issues.append(warning("parameters.missing", path, f"parameter {name!r} has no default: it must be given at run time (-p {name}=VALUE)", key=True))
    for name in given:
        if name not in document.parameters:
            issues.append(warning("parameters.unknown", ("parameters",), f"parameter {name!r} was given but the document does not declare it; ignored"))
    return values, issues
