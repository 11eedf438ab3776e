"""Training task for any model kind in :mod:`plugins.models.networks`."""

from __future__ import annotations

from typing import Any

from plugins import TaskContext, task


@task(outputs="model", device="gpu")
def train_classifier(
    model: dict[str, Any],
    dataset: dict[str, Any],
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 0.003,
    weight_decay: float = 0.0,
    ctx: TaskContext | None = None,
) -> dict[str, Any]:
    """Adam on softmax cross-entropy; returns the model with new params and a loss history.

    Batches are reshuffled every epoch from ``seed``; same inputs give identical params. Logs
    ``loss`` per epoch and ``train_accuracy`` through the task context.
    """
    from plugins.data.arrays import features_of, labels_of
    from plugins.models.reporting import log_training
    from plugins.models.training import fit_params

    x, y = features_of(dataset), labels_of(dataset)
    params, history = fit_params(
        model,
        x,
        y,
        seed=int(seed),
        epochs=int(epochs),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
    )
    trained = {**model, "params": params, "history": {"loss": history}}
    log_training(ctx, trained, history, x, y)
    return trained
