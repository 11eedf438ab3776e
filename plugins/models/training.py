"""Mini-batch Adam training compiled into one ``lax.scan`` (helper, not a task).

The whole schedule (every epoch's shuffled batch indices) is drawn up front from the
seed, padded so every batch has the same size, and scanned in a single compiled call:
two CPU cores train the digits MLP in a couple of seconds. An optional adversarial mix
(used by the adversarial-training defence) perturbs each batch with FGM against the
current parameters before the update.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plugins.models.networks import FORWARDS, Params, cross_entropy, to_device, to_numpy

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def batch_schedule(n: int, batch_size: int, epochs: int, seed: int) -> np.ndarray:
    """(epochs * steps, batch_size) row indices: a fresh permutation per epoch, wrapped to fill."""
    batch_size = max(1, min(int(batch_size), n))
    steps = -(-n // batch_size)
    generator = np.random.default_rng(int(seed))
    rows = []
    for _ in range(int(epochs)):
        perm = generator.permutation(n)
        perm = np.concatenate([perm, perm[: steps * batch_size - n]])
        rows.append(perm.reshape(steps, batch_size))
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, batch_size), np.int32)


@lru_cache(maxsize=32)
def build_trainer(kind: str, adversarial_norm: str | None = None) -> Callable[..., Any]:
    """A jitted ``run(params, x, y, idx, lr, wd, adv_eps, adv_ratio, clip_lo, clip_hi)``."""
    forward = FORWARDS[kind]

    def loss_fn(params: Params, xb: jax.Array, yb: jax.Array, adv_eps, adv_ratio, lo, hi) -> jax.Array:
        clean = cross_entropy(forward(params, xb), yb)
        if adversarial_norm is None:
            return clean
        from plugins.attacks.gradients import fgm_step

        x_adv = jax.lax.stop_gradient(fgm_step(forward, params, xb, yb, adv_eps, adversarial_norm, lo, hi))
        adversarial = cross_entropy(forward(params, x_adv), yb)
        return (1.0 - adv_ratio) * clean + adv_ratio * adversarial

    grad_fn = jax.value_and_grad(loss_fn)

    def run(params, x, y, idx, lr, wd, adv_eps, adv_ratio, lo, hi):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

        def step(carry, batch_idx):
            params, m, v, t = carry
            loss, grads = grad_fn(params, x[batch_idx], y[batch_idx], adv_eps, adv_ratio, lo, hi)
            t = t + 1
            m = jax.tree_util.tree_map(lambda a, g: BETA1 * a + (1 - BETA1) * g, m, grads)
            v = jax.tree_util.tree_map(lambda a, g: BETA2 * a + (1 - BETA2) * g * g, v, grads)
            c1, c2 = 1 - BETA1**t, 1 - BETA2**t

            def update(p, a, b):
                return p - lr * ((a / c1) / (jnp.sqrt(b / c2) + ADAM_EPS) + wd * p)

            params = jax.tree_util.tree_map(update, params, m, v)
            return (params, m, v, t), loss

        (params, _, _, _), losses = jax.lax.scan(step, (params, zeros, zeros, jnp.float32(0)), idx)
        return params, losses

    return jax.jit(run)


def fit_params(
    model: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    adversarial_norm: str | None = None,
    adversarial_eps: float = 0.0,
    adversarial_ratio: float = 0.0,
    clip_values: tuple[float, float] = (0.0, 1.0),
) -> tuple[Params, list[float]]:
    """Train ``model["params"]``; returns new numpy params and the mean loss per epoch."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int32)
    idx = batch_schedule(len(x), batch_size, epochs, seed)
    if len(idx) == 0:
        return model["params"], []
    run = build_trainer(str(model["kind"]), adversarial_norm)
    params, losses = run(
        to_device(model["params"]),
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(idx),
        jnp.float32(learning_rate),
        jnp.float32(weight_decay),
        jnp.float32(adversarial_eps),
        jnp.float32(adversarial_ratio),
        jnp.float32(clip_values[0]),
        jnp.float32(clip_values[1]),
    )
    history = np.asarray(losses).reshape(int(epochs), -1).mean(axis=1)
    return to_numpy(params), [float(v) for v in history]
