"""A worker's device: accelerator options that must be set before any plugin code runs.

Kept apart from :mod:`services.worker` so the CLI can call it before importing anything heavy.
"""

from __future__ import annotations

import os


def prepare_device_environment(device: str) -> str:
    """Set accelerator memory options before JAX is imported; describe the backend we got.

    Must run before any plugin code: JAX reads ``XLA_PYTHON_CLIENT_PREALLOCATE`` once, at
    import. Returns a one-line description for the start-up log.
    """
    if device != "gpu":
        return f"device {device}"
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
    except ImportError:
        return "gpu worker: jax not installed (plugins needing JAX will fail)"
    try:
        backend = jax.default_backend()
        devices = ", ".join(str(d) for d in jax.devices())
    except Exception as error:  # noqa: BLE001 - reported, the worker still serves
        return f"gpu worker: JAX {jax.__version__} could not initialise a backend: {error}"
    note = "" if backend == "gpu" else f" (no GPU visible: steps run on the {backend} backend)"
    return f"gpu worker: JAX {jax.__version__} backend {backend}{note}; devices: {devices}"
