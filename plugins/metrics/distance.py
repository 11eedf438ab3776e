"""Perturbation distances between clean and adversarial inputs (Dioptra's distance metrics).

Each sample is flattened and compared with its adversarial counterpart:
``linf`` = max |d|, ``l2`` = sqrt(sum d^2), ``l1`` = sum |d| with ``d = adversarial - clean``,
and ``cosine`` = cosine similarity of the two inputs (1.0 when either is all zeros).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from plugins import task
from plugins.data.arrays import features_of

DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "linf": lambda a, b: np.abs(b - a).max(axis=1, initial=0.0),
    "l2": lambda a, b: np.sqrt(((b - a) ** 2).sum(axis=1)),
    "l1": lambda a, b: np.abs(b - a).sum(axis=1),
    "cosine": lambda a, b: _cosine(a, b),
}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)


@task(outputs=["distances", "summary"])
def distance_metrics(
    clean: Any, adversarial: Any, metrics: list[str] | None = None
) -> tuple[dict[str, list[Any]], dict[str, float]]:
    """Per-sample distances as a table (``sample`` + one column per metric) and a
    summary with ``<metric>_mean`` and ``<metric>_max`` (computed in float64)."""
    names = list(metrics) if metrics is not None else ["linf", "l2", "l1"]
    unknown = [name for name in names if name not in DISTANCES]
    if unknown:
        raise ValueError(f"unknown distance metrics {unknown}; known: {sorted(DISTANCES)}")
    a = features_of(clean).astype(np.float64)
    b = features_of(adversarial).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"clean {a.shape} and adversarial {b.shape} inputs differ in shape")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    table: dict[str, list[Any]] = {"sample": list(range(len(a)))}
    summary: dict[str, float] = {}
    for name in names:
        values = DISTANCES[name](a, b)
        table[name] = [float(v) for v in values]
        summary[f"{name}_mean"] = float(values.mean()) if len(values) else 0.0
        summary[f"{name}_max"] = float(values.max()) if len(values) else 0.0
    return table, summary
