"""Step outputs summarised from their stored codec trees, never downloading GridFS files."""

from __future__ import annotations

import numpy as np
from bson import ObjectId

from shared import codec
from shared.store.summary import ALL_OUTPUTS, MAX_TEXT_CHARS, summarize_outputs
from shared.store.values import SPILLED


def tree_of(outputs: dict, threshold_bytes: int = 64) -> dict:
    return codec.encode(outputs, threshold_bytes=threshold_bytes).tree


def test_arrays_give_dtype_shape_size_and_where_they_are_stored() -> None:
    summary = summarize_outputs(tree_of({"big": np.zeros((40, 40), np.float32), "small": np.arange(3, dtype=np.int64)}))
    assert summary == {
        "big": {"type": "ndarray", "dtype": "float32", "shape": [40, 40], "nbytes": 6400, "stored": "gridfs"},
        "small": {"type": "ndarray", "dtype": "int64", "shape": [3], "nbytes": 24, "stored": "inline"},
    }


def test_no_array_data_is_needed_to_summarise() -> None:
    tree = tree_of({"big": np.ones((100, 100))})
    assert "data" not in tree["m"]["big"] and isinstance(tree["m"]["big"]["file"], ObjectId)
    assert summarize_outputs(tree)["big"]["shape"] == [100, 100]  # the reference alone; no bytes supplied


def test_structured_and_big_endian_dtypes_are_named() -> None:
    record = np.zeros(2, dtype=[("x", "<i4"), ("y", ">f8")])
    summary = summarize_outputs(tree_of({"r": record, "b": np.zeros(2, ">i2")}))
    assert summary["r"]["dtype"] == str(record.dtype) and summary["r"]["shape"] == [2]
    assert summary["b"]["dtype"] == ">i2"


def test_scalars_show_their_values() -> None:
    summary = summarize_outputs(tree_of({"n": 3, "x": 0.25, "flag": True, "nothing": None, "nan": float("nan"),
                                         "inf": float("-inf"), "huge": 2**80, "z": 1 + 2j, "np": np.float64(2.5),
                                         "np_int": np.int16(-4)}))
    assert summary["n"] == {"type": "int", "value": 3}
    assert summary["x"] == {"type": "float", "value": 0.25}
    assert summary["flag"] == {"type": "bool", "value": True}
    assert summary["nothing"] == {"type": "none", "value": None}
    assert summary["nan"] == {"type": "float", "value": "nan"} and summary["inf"]["value"] == "-inf"
    assert summary["huge"] == {"type": "int", "value": str(2**80)}
    assert summary["z"] == {"type": "complex", "value": "(1+2j)"}
    assert summary["np"] == {"type": "npscalar", "dtype": "float64", "value": 2.5}
    assert summary["np_int"] == {"type": "npscalar", "dtype": "int16", "value": -4}


def test_long_strings_are_cut_and_their_length_kept() -> None:
    text = "word " * 100
    summary = summarize_outputs(tree_of({"s": text, "short": "ok"}, threshold_bytes=10_000))
    assert summary["short"] == {"type": "str", "value": "ok", "length": 2}
    assert summary["s"]["length"] == 500 and len(summary["s"]["value"]) == MAX_TEXT_CHARS
    assert summary["s"]["value"].endswith("…")


def test_containers_by_length_and_bytes_by_size() -> None:
    summary = summarize_outputs(tree_of({"l": [1, 2, 3], "t": (1, 2), "s": {1, 2, 3, 4}, "d": {"a": 1, "b": [2]},
                                         "odd_keys": {1: "x", (2, 3): "y"}, "raw": b"\x00" * 10, "blob": b"\x01" * 1000}))
    assert summary["l"] == {"type": "list", "length": 3}
    assert summary["t"] == {"type": "tuple", "length": 2}
    assert summary["s"] == {"type": "set", "length": 4}
    assert summary["d"] == {"type": "dict", "length": 2, "keys": ["a", "b"]}
    assert summary["odd_keys"] == {"type": "dict", "length": 2, "keys": ["1", "(2, 3)"]}
    assert summary["raw"] == {"type": "bytes", "nbytes": 10, "stored": "inline"}
    assert summary["blob"] == {"type": "bytes", "nbytes": 1000, "stored": "gridfs"}


def test_nested_values_are_not_walked() -> None:
    tree = tree_of({"tree": {"params": [np.zeros((5, 5))] * 50}})
    assert summarize_outputs(tree) == {"tree": {"type": "dict", "length": 1, "keys": ["params"]}}


def test_outputs_spilled_to_one_file_are_one_entry() -> None:
    spilled = {codec.TAG: SPILLED, "file": ObjectId(), "nbytes": 9_000_000}
    assert summarize_outputs(spilled) == {ALL_OUTPUTS: {"type": SPILLED, "nbytes": 9_000_000, "stored": "gridfs"}}


def test_no_outputs() -> None:
    assert summarize_outputs(None) == {} and summarize_outputs({}) == {}
    assert summarize_outputs(tree_of({})) == {}
