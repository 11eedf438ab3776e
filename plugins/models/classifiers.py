"""Model construction tasks: an MLP and a small CNN with seeded He initialisation."""

from __future__ import annotations

from typing import Any

from plugins import task


@task(outputs="model")
def init_mlp_classifier(
    seed: int = 0,
    input_dim: int = 64,
    hidden_sizes: list[int] | None = None,
    num_classes: int = 10,
) -> dict[str, Any]:
    """A ReLU MLP (default 64 -> 128 -> 64 -> 10); inputs are flattened before layer one."""
    from plugins.models.networks import init_mlp_params

    hidden = [int(h) for h in (hidden_sizes if hidden_sizes is not None else [128, 64])]
    config = {"input_dim": int(input_dim), "hidden_sizes": hidden, "num_classes": int(num_classes)}
    params = init_mlp_params(int(seed), int(input_dim), hidden, int(num_classes))
    return {"kind": "mlp", "config": config, "params": params}


@task(outputs="model")
def init_cnn_classifier(
    seed: int = 0,
    input_shape: list[int] | None = None,
    channels: list[int] | None = None,
    dense_sizes: list[int] | None = None,
    num_classes: int = 10,
) -> dict[str, Any]:
    """conv3x3(16)-pool-conv3x3(32)-pool-dense(64)-dense(10) by default, for (8, 8[, 1]) images."""
    from plugins.models.networks import init_cnn_params

    shape = [int(s) for s in (input_shape if input_shape is not None else [8, 8, 1])]
    chans = [int(c) for c in (channels if channels is not None else [16, 32])]
    dense = [int(d) for d in (dense_sizes if dense_sizes is not None else [64])]
    config = {"input_shape": shape, "channels": chans, "dense_sizes": dense, "num_classes": int(num_classes)}
    params = init_cnn_params(int(seed), shape, chans, dense, int(num_classes))
    return {"kind": "cnn", "config": config, "params": params}
