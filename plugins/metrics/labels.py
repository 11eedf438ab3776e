"""Turn the many shapes a label can take into a class vector (helper, not a task)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def class_vector(values: Any) -> np.ndarray:
    """Int64 classes from a dataset dict (its ``y``), a class array, or (n, k) scores."""
    if isinstance(values, Mapping):
        values = values["y"]
    array = np.asarray(values)
    if array.ndim == 2:
        array = np.argmax(array, axis=1)
    if array.ndim != 1:
        raise ValueError(f"expected class labels of shape (n,) or scores (n, k), got {array.shape}")
    return array.astype(np.int64)


def paired(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true, pred = class_vector(y_true), class_vector(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {len(true)} labels but y_pred has {len(pred)}")
    return true, pred
