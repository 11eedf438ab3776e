"""Feature squeezing (Xu et al. 2018) as in ART: bit-depth reduction and median smoothing.

Both accept a dataset dict (only ``x`` changes) or a bare array, and return the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import task
from plugins.data.arrays import features_of, with_features


@task(outputs="squeezed")
def bit_depth_squeeze(data: Any, bit_depth: int = 4, clip_min: float = 0.0, clip_max: float = 1.0) -> Any:
    """Quantise to ``2**bit_depth`` evenly spaced levels of [clip_min, clip_max].

    ``rint((x - min) / (max - min) * (2**b - 1)) / (2**b - 1)`` mapped back to the range
    (ART ``FeatureSqueezing``); ``rint`` rounds halves to even. Values outside the range
    are clipped first.
    """
    bit_depth = int(bit_depth)
    if not 1 <= bit_depth <= 64:
        raise ValueError(f"bit_depth must be in 1..64, got {bit_depth}")
    x = features_of(data)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    span = float(clip_max) - float(clip_min)
    levels = float(2**bit_depth - 1)
    scaled = np.clip((x.astype(np.float64) - clip_min) / span, 0.0, 1.0)
    squeezed = np.rint(scaled * levels) / levels * span + clip_min
    return with_features(data, squeezed.astype(dtype))


@task(outputs="smoothed")
def median_smooth(data: Any, window_size: int = 3, channels_last: bool = False) -> Any:
    """Per-image median filter over a ``window_size`` square (ART ``SpatialSmoothing``).

    Images are ``(n, H, W)``, or ``(n, H, W, C)`` with ``channels_last=True`` (each channel
    filtered separately). Borders use ``reflect`` padding (``d c b a | a b c d``), as
    ``scipy.ndimage.median_filter`` and ART do; an even window is anchored so that its
    centre is the lower-right of the middle four pixels (scipy's origin 0).
    """
    from scipy.ndimage import median_filter

    window_size = int(window_size)
    if window_size < 1:
        raise ValueError("window_size must be >= 1")
    x = features_of(data)
    if x.ndim == 3 or (x.ndim == 4 and channels_last):
        size = (1, window_size, window_size) + ((1,) if x.ndim == 4 else ())
    else:
        raise ValueError(f"expected images (n, H, W) or (n, H, W, C) with channels_last, got {x.shape}")
    return with_features(data, median_filter(x, size=size, mode="reflect"))
