"""Storage in a local directory: atomic writes through hidden temporaries renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from image_search_assets.core.storage.base import COPY_CHUNK, Storage
from image_search_assets.core.storage.errors import PreconditionFailed, names_object


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
