"""Messages between a runner and its child processes, without pickle.

A message is one BSON header (a codec tree for values, see :mod:`shared.codec`) followed by one
raw frame per large array or byte string the tree refers to, all on a
:class:`multiprocessing.connection.Connection` pipe: small values travel inline in the header,
large ones as their bytes (no BSON copy). Nothing that arrives is ever unpickled, so a value a
step read from the broker or MongoDB cannot run code in either process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import bson

from shared import codec

BLOB_THRESHOLD_BYTES = 1024 * 1024
"""Arrays and byte strings larger than this travel as frames of their own."""


def send(conn: Connection, header: Mapping[str, Any], blobs: Iterable[codec.Blob] = ()) -> None:
    """Send ``header`` (BSON-ready: str keys, codec trees) and the blobs its trees refer to."""
    blobs = list(blobs)
    conn.send_bytes(bson.encode({**header, "blobs": [{"id": blob.file_id, "meta": blob.metadata} for blob in blobs]}))
    for blob in blobs:
        conn.send_bytes(blob.data)


def receive(conn: Connection) -> tuple[dict[str, Any], list[codec.Blob]]:
    """The next message: its header and its blobs. Raises EOFError when the other end is gone."""
    header = bson.decode(conn.recv_bytes())
    refs = header.pop("blobs", None) or []
    return header, [codec.Blob(ref["id"], conn.recv_bytes(), dict(ref.get("meta") or {})) for ref in refs]


def encode(value: Any, *, threshold_bytes: int = BLOB_THRESHOLD_BYTES, path: str = "", for_storage: bool = False) -> codec.Encoded:
    """``value`` as a codec tree and blobs (a :class:`~shared.distributed_errors.CodecError`
    names the path of what cannot cross without pickle). Blobs bound for GridFS
    (``for_storage``) carry their SHA-256; values only handed over between processes do not."""
    return codec.encode(value, threshold_bytes=threshold_bytes, path=path, checksums=for_storage)


def decode(tree: Any, blobs: Iterable[codec.Blob]) -> Any:
    return codec.decode(tree, {blob.file_id: blob.data for blob in blobs})
