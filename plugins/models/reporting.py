"""What the built-in training and attack tasks report through their task context: the loss per
epoch, accuracies, and an attack's success rate (``theodolite status``, ``monitor``, the
dashboard's charts and ``run --json``'s ``"metrics"`` show them).

Training runs every epoch in one compiled loop, so the per-epoch losses are logged when it
returns, each with its epoch as the metric's ``step``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plugins import TaskContext


def log_training(ctx: TaskContext | None, model: dict[str, Any], losses: Sequence[float], x: np.ndarray, y: np.ndarray) -> None:
    """``loss`` per epoch, then ``train_accuracy`` of the trained model."""
    if ctx is None:
        return
    for epoch, loss in enumerate(losses):
        if np.isfinite(loss):
            ctx.log_metric("loss", float(loss), step=epoch)
    if len(x):
        ctx.log_metric("train_accuracy", accuracy(model, x, y), step=max(len(losses) - 1, 0))


def log_attack(ctx: TaskContext | None, model: dict[str, Any], data: Any, x_adv: np.ndarray, reference: np.ndarray,
               targets: np.ndarray | None) -> None:
    """``success_rate`` (predictions moved off the reference labels, or onto the targets) and,
    for a labelled dataset, ``adversarial_accuracy``."""
    if ctx is None or not len(x_adv):
        return
    from plugins.models.networks import logits_numpy

    predicted = np.argmax(logits_numpy(model, x_adv), axis=1)
    success = predicted == targets if targets is not None else predicted != reference
    ctx.log_metric("success_rate", float(np.mean(success)))
    if isinstance(data, Mapping) and "y" in data:
        ctx.log_metric("adversarial_accuracy", float(np.mean(predicted == np.asarray(data["y"]))))


def accuracy(model: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    from plugins.models.networks import logits_numpy

    return float(np.mean(np.argmax(logits_numpy(model, np.asarray(x, dtype=np.float32)), axis=1) == np.asarray(y)))
