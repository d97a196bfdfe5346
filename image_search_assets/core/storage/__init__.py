"""One storage abstraction for every artefact: a local directory or gs://bucket/prefix.

Keys are '/'-separated relative paths. All artefacts are written in native formats (Parquet,
.npy, JSON, .ann); nothing is pickled.
"""

from __future__ import annotations

from typing import Any

from image_search_assets.core.storage.base import COPY_CHUNK, Storage, file_sha256
from image_search_assets.core.storage.errors import (
    CorruptObject,
    MissingObject,
    PreconditionFailed,
    StorageFull,
)
from image_search_assets.core.storage.gcs import GCSStorage
from image_search_assets.core.storage.local import LocalStorage

__all__ = [
    "COPY_CHUNK",
    "CorruptObject",
    "GCSStorage",
    "LocalStorage",
    "MissingObject",
    "PreconditionFailed",
    "Storage",
    "StorageFull",
    "file_sha256",
    "open_storage",
    "split_gs_uri",
]


def split_gs_uri(uri: str) -> tuple[str, str]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri}")
    return bucket, prefix.strip("/")


def open_storage(root: str, gcs_client_factory: Any = None) -> Storage:
    """A Storage for `root`: a local directory, or gs://bucket/prefix with a client factory."""
    if root.startswith("gs://"):
        if gcs_client_factory is None:
            from google.cloud import storage as gcs

            gcs_client_factory = gcs.Client
        bucket, prefix = split_gs_uri(root)
        return GCSStorage(gcs_client_factory(), bucket, prefix)
    return LocalStorage(root)
