"""One storage abstraction for every artefact: a local directory or gs://bucket/prefix.

Keys are '/'-separated relative paths. All artefacts are written in native formats (Parquet,
.npy, JSON, .ann); nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# PreconditionFailed stays importable from here, where its callers know it.
from image_search_assets.core.storage_errors import PreconditionFailed, names_object

if TYPE_CHECKING:
    # pandas costs half a second to import; readers that never touch a table skip it.
    import pandas as pd


# Streaming copies move large files (Annoy indexes) in pieces this big, never whole.
COPY_CHUNK = 8 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in COPY_CHUNK pieces."""
    digest, buf = hashlib.sha256(), memoryview(bytearray(COPY_CHUNK))
    with open(path, "rb", buffering=0) as f:  # one buffer: no 8 MB object per chunk left
        while n := f.readinto(buf):  # behind in the heap of each thread that hashes
            digest.update(buf[:n])
    return digest.hexdigest()


class Storage(ABC):
    """Byte-level operations plus typed helpers shared by every backend."""

    # Reads worth running at once (pipeline.read_images): 1 where a read costs no waiting.
    read_concurrency: int = 1

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes the whole object; readers never see a partial object."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under prefix (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def generation(self, key: str) -> int | None:
        """An opaque version of the object (None if absent), for compare-and-swap writes."""

    @abstractmethod
    def write_bytes_if_generation(self, key: str, data: bytes, generation: int | None) -> None:
        """Writes only if the object is still at `generation`; else raises PreconditionFailed."""

    # -- typed helpers -----------------------------------------------------------------------
    @names_object("reading JSON")
    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any) -> None:
        self.write_bytes(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    @names_object("reading Parquet")
    def read_parquet(self, key: str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(key)))

    def write_parquet(self, key: str, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self.write_bytes(key, buf.getvalue())

    @names_object("reading .npy")
    def read_npy(self, key: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(key)), allow_pickle=False)

    def write_npy(self, key: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        self.write_bytes(key, buf.getvalue())

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.delete(key)

    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Writes a local file's content as the object; backends override it to stream."""
        self.write_bytes(key, Path(path).read_bytes())

    def download_to(self, key: str, path: str | os.PathLike[str]) -> None:
        """Writes the object into a local file; backends override it to stream."""
        Path(path).write_bytes(self.read_bytes(key))

    def leftovers(self, prefix: str, *, older_than_s: float) -> list[str]:
        """Keys of partial writes an interrupted writer left under prefix, older than the age.

        An object store writes a whole object or none: nothing is ever left half-written.
        """
        return []

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file holding the object, for libraries that need a path (Annoy)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(key).name
            self.download_to(key, path)
            yield path

    @contextmanager
    def staged_path(self, key: str) -> Iterator[Path]:
        """A local path to build the object at, for move_file; a left-over is deleted."""
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / Path(key).name

    def move_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Writes a local file as the object, durably, and takes the file (gone after)."""
        self.write_file(key, path)
        Path(path).unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the storage root")
        return path

    @names_object("reading")
    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    @names_object("writing")
    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @names_object("writing")
    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f, COPY_CHUNK)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    @names_object("downloading")
    def download_to(self, key: str, path: str | os.PathLike[str]) -> None:
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @names_object("listing")
    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    @names_object("deleting")
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def leftovers(self, prefix: str, *, older_than_s: float) -> list[str]:
        # write_bytes/write_file go through hidden temporaries renamed into place; a killed or
        # failed write leaves its temporary behind, which list() never shows.
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        cutoff = time.time() - older_than_s
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob(".*")
            if p.is_file() and p.stat().st_mtime < cutoff
        )

    @names_object("deleting")
    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def generation(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_mtime_ns if path.exists() else None

    def write_bytes_if_generation(self, key: str, data: bytes, generation: int | None) -> None:
        # Single-writer per category (one run per day is enforced upstream); the check still
        # catches a concurrent writer between our read and our replace in most interleavings.
        if self.generation(key) != generation:
            raise PreconditionFailed(f"{self.uri(key)} changed since generation {generation}")
        self.write_bytes(key, data)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self._path(key)

    @contextmanager
    def staged_path(self, key: str) -> Iterator[Path]:
        target = self._path(key)  # beside it, so that move_file renames; a dot name: unlisted
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}")
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def move_file(self, key: str, path: str | os.PathLike[str]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.stat(path).st_dev != os.stat(target.parent).st_dev:  # no rename across devices
            return super().move_file(key, path)
        with open(path, "rb") as f:  # durable before it is visible; then a rename, no copy
            os.fsync(f.fileno())
        os.replace(path, target)


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
