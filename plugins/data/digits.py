"""The 8x8 handwritten digits bundled with scikit-learn (1797 images, no download)."""

from __future__ import annotations

import numpy as np

from plugins import task


@task(outputs="dataset")
def load_digits_dataset(flatten: bool = False) -> dict[str, np.ndarray]:
    """Digits as ``{"x": float32 (n, 8, 8) in [0, 1], "y": int32 (n,)}``.

    Pixel values are 0..16 in the source; dividing by 16 puts them in the [0, 1] range
    the attacks clip to. ``flatten=True`` gives ``x`` of shape (n, 64) instead.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    if flatten:
        x = x.reshape(len(x), -1)
    return {"x": x, "y": bunch.target.astype(np.int32)}
