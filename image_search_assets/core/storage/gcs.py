"""Storage under gs://bucket/prefix, with generation-match preconditions for compare-and-swap."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from image_search_assets.core.storage.base import Storage
from image_search_assets.core.storage.errors import PreconditionFailed, names_object


class GCSStorage(Storage):
    """gs://bucket/prefix through a google-cloud-storage client (from dagster-gcp's GCSResource)."""

    # Each read waits for GCS's first byte; the client is shared by the reading threads and its
    # HTTP connection pool keeps 10 connections (urllib3's default).
    read_concurrency = 10

    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.bucket = client.bucket(bucket)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @names_object("reading")
    def read_bytes(self, key: str) -> bytes:
        return self.bucket.blob(self._name(key)).download_as_bytes()

    @names_object("writing")
    def write_bytes(self, key: str, data: bytes) -> None:
        self.bucket.blob(self._name(key)).upload_from_string(data)

    @names_object("writing")
    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.bucket.blob(self._name(key)).upload_from_filename(str(path))

    @names_object("downloading")
    def download_to(self, key: str, path: str | os.PathLike[str]) -> None:
        self.bucket.blob(self._name(key)).download_to_filename(str(path))

    @names_object("checking")
    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._name(key)).exists()

    @names_object("listing")
    def list(self, prefix: str) -> list[str]:
        full = self._name(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(b.name[cut:] for b in self.client.list_blobs(self.bucket_name, prefix=full))

    @names_object("deleting")
    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):  # deleting nothing is not an error
            self.bucket.blob(self._name(key)).delete()

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    @names_object("checking")
    def generation(self, key: str) -> int | None:
        blob = self.bucket.get_blob(self._name(key))
        return None if blob is None else blob.generation

    def write_bytes_if_generation(self, key: str, data: bytes, generation: int | None) -> None:
        from google.api_core.exceptions import PreconditionFailed as GcsPrecondition

        # GCS enforces if_generation_match server-side; the read-check first gives the same
        # answer early (and on gcp-storage-emulator, which ignores preconditions).
        if self.generation(key) != generation:
            raise PreconditionFailed(f"{self.uri(key)} changed since generation {generation}")
        try:
            # if_generation_match=0 means "only if the object does not exist yet".
            self.bucket.blob(self._name(key)).upload_from_string(
                data, if_generation_match=generation or 0
            )
        except GcsPrecondition as e:
            raise PreconditionFailed(f"{self.uri(key)} changed since {generation}") from e
