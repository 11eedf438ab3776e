"""Training task for any model kind in :mod:`plugins.models.networks`."""

from __future__ import annotations

from typing import Any

from plugins import task


@task(outputs="model", device="gpu")
def train_classifier(
    model: dict[str, Any],
    dataset: dict[str, Any],
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 0.003,
    weight_decay: float = 0.0,
) -> dict[str, Any]:
    """Adam on softmax cross-entropy; returns the model with new params and a loss history.

    Batches are reshuffled every epoch from ``seed``; same inputs give identical params.
    """
    from plugins.data.arrays import features_of, labels_of
    from plugins.models.training import fit_params

    params, history = fit_params(
        model,
        features_of(dataset),
        labels_of(dataset),
        seed=int(seed),
        epochs=int(epochs),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
    )
    return {**model, "params": params, "history": {"loss": history}}
