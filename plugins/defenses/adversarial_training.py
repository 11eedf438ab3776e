"""Adversarial training (Goodfellow et al. 2015; ART's ``AdversarialTrainer`` with FGM)."""

from __future__ import annotations

from typing import Any

from plugins import TaskContext, task


@task(outputs="model", device="gpu")
def adversarial_train_classifier(
    model: dict[str, Any],
    dataset: dict[str, Any],
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 0.003,
    eps: float = 0.1,
    norm: Any = "inf",
    ratio: float = 0.5,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    ctx: TaskContext | None = None,
) -> dict[str, Any]:
    """Train on a mix of clean and FGM examples.

    Every batch is attacked with FGM (true labels, budget ``eps`` in ``norm``) against
    the *current* parameters, and the loss is ``(1 - ratio) * clean + ratio *
    adversarial`` -- the expectation of ART's scheme of replacing a ``ratio`` share of
    each batch by adversarial examples, without its sampling noise.
    """
    from plugins.attacks.gradients import parse_norm
    from plugins.data.arrays import features_of, labels_of
    from plugins.models.reporting import log_training
    from plugins.models.training import fit_params

    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError("ratio must be in [0, 1]")
    x, y = features_of(dataset), labels_of(dataset)
    params, history = fit_params(
        model,
        x,
        y,
        seed=int(seed),
        epochs=int(epochs),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
        adversarial_norm=parse_norm(norm),
        adversarial_eps=float(eps),
        adversarial_ratio=float(ratio),
        clip_values=(float(clip_min), float(clip_max)),
    )
    trained = {
        **model,
        "params": params,
        "history": {"loss": history, "adversarial": {"eps": float(eps), "ratio": float(ratio)}},
    }
    log_training(ctx, trained, history, x, y)
    return trained
