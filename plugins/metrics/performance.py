"""Classification metrics on labels: accuracy, per-class accuracy, confusion matrix.

``y_true`` / ``y_pred`` may be class arrays, score/logit arrays (argmax is taken) or, for
``y_true``, a dataset dict whose ``y`` is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import task
from plugins.metrics.labels import paired


def _num_classes(true: np.ndarray, pred: np.ndarray, num_classes: int | None) -> int:
    if num_classes is not None:
        return int(num_classes)
    return int(max(true.max(initial=-1), pred.max(initial=-1)) + 1)


@task(outputs={"accuracy": "number"})
def classification_accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of matching labels (0.0 for empty inputs)."""
    true, pred = paired(y_true, y_pred)
    return float((true == pred).mean()) if len(true) else 0.0


@task(outputs="confusion")
def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Int64 counts; row = true class, column = predicted class."""
    true, pred = paired(y_true, y_pred)
    k = _num_classes(true, pred, num_classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


@task(outputs="table")
def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int | None = None) -> dict[str, list[Any]]:
    """Table with columns class, support, correct, accuracy (None where support is 0)."""
    true, pred = paired(y_true, y_pred)
    k = _num_classes(true, pred, num_classes)
    support = np.bincount(true, minlength=k)[:k]
    correct = np.bincount(true[true == pred], minlength=k)[:k]
    return {
        "class": list(range(k)),
        "support": [int(s) for s in support],
        "correct": [int(c) for c in correct],
        "accuracy": [float(c / s) if s else None for c, s in zip(correct, support)],
    }
