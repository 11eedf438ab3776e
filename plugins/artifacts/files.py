"""Save values to files and load them back; the format follows the file extension.

``.npy`` one array, ``.npz`` any pytree of arrays, ``.csv`` a table, ``.json`` anything
JSON-shaped. Paths are local to the worker that runs the step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins import task
from plugins.artifacts import codecs

ENCODERS: dict[str, Callable[[Any], bytes]] = {
    ".npy": codecs.encode_npy,
    ".npz": codecs.encode_npz,
    ".csv": codecs.encode_csv,
    ".json": codecs.encode_json,
}
DECODERS: dict[str, Callable[[bytes], Any]] = {
    ".npy": codecs.decode_npy,
    ".npz": codecs.decode_npz,
    ".csv": codecs.decode_csv,
    ".json": codecs.decode_json,
}


def _suffix(path: Path, table: dict[str, Any]) -> str:
    suffix = path.suffix.lower()
    if suffix not in table:
        raise ValueError(f"unsupported artifact extension {suffix!r}; use one of {sorted(table)}")
    return suffix


@task(outputs="path")
def save_artifact(contents: Any, path: str, overwrite: bool = True) -> str:
    """Write ``contents`` to ``path`` (parents created); returns the absolute path."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    data = ENCODERS[_suffix(target, ENCODERS)](contents)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return str(target.resolve())


@task(outputs="value")
def load_artifact(path: str) -> Any:
    """Read a file written by :func:`save_artifact`."""
    source = Path(path)
    return DECODERS[_suffix(source, DECODERS)](source.read_bytes())
