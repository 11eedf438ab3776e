"""Helpers (not tasks) shared by the plugin families to accept datasets or bare arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def features_of(data: Any) -> np.ndarray:
    """The feature array of a dataset dict, or ``data`` itself when it is an array."""
    if isinstance(data, Mapping):
        return np.asarray(data["x"])
    return np.asarray(data)


def labels_of(data: Any) -> np.ndarray:
    """The label array of a dataset dict, or ``data`` itself as integer labels."""
    if isinstance(data, Mapping):
        return np.asarray(data["y"]).astype(np.int32)
    return np.asarray(data).astype(np.int32)


def with_features(data: Any, x: np.ndarray) -> Any:
    """``data`` with its features replaced: a new dict for a dataset, else ``x`` itself."""
    if isinstance(data, Mapping):
        return {**data, "x": x}
    return x


def dataset_length(dataset: Mapping[str, Any]) -> int:
    lengths = {len(np.asarray(v)) for v in dataset.values()}
    if len(lengths) != 1:
        raise ValueError(f"dataset columns have different lengths: {sorted(lengths)}")
    return lengths.pop()


def subset(dataset: Mapping[str, Any], indices: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(value)[indices] for key, value in dataset.items()}
