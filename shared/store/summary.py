"""A step's stored outputs at a glance, read from the codec tree alone (no GridFS download).

:func:`summarize_outputs` turns the ``outputs`` tree of a step document (:mod:`shared.codec`)
into ``{OUTPUT: SUMMARY}``, each summary a small JSON-ready dict with a ``type`` and:

* arrays (``ndarray``): ``dtype``, ``shape``, ``nbytes``, ``stored`` (``inline`` or ``gridfs``);
* numpy scalars (``npscalar``): ``dtype`` and ``value``;
* ``none``, ``bool``, ``int``, ``float``, ``complex``: ``value`` (non-finite floats as
  ``"nan"``, ``"inf"``, ``"-inf"``; complex numbers and ints beyond 64 bits as text, cut to
  :data:`MAX_TEXT_CHARS`);
* ``str``: ``value`` (cut to :data:`MAX_TEXT_CHARS` characters, ending in ``…``) and ``length``;
* ``bytes``, ``bytearray``: ``nbytes`` and ``stored``;
* ``list``, ``tuple``, ``set``, ``frozenset``: ``length``; ``dict``: ``length`` and ``keys``
  (the first :data:`MAX_KEYS`, as text).

Outputs too large for the step document were stored as one GridFS file (``outputs-blob``):
they are summarised as one entry :data:`ALL_OUTPUTS` with ``type`` ``outputs-blob``, ``nbytes``
and ``stored``, since naming them would mean downloading the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.format import descr_to_dtype

from shared import codec
from shared.store.values import SPILLED

ALL_OUTPUTS = "*"
MAX_TEXT_CHARS = 80
MAX_KEYS = 10
_COLLECTIONS = ("tuple", "set", "frozenset")


def summarize_outputs(tree: Any) -> dict[str, dict[str, Any]]:
    """``{OUTPUT: SUMMARY}`` of a step's stored outputs (see the module docstring)."""
    if not tree:
        return {}
    if isinstance(tree, Mapping) and tree.get(codec.TAG) == SPILLED:
        return {ALL_OUTPUTS: {"type": SPILLED, "nbytes": int(tree.get("nbytes", 0)), "stored": "gridfs"}}
    if isinstance(tree, Mapping) and tree.get(codec.TAG) == "dict":
        if "m" in tree:
            return {str(name): summarize_value(node) for name, node in tree["m"].items()}
        return {_key_text(key): summarize_value(node) for key, node in zip(tree.get("k", []), tree.get("v", []))}
    return {ALL_OUTPUTS: summarize_value(tree)}


def summarize_value(node: Any) -> dict[str, Any]:
    """The summary of one encoded value."""
    if node is None:
        return {"type": "none", "value": None}
    if isinstance(node, bool):
        return {"type": "bool", "value": node}
    if isinstance(node, int):
        return {"type": "int", "value": int(node)}
    if isinstance(node, float):
        return {"type": "float", "value": node if math.isfinite(node) else repr(node)}
    if isinstance(node, str):
        return {"type": "str", "value": shorten(node), "length": len(node)}
    if isinstance(node, (bytes, bytearray)):
        return {"type": "bytes", "nbytes": len(node), "stored": "inline"}
    if isinstance(node, list):
        return {"type": "list", "length": len(node)}
    if isinstance(node, Mapping) and codec.TAG in node:
        return _tagged(str(node[codec.TAG]), node)
    return {"type": type(node).__name__}


def _tagged(tag: str, node: Mapping[str, Any]) -> dict[str, Any]:
    if tag == "ndarray":
        return {"type": tag, "dtype": _dtype(node.get("dtype")), "shape": [int(n) for n in node.get("shape", [])],
                "nbytes": _nbytes(node), "stored": _stored(node)}
    if tag == "npscalar":
        return {"type": tag, "dtype": _dtype(node.get("dtype")), "value": _scalar(node)}
    if tag in ("bytes", "bytearray"):
        return {"type": tag, "nbytes": _nbytes(node), "stored": _stored(node)}
    if tag == "dict":
        keys = list(node["m"]) if "m" in node else [_key_text(k) for k in node.get("k", [])]
        return {"type": tag, "length": len(keys), "keys": [shorten(str(k)) for k in keys[:MAX_KEYS]]}
    if tag in _COLLECTIONS:
        return {"type": tag, "length": len(node.get("v", []))}
    if tag == "int":
        return {"type": tag, "value": shorten(str(node.get("v", "")))}
    if tag == "float":
        return {"type": tag, "value": str(node.get("v", ""))}
    if tag == "complex":
        return {"type": tag, "value": shorten(_decoded_text(node))}
    return {"type": tag}


def shorten(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one ``…`` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dtype(descr: Any) -> str | None:
    """A stored dtype description (``"<f4"``; structured: lists for numpy's tuples) as a name."""
    try:
        return str(descr_to_dtype(_as_descr(descr)))
    except (TypeError, ValueError, KeyError):
        return None if descr is None else str(descr)


def _as_descr(stored: Any) -> Any:
    if isinstance(stored, list):
        if stored and all(isinstance(item, list) for item in stored):
            return [_as_descr(item) for item in stored]  # the fields of a structured dtype
        return tuple(_as_descr(item) for item in stored)  # one field: (name, type[, shape])
    return stored


def _nbytes(node: Mapping[str, Any]) -> int | None:
    if "data" in node:
        return len(node["data"])
    return int(node["nbytes"]) if "nbytes" in node else None


def _stored(node: Mapping[str, Any]) -> str:
    return "inline" if "data" in node else "gridfs"


def _scalar(node: Mapping[str, Any]) -> Any:
    """A numpy scalar's value, JSON-ready (its bytes are inline: a few at most)."""
    try:
        value = codec.decode(node)
    except Exception:  # noqa: BLE001 - a summary never fails: the value is just not shown
        return None
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, bool) or (isinstance(item, int) and abs(item) < 2**63):
        return item
    if isinstance(item, float):
        return item if math.isfinite(item) else repr(item)
    return shorten(str(item))


def _key_text(key: Any) -> str:
    """An encoded mapping key as text (``1``, ``(1, 2)``, ``'a.b'``)."""
    try:
        return shorten(repr(codec.decode(key)))
    except Exception:  # noqa: BLE001 - a key stored in GridFS (bytes above the threshold) is not fetched
        return shorten(str(summarize_value(key).get("type")))


def _decoded_text(node: Mapping[str, Any]) -> str:
    try:
        return str(codec.decode(node))
    except Exception:  # noqa: BLE001
        return ""
