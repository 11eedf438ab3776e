"""The value codec: round trips without pickle, GridFS references, refusals."""

from __future__ import annotations

import math

import bson
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import collect_file_ids, decode, encode
from shared.distributed_errors import CodecError


def roundtrip(value, threshold=1 << 20):
    encoded = encode(value, threshold_bytes=threshold)
    stored = bson.decode(bson.encode({"v": encoded.tree}))["v"]  # what MongoDB gives back
    blobs = {blob.file_id: blob.data for blob in encoded.blobs}
    return decode(stored, blobs), encoded


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**70, -(2**80), 1.5, float("inf"), float("-inf"), 1 + 2j,
    "", "text with . and $", b"\x00\xff", bytearray(b"ab"),
    [1, [2, (3, 4)]], (1, "a", None), (), {"a": 1, "b": (2, 3)}, {1: "int key", (1, 2): "tuple key"},
    {"a.b": 1, "$x": 2, "~": 3}, {"nested": {"deep": [{"x": (1.0,)}]}}, {1, 2, 3}, frozenset({"a"}),
])
def test_plain_values_round_trip(value):
    back, _ = roundtrip(value)
    assert_same(back, value)


def test_nan_round_trips():
    back, _ = roundtrip(float("nan"))
    assert math.isnan(back)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint32", "int64", "bool", "complex64", "float16", ">i4", "U5", "S3"])
def test_arrays_keep_dtype_and_shape(dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    back, _ = roundtrip(array)
    assert_same(back, array)
    assert back.flags.writeable


def test_zero_d_noncontiguous_and_structured_arrays():
    for array in [np.array(3.5), np.arange(20).reshape(4, 5)[:, ::2], np.zeros(3, dtype=[("x", "<f4"), ("y", "<i2", (2,))])]:
        back, _ = roundtrip(array)
        assert_same(back, array)


def test_numpy_scalars_stay_numpy_scalars():
    for value in [np.float32(1.25), np.float64(2.5), np.int64(-3), np.bool_(True), np.uint8(200), np.str_("ab"), np.complex128(1j)]:
        back, _ = roundtrip(value)
        assert type(back) is type(value) and back == value


def test_pytree_of_arrays():
    tree = {"params": [(np.ones((3, 2), np.float32), np.zeros(2, np.float32))], "config": {"sizes": (3, 2)}, "name": "mlp"}
    back, _ = roundtrip(tree)
    assert_same(back, tree)


def test_large_arrays_become_blobs_with_checksums():
    big = np.random.default_rng(0).standard_normal((300, 300))
    back, encoded = roundtrip({"w": big, "small": np.arange(3)}, threshold=1000)
    assert len(encoded.blobs) == 1
    node = encoded.tree[ "m"]["w"]
    assert node["dtype"] == "<f8" and node["shape"] == [300, 300] and len(node["sha256"]) == 64 and "data" not in node
    assert collect_file_ids(encoded.tree) == [encoded.blobs[0].file_id]
    assert_same(back, {"w": big, "small": np.arange(3)})


def test_corrupt_blob_is_detected():
    encoded = encode(b"x" * 100, threshold_bytes=10)
    with pytest.raises(CodecError, match="checksum"):
        decode(encoded.tree, {encoded.blobs[0].file_id: b"y" * 100})
    with pytest.raises(CodecError, match="missing"):
        decode(encoded.tree, {})


def test_jax_arrays_come_back_as_numpy():
    jnp = pytest.importorskip("jax.numpy")
    value = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    back, _ = roundtrip({"x": value})
    assert isinstance(back["x"], np.ndarray) and back["x"].dtype == np.float32 and back["x"].shape == (2, 3)


@pytest.mark.parametrize("value", [object(), np.array([object()], dtype=object), {"a": [open]}])
def test_unstorable_values_are_refused_not_pickled(value):
    with pytest.raises(CodecError, match="without pickle"):
        encode(value, threshold_bytes=100)


def test_refusal_names_the_path():
    with pytest.raises(CodecError) as info:
        encode({"model": [1, object()]}, threshold_bytes=100)
    assert info.value.path == ".model[1]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_plain_tree_round_trips(value):
    back, _ = roundtrip(value, threshold=8)
    assert_same(back, value)
