"""Seed handling in the style of Dioptra's ``random.rng`` / ``random.sample`` plugins.

An "rng" here is the raw data of a JAX PRNG key: a ``uint32`` numpy array of shape (2,).
It is a plain array, so it travels between steps (and through MongoDB) like any value.

Values are immutable, so drawing from the same rng twice would give the same number.
Each draw therefore takes an ``index`` (a salt): the key is first folded with it
(``jax.random.fold_in(key, index)``), which yields statistically independent keys for
different indices. Dioptra's FGM flow draws two seeds from one rng; give them different
indices. The folded key then seeds a numpy Philox generator (internal only, never
returned), which supports arbitrary integer ranges exactly and is stable across versions.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from plugins import task

MAX_SEED = 2**31 - 1


def key_from_rng(rng: object) -> Any:
    """A raw JAX key (uint32[2]) from an rng (any integer array of two words) or an int seed."""
    import jax

    if isinstance(rng, (int, np.integer)):
        return jax.random.PRNGKey(int(rng))
    arr = np.asarray(rng)
    valid = arr.shape == (2,) and np.issubdtype(arr.dtype, np.integer)
    if not valid or arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max:
        raise ValueError(f"an rng must be two uint32 words (from init_rng), got {arr.dtype}{arr.shape}")
    return jax.numpy.asarray(arr.astype(np.uint32))


def numpy_generator(rng: object, index: int = 0) -> np.random.Generator:
    """An internal numpy generator derived deterministically from ``rng`` and ``index``."""
    import jax

    folded = np.asarray(jax.random.fold_in(key_from_rng(rng), int(index)), dtype=np.uint32)
    return np.random.Generator(np.random.Philox(key=[int(folded[0]), int(folded[1])]))


@task(outputs=[{"seed": "integer"}, "rng"])
def init_rng(seed: int = -1) -> tuple[int, np.ndarray]:
    """Create an rng from ``seed``; a negative seed picks a fresh one (as Dioptra does).

    Returns the seed actually used, so a run with ``seed=-1`` can be reproduced.
    """
    import jax

    seed = int(seed)
    if seed < 0:
        seed = secrets.randbelow(MAX_SEED)
    return seed, np.asarray(jax.random.PRNGKey(seed), dtype=np.uint32)


@task(outputs="rng")
def split_rng(rng: np.ndarray, index: int = 0) -> np.ndarray:
    """A new independent rng derived from ``rng`` (``fold_in(key, index)``)."""
    import jax

    return np.asarray(jax.random.fold_in(key_from_rng(rng), int(index)), dtype=np.uint32)


@task(outputs={"value": "integer"})
def draw_random_integer(rng: np.ndarray, low: int = 0, high: int = MAX_SEED, index: int = 0) -> int:
    """One integer in ``[low, high)``; draws with different ``index`` are independent."""
    if high <= low:
        raise ValueError(f"high ({high}) must be greater than low ({low})")
    return int(numpy_generator(rng, index).integers(int(low), int(high)))


@task(outputs="values")
def draw_random_integers(
    rng: np.ndarray, low: int = 0, high: int = MAX_SEED, size: int = 1, index: int = 0
) -> np.ndarray:
    """``size`` integers in ``[low, high)`` as an int64 array."""
    if high <= low:
        raise ValueError(f"high ({high}) must be greater than low ({low})")
    return numpy_generator(rng, index).integers(int(low), int(high), size=int(size), dtype=np.int64)
