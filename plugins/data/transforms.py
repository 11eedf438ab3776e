"""Splitting, normalising, sub-sampling and batching datasets (all deterministic)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plugins import task
from plugins.data.arrays import dataset_length, subset


@task(outputs=["train", "test"])
def split_dataset(
    dataset: dict[str, Any], test_size: float = 0.25, seed: int = 0, stratify: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Shuffle-split into train and test (stratified on ``y`` by default)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(dataset_length(dataset))
    train_idx, test_idx = train_test_split(
        indices,
        test_size=test_size,
        random_state=int(seed),
        stratify=np.asarray(dataset["y"]) if stratify else None,
    )
    return subset(dataset, np.sort(train_idx)), subset(dataset, np.sort(test_idx))


@task(outputs="dataset")
def normalize_dataset(
    dataset: dict[str, Any], method: str = "minmax", reference: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Rescale ``x`` with statistics of ``reference`` (default: the dataset itself).

    ``minmax`` maps the reference range to [0, 1] (values outside are clipped, so the
    result stays a valid attack domain); ``standard`` subtracts the per-feature mean and
    divides by the standard deviation (zero-variance features are left centred).
    Pass the training set as ``reference`` when normalising a test set.
    """
    x = np.asarray(dataset["x"], dtype=np.float32)
    ref = np.asarray((reference or dataset)["x"], dtype=np.float32)
    if method == "minmax":
        low, high = float(ref.min()), float(ref.max())
        scale = high - low if high > low else 1.0
        out = np.clip((x - low) / scale, 0.0, 1.0)
    elif method == "standard":
        mean = ref.mean(axis=0)
        std = ref.std(axis=0)
        out = (x - mean) / np.where(std > 0, std, 1.0)
    else:
        raise ValueError(f"unknown normalisation method {method!r} (minmax, standard)")
    return {**dataset, "x": out.astype(np.float32)}


@task(outputs="dataset")
def take_subset(dataset: dict[str, Any], size: int, seed: int | None = None) -> dict[str, np.ndarray]:
    """The first ``size`` rows, or ``size`` rows drawn without replacement when seeded."""
    n = dataset_length(dataset)
    size = min(int(size), n)
    if seed is None:
        indices = np.arange(size)
    else:
        indices = np.sort(np.random.default_rng(int(seed)).permutation(n)[:size])
    return subset(dataset, indices)


@task(outputs="dataset")
def shuffle_dataset(dataset: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """All rows in a seeded random order."""
    return subset(dataset, np.random.default_rng(int(seed)).permutation(dataset_length(dataset)))


@task(outputs="batches")
def batch_dataset(
    dataset: dict[str, Any], batch_size: int = 32, drop_remainder: bool = False
) -> list[dict[str, np.ndarray]]:
    """Consecutive batches (shuffle first with ``shuffle_dataset`` if needed)."""
    n = dataset_length(dataset)
    batch_size = int(batch_size)
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    stops = range(batch_size, n + batch_size, batch_size)
    batches = [subset(dataset, np.arange(stop - batch_size, min(stop, n))) for stop in stops]
    if drop_remainder and batches and dataset_length(batches[-1]) < batch_size:
        batches.pop()
    return batches


@task(outputs="dataset")
def concatenate_datasets(datasets: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stack datasets with the same keys row-wise (e.g. undo ``batch_dataset``)."""
    if not datasets:
        raise ValueError("need at least one dataset")
    keys = list(datasets[0])
    return {key: np.concatenate([np.asarray(d[key]) for d in datasets]) for key in keys}
