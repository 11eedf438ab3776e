"""Label and batching helpers shared by the attack tasks (not tasks)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jax
import numpy as np

from plugins.attacks.gradients import attack_direction
from plugins.models.networks import FORWARDS, logits_numpy


def reference_labels(model: dict[str, Any], data: Any, x: np.ndarray, use_labels: bool) -> np.ndarray:
    """Labels an untargeted attack moves away from.

    As in ART (and Dioptra's FGM flow, which calls ``generate(x)`` without ``y``), the
    model's own predictions are used by default, which avoids label leaking;
    ``use_labels=True`` uses the dataset's true labels instead.
    """
    if use_labels:
        if not isinstance(data, Mapping) or "y" not in data:
            raise ValueError("use_labels=True needs a dataset dict with a 'y' column")
        return np.asarray(data["y"]).astype(np.int32)
    return np.argmax(logits_numpy(model, x), axis=1).astype(np.int32)


def target_labels(model: dict[str, Any], data: Any, x: np.ndarray, target: Any) -> np.ndarray:
    """Targets for a targeted attack: an int class for all samples, ``"next"`` for
    ``(label + 1) % num_classes`` (true labels if present, else predictions), or one
    class per sample."""
    num_classes = int(model["config"]["num_classes"])
    n = len(x)
    if target is None:
        raise ValueError("a targeted attack needs 'target' (class, 'next', or per-sample classes)")
    if isinstance(target, str):
        if target != "next":
            raise ValueError(f"unknown target {target!r}; use a class, 'next' or an array")
        if isinstance(data, Mapping) and "y" in data:
            base = np.asarray(data["y"]).astype(np.int32)
        else:
            base = np.argmax(logits_numpy(model, x), axis=1)
        return ((base + 1) % num_classes).astype(np.int32)
    targets = np.asarray(target).astype(np.int32)
    if targets.ndim == 0:
        targets = np.full(n, int(targets), dtype=np.int32)
    if targets.shape != (n,):
        raise ValueError(f"target has shape {targets.shape}, expected ({n},)")
    return targets


@lru_cache(maxsize=64)
def jitted_direction(kind: str, norm: str, targeted: bool) -> Any:
    forward = FORWARDS[kind]
    return jax.jit(lambda params, x, labels: attack_direction(forward, params, x, labels, norm, targeted))


def adversarial_dataset(data: Any, x_adv: np.ndarray, targets: np.ndarray | None) -> Any:
    """The attack's output: the input dataset with ``x`` replaced (labels kept), plus a
    ``target`` column for targeted attacks; a bare array when the input was an array."""
    if not isinstance(data, Mapping):
        return x_adv
    out = {**{k: np.asarray(v) for k, v in data.items()}, "x": x_adv}
    if targets is not None:
        out["target"] = targets
    return out
