"""Step values <-> BSON-ready trees, without pickle.

What round-trips: ``None``, ``bool``, ``int`` (any size), ``float`` (NaN and infinities
too), ``complex``, ``str``, ``bytes``/``bytearray``, lists, tuples (stay tuples), sets,
dicts with any keys of these kinds, numpy arrays and scalars of every non-object dtype
(dtype and shape kept), and JAX arrays — which come back as **numpy arrays** (a worker
needs no JAX to read them; pass them to ``jax.numpy.asarray`` when a device array is
wanted). Anything else (open files, models as Python objects, object arrays) is refused
with a :class:`CodecError` naming where in the value it sits, instead of being pickled.

Every container is encoded as a tagged sub-document (key ``"~"``) except lists, which are
BSON arrays, so a stored tree is never ambiguous. Arrays and byte strings larger than the
threshold are not put inline: :func:`encode` returns them as :class:`Blob` objects with a
pre-assigned id for the store to upload to GridFS, and the tree keeps a typed reference
(dtype, shape, byte count, SHA-256). Decoding checks the checksum.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bson import Binary, ObjectId
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from shared.distributed_errors import CodecError

TAG = "~"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Blob:
    """Bytes the tree refers to by ``file_id``; stored in GridFS by the caller."""

    file_id: ObjectId
    data: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Encoded:
    tree: Any
    blobs: list[Blob]
    inline_bytes: int


def _is_jax_array(value: Any) -> bool:
    module = type(value).__module__ or ""
    return module.startswith(("jax", "jaxlib")) and hasattr(value, "__array__")


class _Encoder:
    def __init__(self, threshold_bytes: int, checksums: bool = True) -> None:
        self.threshold_bytes = threshold_bytes
        self.checksums = checksums
        self.blobs: list[Blob] = []
        self.inline_bytes = 0

    def encode(self, value: Any, path: str) -> Any:
        if isinstance(value, np.generic):  # before the Python types: np.float64 is a float
            return self._scalar(value, path)
        if value is None or isinstance(value, (bool, str)):
            if isinstance(value, str):
                self.inline_bytes += len(value)
            return value
        if isinstance(value, int):
            if INT64_MIN <= value <= INT64_MAX:
                return value
            return {TAG: "int", "v": str(value)}
        if isinstance(value, float):
            return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
        if isinstance(value, complex):
            return {TAG: "complex", "re": self.encode(value.real, path), "im": self.encode(value.imag, path)}
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(bytes(value), "bytearray" if isinstance(value, bytearray) else "bytes")
        if isinstance(value, list):
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, (set, frozenset)):
            tag = "frozenset" if isinstance(value, frozenset) else "set"
            return {TAG: tag, "v": [self.encode(item, f"{path}{{}}") for item in value]}
        if isinstance(value, Mapping):
            return self._mapping(value, path)
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if _is_jax_array(value):
            return self._array(np.asarray(value), path)
        raise CodecError(path, f"cannot store a {type(value).__module__}.{type(value).__qualname__} without pickle; "
                         "return arrays, numbers, strings, bytes, lists, tuples or dicts of them")

    def _mapping(self, value: Mapping[Any, Any], path: str) -> dict[str, Any]:
        if all(isinstance(k, str) and k and "." not in k and "\x00" not in k and not k.startswith("$") and k != TAG for k in value):
            return {TAG: "dict", "m": {k: self.encode(v, f"{path}.{k}") for k, v in value.items()}}
        keys = [self.encode(k, f"{path}<key>") for k in value]
        values = [self.encode(v, f"{path}[{k!r}]") for k, v in value.items()]
        return {TAG: "dict", "k": keys, "v": values}

    def _bytes(self, data: bytes, tag: str) -> dict[str, Any]:
        if len(data) > self.threshold_bytes:
            return {TAG: tag, **self._blob(data, {"kind": tag})}
        self.inline_bytes += len(data)
        return {TAG: tag, "data": Binary(data)}

    def _array(self, array: np.ndarray, path: str) -> dict[str, Any]:
        if array.dtype.hasobject:
            raise CodecError(path, f"cannot store an array of dtype {array.dtype} (Python objects) without pickle")
        descr = dtype_to_descr(array.dtype)
        data = np.ascontiguousarray(array).tobytes()
        node: dict[str, Any] = {TAG: "ndarray", "dtype": _descr_out(descr), "shape": list(array.shape)}
        if len(data) > self.threshold_bytes:
            node.update(self._blob(data, {"kind": "ndarray", "dtype": str(array.dtype), "shape": list(array.shape)}))
        else:
            self.inline_bytes += len(data)
            node["data"] = Binary(data)
        return node

    def _scalar(self, value: np.generic, path: str) -> dict[str, Any]:
        if value.dtype.hasobject:
            raise CodecError(path, "cannot store a numpy object scalar without pickle")
        return {TAG: "npscalar", "dtype": _descr_out(dtype_to_descr(value.dtype)), "data": Binary(value.tobytes())}

    def _blob(self, data: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
        if not self.checksums:
            blob = Blob(ObjectId(), data, {**metadata, "nbytes": len(data)})
            self.blobs.append(blob)
            return {"file": blob.file_id, "nbytes": len(data)}
        digest = hashlib.sha256(data).hexdigest()
        blob = Blob(ObjectId(), data, {**metadata, "sha256": digest, "nbytes": len(data)})
        self.blobs.append(blob)
        return {"file": blob.file_id, "nbytes": len(data), "sha256": digest}


def _descr_out(descr: Any) -> Any:
    """Structured dtypes describe themselves with tuples; BSON has lists."""
    if isinstance(descr, (list, tuple)):
        return [_descr_out(item) for item in descr]
    return descr


def _descr_in(descr: Any) -> Any:
    if isinstance(descr, list):
        if descr and all(isinstance(item, list) for item in descr):
            return [_descr_in(item) for item in descr]  # list of fields
        return tuple(_descr_in(item) for item in descr)  # one field: (name, type[, shape])
    return descr


def encode(value: Any, *, threshold_bytes: int, path: str = "", checksums: bool = True) -> Encoded:
    """The BSON-ready tree of ``value`` and the large blobs it refers to. ``checksums=False``
    leaves out the blobs' SHA-256 (values handed between processes, never stored)."""
    encoder = _Encoder(threshold_bytes, checksums)
    tree = encoder.encode(value, path)
    return Encoded(tree, encoder.blobs, encoder.inline_bytes)


