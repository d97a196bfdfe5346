"""Small real indexes, published with the platform's own publish function, on local or gs://."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from image_search_assets.core import layout
from image_search_assets.core.index.annoy_index import publish
from image_search_assets.core.storage import GCSStorage, LocalStorage, Storage

DIM = 16
CATEGORIES = ("tops", "pants")


def vectors_for(ids: list[str]) -> np.ndarray:
    """A unit vector per id, the same for an id whatever else is published with it."""
    out = np.stack(
        [np.random.default_rng(zlib.crc32(pid.encode())).normal(size=DIM) for pid in ids]
    )
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def publish_day(storage: Storage, category: str, day: str, ids: list[str]) -> dict[str, Any]:
    return publish(
        storage,
        category,
        day,
        ids,
        vectors_for(ids),
        metric="angular",
        n_trees=4,
        models={"embedder": "test"},
        recall_sample=20,
    )


def day_ids(category: str, day: str, n: int) -> list[str]:
    return [f"{category}-{day}-{i:03d}" for i in range(n)]


def publish_corrupt(storage: Storage, category: str, how: str) -> str:
    """A copy of CURRENT's version under a new name, damaged `how`, with CURRENT moved to it.

    flip: bytes in the middle of index.ann changed (the checksum no longer matches);
    short: index.ann cut to half, with the manifest's checksum updated to match the cut file.
    """
    import hashlib

    pointer_key = layout.pointer_key(category)
    generation = storage.generation(pointer_key)
    pointer = storage.read_json(pointer_key)
    old = layout.version_dir(category, pointer["version"])
    version = pointer["version"].rsplit(".", 1)[0] + ".bad" + how
    new = layout.version_dir(category, version)
    manifest = storage.read_json(f"{old}/manifest.json")
    data = bytearray(storage.read_bytes(f"{old}/index.ann"))
    if how == "flip":
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(255 - b for b in data[mid : mid + 64])
    else:
        data = data[: len(data) // 2]
        manifest["sha256"]["index.ann"] = hashlib.sha256(data).hexdigest()
    manifest["version"] = version
    storage.write_bytes(f"{new}/index.ann", bytes(data))
    storage.write_bytes(f"{new}/ids.parquet", storage.read_bytes(f"{old}/ids.parquet"))
    storage.write_json(f"{new}/manifest.json", manifest)
    moved = {**pointer, "version": version, "previous": [pointer["version"]]}
    storage.write_bytes_if_generation(pointer_key, _json(moved), generation)
    return version


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path) -> Storage:
    """An empty storage root: a local directory, or a bucket on the in-process GCS emulator."""
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    from google.cloud import storage as gcs

    request.getfixturevalue("gcs_emulator")
    bucket = request.getfixturevalue("gcs_bucket")
    return GCSStorage(gcs.Client(project="test"), bucket, "root")
