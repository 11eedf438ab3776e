"""Inference tasks: logits, class predictions and a clean evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import task


@task(outputs="logits", device="gpu")
def predict_logits(model: dict[str, Any], data: Any) -> np.ndarray:
    """Float32 logits (n, num_classes) for a dataset dict or a bare feature array."""
    from plugins.data.arrays import features_of
    from plugins.models.networks import logits_numpy

    return logits_numpy(model, features_of(data))


@task(outputs="predictions", device="gpu")
def predict_classes(model: dict[str, Any], data: Any) -> np.ndarray:
    """Int32 class predictions (argmax of the logits)."""
    from plugins.data.arrays import features_of
    from plugins.models.networks import logits_numpy

    return np.argmax(logits_numpy(model, features_of(data)), axis=1).astype(np.int32)


@task(outputs=[{"accuracy": "number"}, {"loss": "number"}, "predictions"], device="gpu")
def evaluate_classifier(model: dict[str, Any], dataset: dict[str, Any]) -> tuple[float, float, np.ndarray]:
    """Accuracy and mean cross-entropy on a labelled dataset, plus the predictions."""
    from plugins.data.arrays import features_of, labels_of
    from plugins.models.networks import logits_numpy

    logits = logits_numpy(model, features_of(dataset)).astype(np.float64)
    labels = labels_of(dataset)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else 0.0
    predictions = np.argmax(logits, axis=1).astype(np.int32)
    accuracy = float((predictions == labels).mean()) if len(labels) else 0.0
    return accuracy, loss, predictions
