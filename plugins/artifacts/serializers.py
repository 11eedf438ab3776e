"""Artifact-output tasks (``fn(contents, **args) -> bytes``) and their loaders (bytes -> value)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import task
from plugins.artifacts import codecs


@task(outputs="bytes")
def array_to_npy(contents: Any) -> bytes:
    """One array as ``.npy`` bytes (dtype and shape kept; object arrays are refused)."""
    return codecs.encode_npy(contents)


@task(outputs="array")
def npy_to_array(data: bytes) -> np.ndarray:
    return codecs.decode_npy(data)


@task(outputs="bytes")
def pytree_to_npz(contents: Any, compressed: bool = True) -> bytes:
    """A dict of arrays, a dataset or a whole model (any pytree) as ``.npz`` bytes."""
    return codecs.encode_npz(contents, compressed=bool(compressed))


@task(outputs="value")
def npz_to_pytree(data: bytes) -> Any:
    return codecs.decode_npz(data)


@task(outputs="bytes")
def table_to_csv(contents: dict[str, Any], delimiter: str = ",") -> bytes:
    """A table (dict of equal-length columns) as CSV text with a header row."""
    return codecs.encode_csv(contents, delimiter=delimiter)


@task(outputs="table")
def csv_to_table(data: bytes, delimiter: str = ",") -> dict[str, list[Any]]:
    """Columns typed per column (int, float, bool or str; empty cells are None)."""
    return codecs.decode_csv(data, delimiter=delimiter)


@task(outputs="bytes")
def value_to_json(contents: Any, indent: int | None = 2) -> bytes:
    """Tables, metrics or any pytree as JSON (arrays become nested lists)."""
    return codecs.encode_json(contents, indent=indent)


@task(outputs="value")
def json_to_value(data: bytes) -> Any:
    return codecs.decode_json(data)
