"""Forward passes, loss and parameter initialisation (helpers, not tasks).

Forward functions are built per model architecture and cached, so repeated steps in one
worker reuse compiled XLA code instead of tracing again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Forward = Callable[[Params, jax.Array], jax.Array]


def architecture_key(model: dict[str, Any]) -> tuple[str, str]:
    """Hashable identity of a model's architecture (its kind and config)."""
    return str(model["kind"]), json.dumps(model["config"], sort_keys=True)


def _dense(h: jax.Array, layer: dict[str, jax.Array]) -> jax.Array:
    return h @ layer["w"] + layer["b"]


def mlp_forward(params: Params, x: jax.Array) -> jax.Array:
    """Logits of a ReLU MLP on inputs flattened to (n, features)."""
    h = x.reshape(x.shape[0], -1)
    layers = params["layers"]
    for layer in layers[:-1]:
        h = jax.nn.relu(_dense(h, layer))
    return _dense(h, layers[-1])


def cnn_forward(params: Params, x: jax.Array) -> jax.Array:
    """Logits of conv(3x3, SAME) -> ReLU -> 2x2 average pool blocks, then a dense head."""
    h = x if x.ndim == 4 else x[..., None]  # (n, H, W) -> NHWC
    for layer in params["conv"]:
        h = jax.lax.conv_general_dilated(
            h, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + layer["b"])
        n, height, width, channels = h.shape
        if height >= 2 and width >= 2:
            h = h[:, : height // 2 * 2, : width // 2 * 2]
            h = h.reshape(n, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))
    h = h.reshape(h.shape[0], -1)
    dense = params["dense"]
    for layer in dense[:-1]:
        h = jax.nn.relu(_dense(h, layer))
    return _dense(h, dense[-1])


FORWARDS: dict[str, Forward] = {"mlp": mlp_forward, "cnn": cnn_forward}


def forward_of(model: dict[str, Any]) -> Forward:
    try:
        return FORWARDS[str(model["kind"])]
    except KeyError:
        raise ValueError(f"unknown model kind {model['kind']!r}; known: {sorted(FORWARDS)}") from None


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


@lru_cache(maxsize=64)
def jitted_logits(kind: str) -> Callable[[Params, jax.Array], jax.Array]:
    return jax.jit(FORWARDS[kind])


def logits_numpy(model: dict[str, Any], x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits for ``x`` computed in fixed-size chunks (one compiled shape per size)."""
    forward = jitted_logits(str(model["kind"]))
    params = to_device(model["params"])
    x = np.asarray(x, dtype=np.float32)
    out = [np.asarray(forward(params, jnp.asarray(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, int(model["config"]["num_classes"])), dtype=np.float32)
    return np.concatenate(out)


def to_device(tree: Params) -> Params:
    return jax.tree_util.tree_map(jnp.asarray, tree)


def to_numpy(tree: Params) -> Params:
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf), tree)


def _he_dense(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * jnp.sqrt(2.0 / fan_in)
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def init_mlp_params(seed: int, input_dim: int, hidden_sizes: list[int], num_classes: int) -> Params:
    sizes = [input_dim, *hidden_sizes, num_classes]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) - 1)
    layers = [_he_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    return to_numpy({"layers": layers})


def init_cnn_params(
    seed: int, input_shape: list[int], channels: list[int], dense_sizes: list[int], num_classes: int
) -> Params:
    height, width = int(input_shape[0]), int(input_shape[1])
    in_channels = int(input_shape[2]) if len(input_shape) > 2 else 1
    keys = jax.random.split(jax.random.PRNGKey(seed), len(channels) + len(dense_sizes) + 1)
    conv = []
    for key, out_channels in zip(keys, channels):
        fan_in = 9 * in_channels
        w = jax.random.normal(key, (3, 3, in_channels, out_channels), jnp.float32) * jnp.sqrt(2.0 / fan_in)
        conv.append({"w": w, "b": jnp.zeros((out_channels,), jnp.float32)})
        in_channels = out_channels
        if height >= 2 and width >= 2:
            height, width = height // 2, width // 2
    sizes = [height * width * in_channels, *dense_sizes, num_classes]
    dense_keys = keys[len(channels) :]
    dense = [_he_dense(k, a, b) for k, a, b in zip(dense_keys, sizes[:-1], sizes[1:])]
    return to_numpy({"conv": conv, "dense": dense})
