"""Projected Gradient Descent, following ART's ``ProjectedGradientDescent`` (one restart)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from plugins import TaskContext, task


@lru_cache(maxsize=64)
def _pgd_runner(kind: str, norm: str, targeted: bool, random_init: bool) -> Any:
    import jax
    import jax.numpy as jnp

    from plugins.attacks.gradients import attack_direction, project, random_in_ball
    from plugins.models.networks import FORWARDS

    forward = FORWARDS[kind]

    def run(params, x, labels, key, eps, eps_step, max_iter, lo, hi):
        if random_init:
            x_adv = jnp.clip(x + random_in_ball(key, x.shape, eps, norm, x.dtype), lo, hi)
        else:
            x_adv = x

        def body(_, current):
            stepped = current + eps_step * attack_direction(forward, params, current, labels, norm, targeted)
            return jnp.clip(x + project(stepped - x, eps, norm), lo, hi)

        return jax.lax.fori_loop(0, max_iter, body, x_adv)

    return jax.jit(run)


@task(outputs="adversarial", device="gpu")
def pgd_attack(
    model: dict[str, Any],
    data: Any,
    eps: float = 0.3,
    eps_step: float = 0.1,
    max_iter: int = 40,
    norm: Any = "inf",
    targeted: bool = False,
    target: Any = None,
    random_init: bool = True,
    seed: int = 0,
    use_labels: bool = False,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    batch_size: int = 512,
    ctx: TaskContext | None = None,
) -> Any:
    """Iterated gradient steps of ``eps_step``, each projected back into the eps-ball
    around ``x`` and clipped to the data range; starts from a uniform random point of the
    ball when ``random_init`` (drawn from ``seed``, per batch)."""
    import jax
    import jax.numpy as jnp

    from plugins.attacks.common import adversarial_dataset, reference_labels, target_labels
    from plugins.attacks.gradients import parse_norm
    from plugins.data.arrays import features_of
    from plugins.models.networks import to_device

    norm = parse_norm(norm)
    x = features_of(data).astype(np.float32)
    labels = target_labels(model, data, x, target) if targeted else reference_labels(model, data, x, use_labels)
    targets = labels if targeted else None
    run = _pgd_runner(str(model["kind"]), norm, bool(targeted), bool(random_init))
    params = to_device(model["params"])
    base_key = jax.random.PRNGKey(int(seed))
    chunks = []
    for batch_number, start in enumerate(range(0, len(x), int(batch_size))):
        stop = start + int(batch_size)
        chunks.append(
            np.asarray(
                run(
                    params,
                    jnp.asarray(x[start:stop]),
                    jnp.asarray(labels[start:stop]),
                    jax.random.fold_in(base_key, batch_number),
                    jnp.float32(eps),
                    jnp.float32(eps_step),
                    int(max_iter),
                    jnp.float32(clip_min),
                    jnp.float32(clip_max),
                )
            )
        )
    from plugins.models.reporting import log_attack

    x_adv = (np.concatenate(chunks) if chunks else x.copy()).astype(np.float32)
    log_attack(ctx, model, data, x_adv, labels, targets)
    return adversarial_dataset(data, x_adv, targets)
