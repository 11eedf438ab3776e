"""Assemble the final metrics mapping of a job (the ``metrics`` output of its last step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins import task


@task(outputs="by_eps")
def accuracy_by_eps(eps: list[float], accuracies: list[float]) -> dict[str, float]:
    """``{str(eps): accuracy}`` for a sweep (string keys keep the mapping storable)."""
    if len(eps) != len(accuracies):
        raise ValueError(f"{len(eps)} eps values but {len(accuracies)} accuracies")
    return {repr(float(e)): float(a) for e, a in zip(eps, accuracies)}


@task(outputs="metrics")
def report_metrics(
    clean_accuracy: float,
    adversarial_accuracy: float | Mapping[str, float],
    distances: Mapping[str, float] | None = None,
    defended_clean_accuracy: float | None = None,
    defended_adversarial_accuracy: float | None = None,
) -> dict[str, Any]:
    """One flat metrics mapping.

    ``adversarial_accuracy`` is a number, or a mapping (e.g. eps -> accuracy from
    :func:`accuracy_by_eps`) kept as a nested mapping. ``distances`` is a distance
    summary, merged in with a ``distance_`` prefix. With a defence,
    ``recovered_accuracy`` = defended adversarial accuracy - undefended adversarial accuracy.
    """
    metrics: dict[str, Any] = {"clean_accuracy": float(clean_accuracy)}
    if isinstance(adversarial_accuracy, Mapping):
        metrics["adversarial_accuracy"] = {str(k): float(v) for k, v in adversarial_accuracy.items()}
    else:
        metrics["adversarial_accuracy"] = float(adversarial_accuracy)
    for name, value in (distances or {}).items():
        metrics[f"distance_{name}"] = float(value)
    if defended_clean_accuracy is not None:
        metrics["defended_clean_accuracy"] = float(defended_clean_accuracy)
    if defended_adversarial_accuracy is not None:
        metrics["defended_adversarial_accuracy"] = float(defended_adversarial_accuracy)
        if not isinstance(adversarial_accuracy, Mapping):
            metrics["recovered_accuracy"] = float(defended_adversarial_accuracy) - float(adversarial_accuracy)
    return metrics
