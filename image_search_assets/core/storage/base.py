"""The storage abstraction every artefact goes through: keys, formats, the streaming hash."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from image_search_assets.core.storage.errors import names_object

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
