"""Fast Gradient Method (FGSM for the inf-norm), following ART's ``FastGradientMethod``."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import TaskContext, task


@task(outputs="adversarial", device="gpu")
def fgm_attack(
    model: dict[str, Any],
    data: Any,
    eps: float = 0.3,
    eps_step: float = 0.1,
    norm: Any = "inf",
    targeted: bool = False,
    target: Any = None,
    minimal: bool = False,
    use_labels: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 512,
    ctx: TaskContext | None = None,
) -> Any:
    """Adversarial examples ``clip(x + eps * direction, clip_min, clip_max)``.

    ``direction`` is the per-sample normalised input gradient of the loss (sign for
    ``norm=inf``). ``minimal=True`` does ART's search instead: for each sample, try
    ``k * eps_step`` for k = 1, 2, ... while ``k * eps_step <= eps`` (the direction stays
    the one computed at ``x``) and keep the first that succeeds -- a changed prediction,
    or the target class when targeted; samples that never succeed get the largest step.
    ``data`` is a dataset dict (labels are kept in the output) or a bare array.
    """
    import jax.numpy as jnp

    from plugins.attacks.common import (
        adversarial_dataset,
        jitted_direction,
        reference_labels,
        target_labels,
    )
    from plugins.attacks.gradients import parse_norm
    from plugins.data.arrays import features_of
    from plugins.models.networks import logits_numpy, to_device

    norm = parse_norm(norm)
    x = features_of(data).astype(np.float32)
    labels = target_labels(model, data, x, target) if targeted else reference_labels(model, data, x, use_labels)
    targets = labels if targeted else None
    direction_fn = jitted_direction(str(model["kind"]), norm, bool(targeted))
    params = to_device(model["params"])
    chunks = [
        np.asarray(
            direction_fn(params, jnp.asarray(x[i : i + batch_size]), jnp.asarray(labels[i : i + batch_size]))
        )
        for i in range(0, len(x), int(batch_size))
    ]
    direction = np.concatenate(chunks) if chunks else np.zeros_like(x)

    def perturb(size: float) -> np.ndarray:
        return np.clip(x + np.float32(size) * direction, clip_min, clip_max).astype(np.float32)

    from plugins.models.reporting import log_attack

    if not minimal:
        x_adv = perturb(eps)
        log_attack(ctx, model, data, x_adv, labels, targets)
        return adversarial_dataset(data, x_adv, targets)

    steps = int(np.floor(float(eps) / float(eps_step) + 1e-6)) if eps_step > 0 else 0
    x_adv = x.copy()
    active = np.arange(len(x))
    for k in range(1, steps + 1):
        if active.size == 0:
            break
        candidate = perturb(k * float(eps_step))
        x_adv[active] = candidate[active]
        # predict on the full array: a fixed shape compiles once
        predictions = np.argmax(logits_numpy(model, x_adv), axis=1)[active]
        still_failing = predictions != labels[active] if targeted else predictions == labels[active]
        active = active[still_failing]
    log_attack(ctx, model, data, x_adv, labels, targets)
    return adversarial_dataset(data, x_adv, targets)
