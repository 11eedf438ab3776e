"""Gradient, norm and projection primitives shared by the attacks (helpers, not tasks).

Conventions follow ART: the loss gradient with respect to the input is normalised per
sample -- ``sign`` for the inf-norm, ``g / ||g||_p`` for p in {1, 2} -- so a step of
size ``eps`` has p-norm ``eps`` (before clipping to the data range). Untargeted attacks
ascend the loss of the reference label, targeted attacks descend the loss of the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

NORMS = ("inf", "1", "2")


def parse_norm(norm: Any) -> str:
    """Canonical norm name from ``inf``/``np.inf``/``"linf"``/1/``"l1"``/2/``"l2"``..."""
    text = str(norm).strip().lower().removeprefix("l")
    if text in {"inf", "infinity", "np.inf", ".inf"} or (isinstance(norm, float) and math.isinf(norm)):
        return "inf"
    if text in {"1", "1.0"}:
        return "1"
    if text in {"2", "2.0"}:
        return "2"
    raise ValueError(f"unsupported norm {norm!r}; use inf, 1 or 2")


def _sample_reduce(values: jax.Array, op: Callable[..., jax.Array]) -> jax.Array:
    axes = tuple(range(1, values.ndim))
    return op(values, axis=axes, keepdims=True)


def normalize_direction(grad: jax.Array, norm: str) -> jax.Array:
    """Per-sample steepest-ascent direction of unit ``norm`` (ART ``_apply_norm``).

    Unlike ART's ``g / (||g|| + 1e-7)``, each gradient is first rescaled by its largest
    entry, so the tiny float32 gradients of very confident predictions still give a
    direction of norm exactly 1; an all-zero gradient stays zero.
    """
    if norm == "inf":
        return jnp.sign(grad)
    if norm not in ("1", "2"):
        raise ValueError(f"unsupported norm {norm!r}")
    peak = _sample_reduce(jnp.abs(grad), jnp.max)
    scaled = grad / jnp.where(peak > 0, peak, 1.0)
    if norm == "1":
        size = _sample_reduce(jnp.abs(scaled), jnp.sum)
    else:
        size = jnp.sqrt(_sample_reduce(scaled * scaled, jnp.sum))
    return scaled / jnp.where(size > 0, size, 1.0)


def project(delta: jax.Array, eps: jax.Array | float, norm: str) -> jax.Array:
    """Bring each sample's perturbation back into its eps-ball (ART ``projection``).

    Inf-norm clips coordinates; the 1- and 2-norm rescale a too-long perturbation, which
    keeps it inside the ball (exact projection for p=2, ART's approximation for p=1).
    """
    if norm == "inf":
        return jnp.clip(delta, -eps, eps)
    if norm == "1":
        size = _sample_reduce(jnp.abs(delta), jnp.sum)
    elif norm == "2":
        size = jnp.sqrt(_sample_reduce(delta * delta, jnp.sum))
    else:
        raise ValueError(f"unsupported norm {norm!r}")
    return delta * jnp.minimum(1.0, eps / jnp.maximum(size, 1e-12))


def random_in_ball(
    key: jax.Array, shape: tuple[int, ...], eps: jax.Array | float, norm: str, dtype: Any
) -> jax.Array:
    """Uniform samples from the eps-ball of ``norm`` (one per leading index)."""
    n = shape[0]
    dim = math.prod(shape[1:])
    if norm == "inf":
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * eps
    k_dir, k_rad, k_sign = jax.random.split(key, 3)
    if norm == "2":
        direction = jax.random.normal(k_dir, (n, dim), dtype)
        direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
        radius = jax.random.uniform(k_rad, (n, 1), dtype) ** (1.0 / dim)
        return (direction * radius * eps).reshape(shape)
    if norm == "1":
        # (e_1..e_d) / (e_1 + .. + e_{d+1}) with e_i ~ Exp(1) is uniform in the simplex
        # interior; random signs make it uniform in the L1 ball.
        e = jax.random.exponential(k_dir, (n, dim + 1), dtype)
        magnitudes = e[:, :dim] / e.sum(axis=1, keepdims=True)
        signs = jax.random.rademacher(k_sign, (n, dim), dtype)
        return (magnitudes * signs * eps).reshape(shape)
    raise ValueError(f"unsupported norm {norm!r}")


def input_gradient(
    forward: Callable[..., jax.Array], params: Any, x: jax.Array, labels: jax.Array
) -> jax.Array:
    """d/dx of the summed per-sample cross-entropy: row i is sample i's own loss gradient."""

    def total_loss(inputs: jax.Array) -> jax.Array:
        log_probs = jax.nn.log_softmax(forward(params, inputs))
        return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    return jax.grad(total_loss)(x)


def attack_direction(
    forward: Callable[..., jax.Array],
    params: Any,
    x: jax.Array,
    labels: jax.Array,
    norm: str,
    targeted: bool = False,
) -> jax.Array:
    """Unit-norm direction that raises the loss of ``labels`` (lowers it when targeted)."""
    direction = normalize_direction(input_gradient(forward, params, x, labels), norm)
    return -direction if targeted else direction


def fgm_step(
    forward: Callable[..., jax.Array],
    params: Any,
    x: jax.Array,
    labels: jax.Array,
    eps: jax.Array | float,
    norm: str,
    clip_min: jax.Array | float = 0.0,
    clip_max: jax.Array | float = 1.0,
    targeted: bool = False,
) -> jax.Array:
    """One fast-gradient step of size ``eps``, clipped to the data range."""
    direction = attack_direction(forward, params, x, labels, norm, targeted)
    return jnp.clip(x + eps * direction, clip_min, clip_max)
