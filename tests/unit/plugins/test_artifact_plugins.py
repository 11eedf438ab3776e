import json

import numpy as np
import pytest

from plugins.artifacts.files import load_artifact, save_artifact
from plugins.artifacts.serializers import (
    array_to_npy,
    csv_to_table,
    json_to_value,
    npy_to_array,
    npz_to_pytree,
    pytree_to_npz,
    table_to_csv,
    value_to_json,
)

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([1, -2, 3], dtype=np.int64),
    np.array([True, False]),
    np.array([1, 2], dtype=np.uint32),
    np.float64(2.5) * np.ones((2, 0, 3)),
    np.array("text"),
]


@pytest.mark.parametrize("array", ARRAYS)
def test_npy_round_trip_keeps_dtype_and_shape(array):
    data = array_to_npy(array)
    assert isinstance(data, bytes) and data.startswith(b"\x93NUMPY")
    back = npy_to_array(data)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_npy_refuses_object_arrays():
    with pytest.raises(ValueError):
        array_to_npy(np.array([{}, None], dtype=object))


def test_npz_round_trips_a_whole_model():
    from plugins.models.classifiers import init_mlp_classifier

    model = init_mlp_classifier(seed=0, hidden_sizes=[8])
    model["history"] = {"loss": [1.5, 0.5], "note": None, "pair": (1, "a")}
    back = npz_to_pytree(pytree_to_npz(model))
    assert back["kind"] == "mlp" and back["config"] == model["config"]
    assert back["history"] == model["history"]
    for layer, original in zip(back["params"]["layers"], model["params"]["layers"]):
        for key in ("w", "b"):
            assert layer[key].dtype == original[key].dtype
            assert np.array_equal(layer[key], original[key])


def test_npz_of_a_flat_dict_is_plain_npz():
    import io

    data = {"x": np.ones((2, 2), np.float32), "y": np.array([1, 2], np.int32)}
    raw = pytree_to_npz(data, compressed=False)
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        assert np.array_equal(archive["x"], data["x"]) and archive["y"].dtype == np.int32
    back = npz_to_pytree(raw)
    assert set(back) == {"x", "y"} and back["y"].dtype == np.int32


def test_npz_accepts_jax_arrays_and_rejects_objects():
    import jax.numpy as jnp

    back = npz_to_pytree(pytree_to_npz({"a": jnp.arange(3)}))
    assert np.array_equal(back["a"], np.arange(3))
    with pytest.raises(TypeError):
        pytree_to_npz({"f": len})


def test_csv_round_trip_infers_column_types():
    table = {
        "sample": [0, 1, 2],
        "linf": [0.1, 1 / 3, 1e-12],
        "label": ["a", "b,c", "d"],
        "ok": [True, False, True],
        "maybe": [0.5, None, 1.0],
    }
    text = table_to_csv(table)
    assert text.splitlines()[0] == b"sample,linf,label,ok,maybe"
    assert csv_to_table(text) == table
    numpy_table = {"a": np.array([1, 2]), "b": np.array([0.5, 0.25], np.float32)}
    assert csv_to_table(table_to_csv(numpy_table)) == {"a": [1, 2], "b": [0.5, 0.25]}
    with pytest.raises(ValueError):
        table_to_csv({"a": [1], "b": [1, 2]})


def test_json_round_trip():
    value = {"metrics": {"acc": 0.9}, "arr": np.arange(3), "t": (1, 2)}
    data = value_to_json(value)
    assert json.loads(data) == {"metrics": {"acc": 0.9}, "arr": [0, 1, 2], "t": [1, 2]}
    assert json_to_value(data) == {"metrics": {"acc": 0.9}, "arr": [0, 1, 2], "t": [1, 2]}


@pytest.mark.parametrize(
    "name,value",
    [
        ("a.npy", np.arange(6, dtype=np.int16).reshape(2, 3)),
        ("nested/b.npz", {"x": np.zeros((2, 8, 8), np.float32), "y": np.array([1, 2], np.int32)}),
        ("c.csv", {"sample": [0, 1], "l2": [0.5, 0.25]}),
        ("d.json", {"clean_accuracy": 0.97}),
    ],
)
def test_save_and_load_files(tmp_path, name, value):
    path = save_artifact(value, str(tmp_path / name))
    back = load_artifact(path)
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    elif name.endswith(".npz"):
        assert all(back[k].dtype == value[k].dtype and np.array_equal(back[k], value[k]) for k in value)
    else:
        assert back == value
    with pytest.raises(FileExistsError):
        save_artifact(value, path, overwrite=False)
    with pytest.raises(ValueError):
        save_artifact(value, str(tmp_path / "x.pkl"))
