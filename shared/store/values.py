"""Values in MongoDB: step outputs and artifact inputs as codec trees, large ones in GridFS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bson
from bson import ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile

from shared import codec
from shared.constants import ARTIFACT_INPUTS
from shared.distributed_errors import CodecError, StoreError
from shared.outages import retried_read
from shared.settings import Settings

SPILLED = "outputs-blob"


class ValuesMixin:
    """GridFS and artifact-input access of :class:`~shared.store.Store` (which owns the client)."""

    settings: Settings
    _bucket: AsyncGridFSBucket | None

    @property
    def db(self) -> Any:
        raise NotImplementedError

    # artifact inputs ----------------------------------------------------------------------
    async def save_artifact_inputs(self, job_id: str, values: Mapping[str, Mapping[str, Any]]) -> None:
        """Store a job's artifact inputs (name -> named outputs) before the job is submitted."""
        trees: dict[str, Any] = {}
        for name, outputs in values.items():
            encoded = codec.encode(dict(outputs), threshold_bytes=self.settings.gridfs_threshold_bytes)
            await self.upload(encoded.blobs)
            trees[name] = encoded.tree
        await self.db[ARTIFACT_INPUTS].replace_one({"_id": job_id}, {"_id": job_id, "values": trees}, upsert=True)

    @retried_read
    async def load_artifact_inputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        doc = await self.db[ARTIFACT_INPUTS].find_one({"_id": job_id})
        if doc is None:
            return {}
        return {name: await self.load_outputs(tree) for name, tree in (doc.get("values") or {}).items()}

    # values -------------------------------------------------------------------------------
    async def load_outputs(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        if tree.get(codec.TAG) == SPILLED:
            tree = bson.decode(await self._download(tree["file"]))["outputs"]
        ids = codec.collect_file_ids(tree)
        blobs = dict(zip(ids, await asyncio.gather(*(self._download(i) for i in ids)))) if ids else {}
        if not tree:
            return {}
        value = codec.decode(tree, blobs)
        if not isinstance(value, dict):
            raise CodecError("", "stored step outputs are not a mapping")
        return value

    async def upload(self, blobs: Sequence[codec.Blob]) -> list[ObjectId]:
        bucket = self._require_bucket()
        await asyncio.gather(*(bucket.upload_from_stream_with_id(b.file_id, str(b.file_id), b.data, metadata=b.metadata) for b in blobs))
        return [b.file_id for b in blobs]

    async def delete_files(self, ids: Iterable[ObjectId]) -> None:
        bucket = self._require_bucket()
        for file_id in ids:
            try:
                await bucket.delete(file_id)
            except NoFile:
                pass

    async def spill(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs too big for a step document, as one GridFS file; the tree that refers to it."""
        data = bson.encode({"outputs": tree})
        blob = codec.Blob(ObjectId(), data, {"kind": SPILLED, "nbytes": len(data)})
        await self.upload([blob])
        return {codec.TAG: SPILLED, "file": blob.file_id, "nbytes": len(data)}

    async def _download(self, file_id: ObjectId) -> bytes:
        bucket = self._require_bucket()
        try:
            stream = await bucket.open_download_stream(file_id)
        except NoFile:
            raise CodecError("", f"stored file {file_id} is missing") from None
        return bytes(await stream.read())

    def _require_bucket(self) -> AsyncGridFSBucket:
        if self._bucket is None:
            raise StoreError("the store is not open")
        return self._bucket
