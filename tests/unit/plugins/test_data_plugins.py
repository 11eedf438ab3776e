import numpy as np
import pytest

from plugins.data.digits import load_digits_dataset
from plugins.data.transforms import (
    batch_dataset,
    concatenate_datasets,
    normalize_dataset,
    shuffle_dataset,
    split_dataset,
    take_subset,
)


def small(n=10):
    return {"x": np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2), "y": np.arange(n, dtype=np.int32) % 3}


def test_digits_are_scaled_images():
    data = load_digits_dataset()
    assert data["x"].shape == (1797, 8, 8) and data["x"].dtype == np.float32
    assert data["y"].shape == (1797,) and data["y"].dtype == np.int32
    assert data["x"].min() == 0.0 and data["x"].max() == 1.0
    assert set(np.unique(data["y"])) == set(range(10))
    assert load_digits_dataset(flatten=True)["x"].shape == (1797, 64)


def test_split_is_seeded_disjoint_and_stratified():
    data = load_digits_dataset()
    data = {**data, "id": np.arange(len(data["y"]))}
    train, test = split_dataset(data, test_size=0.25, seed=3)
    assert len(train["y"]) + len(test["y"]) == 1797
    assert not set(train["id"]) & set(test["id"])
    again_train, _ = split_dataset(data, test_size=0.25, seed=3)
    assert np.array_equal(train["id"], again_train["id"])
    assert not np.array_equal(train["id"], split_dataset(data, test_size=0.25, seed=4)[0]["id"])
    shares = np.bincount(test["y"]) / len(test["y"])
    assert np.allclose(shares, np.bincount(data["y"]) / 1797, atol=0.01)


def test_normalize_minmax_uses_the_reference_and_clips():
    train = {"x": np.array([[0.0, 2.0], [4.0, 1.0]], np.float32), "y": np.array([0, 1])}
    test = {"x": np.array([[-2.0, 2.0], [8.0, 3.0]], np.float32), "y": np.array([0, 1])}
    out = normalize_dataset(test, "minmax", reference=train)
    assert np.array_equal(out["x"], np.array([[0.0, 0.5], [1.0, 0.75]], np.float32))
    assert np.array_equal(out["y"], test["y"])


def test_normalize_standard():
    data = {"x": np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)}
    out = normalize_dataset(data, "standard")["x"]
    assert np.allclose(out, [[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError):
        normalize_dataset(data, "nope")


def test_subset_shuffle_batch_concatenate():
    data = small(10)
    assert np.array_equal(take_subset(data, 3)["y"], data["y"][:3])
    seeded = take_subset(data, 4, seed=1)
    assert len(seeded["y"]) == 4 and np.array_equal(seeded["x"], take_subset(data, 4, seed=1)["x"])
    shuffled = shuffle_dataset(data, seed=0)
    assert sorted(shuffled["x"][:, 0, 0].tolist()) == data["x"][:, 0, 0].tolist()
    batches = batch_dataset(data, 4)
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    assert [len(b["y"]) for b in batch_dataset(data, 4, drop_remainder=True)] == [4, 4]
    joined = concatenate_datasets(batches)
    assert all(np.array_equal(joined[k], data[k]) for k in data)