def collect_file_ids(tree: Any) -> list[ObjectId]:
    """Every GridFS id a tree refers to (to fetch them before :func:`decode`)."""
    found: list[ObjectId] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            file_id = node.get("file")
            if TAG in node and isinstance(file_id, ObjectId):
                found.append(file_id)
            stack.extend(v for k, v in node.items() if k != TAG)
    return found


def decode(tree: Any, blobs: Mapping[ObjectId, bytes] | Callable[[ObjectId], bytes] | None = None) -> Any:
    """The value a tree stands for; ``blobs`` supplies the bytes of GridFS references."""
    fetch: Callable[[ObjectId], bytes]
    if blobs is None:
        def fetch(file_id: ObjectId) -> bytes:
            raise CodecError("", f"value refers to stored file {file_id} but no files were supplied")
    elif callable(blobs):
        fetch = blobs
    else:
        table = blobs

        def fetch(file_id: ObjectId) -> bytes:
            try:
                return table[file_id]
            except KeyError:
                raise CodecError("", f"stored file {file_id} is missing") from None
    return _decode(tree, fetch)


def _payload(node: Mapping[str, Any], fetch: Callable[[ObjectId], bytes]) -> bytes:
    if "data" in node:
        return bytes(node["data"])
    data = fetch(node["file"])
    digest = node.get("sha256")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise CodecError("", f"stored file {node['file']} does not match its checksum")
    return data


def _decode(node: Any, fetch: Callable[[ObjectId], bytes]) -> Any:
    if node is None or isinstance(node, (bool, float, str)):
        return node
    if isinstance(node, int):
        return node if type(node) is int else int(node)  # bson.Int64 -> int
    if isinstance(node, bytes):
        return node
    if isinstance(node, list):
        return [_decode(item, fetch) for item in node]
    if not isinstance(node, dict) or TAG not in node:
        raise CodecError("", f"not an encoded value: {type(node).__name__}")
    tag = node[TAG]
    if tag == "dict":
        if "m" in node:
            return {k: _decode(v, fetch) for k, v in node["m"].items()}
        return {_decode(k, fetch): _decode(v, fetch) for k, v in zip(node["k"], node["v"])}
    if tag == "tuple":
        return tuple(_decode(item, fetch) for item in node["v"])
    if tag == "ndarray":
        dtype = descr_to_dtype(_descr_in(node["dtype"]))
        data = _payload(node, fetch)
        return np.frombuffer(bytearray(data), dtype=dtype).reshape(node["shape"])
    if tag == "npscalar":
        dtype = descr_to_dtype(_descr_in(node["dtype"]))
        return np.frombuffer(_payload(node, fetch), dtype=dtype)[0]
    if tag == "bytes":
        return _payload(node, fetch)
    if tag == "bytearray":
        return bytearray(_payload(node, fetch))
    if tag == "int":
        return int(node["v"])
    if tag == "float":
        return float(node["v"])
    if tag == "complex":
        return complex(_decode(node["re"], fetch), _decode(node["im"], fetch))
    if tag == "set":
        return {_decode(item, fetch) for item in node["v"]}
    if tag == "frozenset":
        return frozenset(_decode(item, fetch) for item in node["v"])
    raise CodecError("", f"unknown value tag {tag!r}")
