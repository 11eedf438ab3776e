"""Fixtures for the built-in plugin tests: CPU-only JAX and one shared trained model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest


@pytest.fixture(scope="session")
def digits_split():
    from plugins.data.digits import load_digits_dataset
    from plugins.data.transforms import split_dataset

    return split_dataset(load_digits_dataset(), test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits_split):
    """The MLP with default training settings (a few seconds on two cores)."""
    from plugins.models.classifiers import init_mlp_classifier
    from plugins.models.train import train_classifier

    train, _ = digits_split
    return train_classifier(init_mlp_classifier(seed=0), train, seed=0)


@pytest.fixture(scope="session")
def attack_batch(digits_split):
    """Forty test digits: enough to see attacks work, small enough to be instant."""
    from plugins.data.transforms import take_subset

    return take_subset(digits_split[1], 40)
