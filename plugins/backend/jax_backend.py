"""JAX backend set-up, the counterpart of Dioptra's ``init_tensorflow``.

JAX has no global seed: every random step here takes its own seed. The task still
fixes the process-wide options (x64 off by default, so every model computes in
float32) and reports which backend and devices the worker sees.
"""

from __future__ import annotations

from typing import Any

from plugins import task


@task(outputs="backend")
def init_jax_backend(seed: int = 0, enable_x64: bool = False) -> dict[str, Any]:
    """Configure JAX in this worker and describe it: backend, devices, x64, version."""
    import jax

    jax.config.update("jax_enable_x64", bool(enable_x64))
    return {
        "seed": int(seed),
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "device_count": jax.device_count(),
        "x64": bool(jax.config.read("jax_enable_x64")),
        "jax_version": jax.__version__,
    }
