"""Byte codecs for arrays, pytrees and tables (helpers; the tasks wrap them)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

TREE_KEY = "__pytree__"


def encode_npy(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | np.generic) or type(value).__module__.startswith(("jax", "jaxlib"))


def encode_npz(tree: Any, compressed: bool = True) -> bytes:
    """Any pytree of arrays/scalars as an ``.npz``: arrays as members, the structure
    (dict/list/tuple nesting and plain scalars) as JSON in a uint8 member ``__pytree__``.
    A flat dict of arrays is also readable by plain ``np.load`` under its own keys."""
    arrays: dict[str, np.ndarray] = {}

    def skeleton(node: Any, path: str) -> Any:
        if _is_array(node):
            name = path or "array"
            if name in arrays or name == TREE_KEY:
                name = f"{name}#{len(arrays)}"
            arrays[name] = np.asarray(node)
            return {"t": "array", "v": name}
        if isinstance(node, Mapping):
            if not all(isinstance(k, str) for k in node):
                raise TypeError("pytree dict keys must be strings")
            return {"t": "dict", "v": {k: skeleton(v, f"{path}/{k}" if path else k) for k, v in node.items()}}
        if isinstance(node, list | tuple):
            kind = "list" if isinstance(node, list) else "tuple"
            return {
                "t": kind,
                "v": [skeleton(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(node)],
            }
        if node is None or isinstance(node, bool | int | float | str):
            return {"t": "scalar", "v": node}
        raise TypeError(f"cannot serialise {type(node).__name__} without pickle")

    structure = json.dumps(skeleton(tree, "")).encode()
    members = {**arrays, TREE_KEY: np.frombuffer(structure, dtype=np.uint8)}
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, allow_pickle=False, **members)
    return buffer.getvalue()


def decode_npz(data: bytes) -> Any:
    """Inverse of :func:`encode_npz`; a foreign ``.npz`` loads as a dict of arrays."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    if TREE_KEY not in members:
        return members
    structure = json.loads(members.pop(TREE_KEY).tobytes().decode())

    def build(node: dict[str, Any]) -> Any:
        kind, value = node["t"], node["v"]
        if kind == "array":
            return members[value]
        if kind == "dict":
            return {k: build(v) for k, v in value.items()}
        if kind == "list":
            return [build(v) for v in value]
        if kind == "tuple":
            return tuple(build(v) for v in value)
        return value

    return build(structure)


def check_table(table: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Columns as lists of Python scalars, all the same length."""
    columns = {
        str(name): np.asarray(values).tolist() if _is_array(values) else list(values)
        for name, values in table.items()
    }
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"table columns have different lengths: {sorted(lengths)}")
    return columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def encode_csv(table: Mapping[str, Any], delimiter: str = ",") -> bytes:
    columns = check_table(table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values()))
    return buffer.getvalue().encode()


def _parse_column(cells: list[str]) -> list[Any]:
    """Infer one type per column: int, then float, then bool, else str; '' is None."""
    present = [c for c in cells if c != ""]

    def all_parse(parser: Any) -> bool:
        try:
            for c in present:
                parser(c)
        except ValueError:
            return False
        return True

    if all_parse(int):
        parse: Any = int
    elif all_parse(float):
        parse = float
    elif all(c in {"True", "False"} for c in present):
        parse = "True".__eq__
    else:
        parse = str
    return [None if c == "" else parse(c) for c in cells]


def decode_csv(data: bytes, delimiter: str = ",") -> dict[str, list[Any]]:
    rows = list(csv.reader(io.StringIO(data.decode()), delimiter=delimiter))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    return {name: _parse_column([row[i] for row in body]) for i, name in enumerate(header)}


def to_jsonable(value: Any) -> Any:
    """Arrays become (nested) lists, numpy scalars Python scalars, tuples lists."""
    if _is_array(value):
        return np.asarray(value).tolist()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json writes NaN/Infinity, which json.loads reads back
    return value


def encode_json(value: Any, indent: int | None = 2) -> bytes:
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=False).encode()


def decode_json(data: bytes) -> Any:
    return json.loads(data.decode())
