"""Artifacts for the embedded runner: input values read from files, outputs written to a folder.

No pickle: arrays use ``.npy``/``.npz`` with ``allow_pickle=False``; structured data JSON/YAML.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.document.model import JobDocument
from shared.document.references import resolve
from shared.execution.invoke import name_outputs
from shared.execution.result import to_jsonable
from shared.plugin_registry import PluginRegistry


def read_artifact_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if suffix in (".yaml", ".yml"):
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    return path.read_bytes()


def artifact_input_values(document: JobDocument, files: Mapping[str, Path]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Named outputs of each artifact input, and the problems (missing or unknown names)."""
    values: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, declared in document.artifact_inputs.items():
        path = files.get(name)
        if path is None:
            problems.append(f"artifact input {name!r} was not given: pass --artifact {name}=PATH")
            continue
        try:
            value = read_artifact_file(path)
            # As in Dioptra, an artifact with one output holds the whole value even when
            # that output is declared in a list; several outputs unpack it.
            names = declared.outputs.names
            values[name] = {names[0]: value} if len(names) == 1 else name_outputs(name, declared.outputs, value)
        except (OSError, ValueError) as error:
            problems.append(f"artifact input {name!r}: cannot read {path}: {error}")
    for name in files:
        if name not in document.artifact_inputs:
            problems.append(f"--artifact {name}=...: the document declares no artifact input {name!r}")
    return values, problems


def write_artifact_outputs(
    document: JobDocument,
    parameters: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    registry: PluginRegistry,
    directory: Path,
) -> dict[str, str]:
    """Serialise every artifact output with its task; returns name -> written file."""
    written: dict[str, str] = {}
    if not document.artifact_outputs:
        return written
    directory.mkdir(parents=True, exist_ok=True)
    for name, artifact in document.artifact_outputs.items():
        contents = resolve(artifact.contents, parameters, outputs)
        serializer = registry.load(artifact.task).function
        payload = serializer(contents, **resolve(artifact.args, parameters, outputs))
        written[name] = write_artifact_payload(directory, name, payload)
    return written


def write_artifact_payload(directory: Path, name: str, payload: Any) -> str:
    """Save what a serialiser returned: bytes as they are, an array as ``.npy``, else JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    if isinstance(payload, (bytes, bytearray)):
        target.write_bytes(bytes(payload))
    elif isinstance(payload, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, payload, allow_pickle=False)
        target = target.with_suffix(".npy")
        target.write_bytes(buffer.getvalue())
    else:
        target = target.with_suffix(".json")
        target.write_text(json.dumps(to_jsonable(payload), indent=2), encoding="utf-8")
    return str(target)
