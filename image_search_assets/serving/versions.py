"""One loaded, verified index version: a memory-mapped Annoy file, its ids and a hold count.

A version is opened from the published layout (see core/index/annoy_index.py):
    indexes/<category>/versions/<version>/{index.ann, ids.parquet, manifest.json}
On local storage the Annoy file is mapped where it lies (a later prune unlinks it, which leaves
the mapping valid). On gs:// it is downloaded once into `cache_dir/<category>/<version>/` and
mapped from there, so a restart with the same cache re-downloads nothing whose checksum holds.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from annoy import AnnoyIndex

from image_search_assets.core.index.annoy_index import category_prefix
from image_search_assets.core.storage import LocalStorage, Storage

_CHUNK = 1 << 20


class VersionRefused(RuntimeError):
    """A published version failed verification on load; it is never served."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedVersion:
    """A served version. Read-only after load; `holders` counts queries that use it now."""

    category: str
    version: str
    manifest: dict[str, Any]
    index: AnnoyIndex
    ids: list[str]
    rows: dict[str, int]  # product id -> Annoy id
    added_on: dict[str, str]  # product id -> day its image was stored (for /v1/images)
    loaded_at: float
    cache_dir: Path | None = None  # removed on release (gs:// downloads only)
    holders: int = 0
    retired: bool = False
    released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def day(self) -> str:
        return str(self.manifest["date"])

    def acquire(self) -> None:
        with self._lock:
            if self.released:
                raise RuntimeError(f"{self.category} {self.version} was already released")
            self.holders += 1

    def release(self) -> None:
        with self._lock:
            self.holders -= 1
            done = self.retired and self.holders == 0
        if done:
            self._free()

    def retire(self) -> None:
        """No new query will take it; it is freed once the last holder lets go."""
        with self._lock:
            self.retired = True
            done = self.holders == 0
        if done:
            self._free()

    def _free(self) -> None:
        with self._lock:
            if self.released:
                return
            self.released = True
        self.index.unload()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def by_item(self, row: int, k: int) -> list[tuple[str, float]]:
        found, dists = self.index.get_nns_by_item(row, k, include_distances=True)
        return [(self.ids[i], float(d)) for i, d in zip(found, dists, strict=True)]

    def by_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        found, dists = self.index.get_nns_by_vector(vector.tolist(), k, include_distances=True)
        return [(self.ids[i], float(d)) for i, d in zip(found, dists, strict=True)]


def version_dir(category: str, version: str) -> str:
    return f"{category_prefix(category)}/versions/{version}"


def _annoy_path(storage: Storage, key: str, want_sha: str, cache: Path) -> tuple[Path, bool]:
    """A local path of the Annoy file whose checksum matches; (path, downloaded)."""
    if isinstance(storage, LocalStorage):
        path = Path(storage.uri(key))
        downloaded = False
    else:
        path = cache / "index.ann"
        if path.exists() and _file_sha256(path) == want_sha:
            return path, True
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / ".index.ann.partial"
        partial.write_bytes(storage.read_bytes(key))
        partial.replace(path)
        downloaded = True
    if _file_sha256(path) != want_sha:
        raise VersionRefused(f"{key}: checksum does not match the manifest")
    return path, downloaded


def items_key(category: str, day: str) -> str:
    """The category's items-to-date table: core.records.asset_value_key, which imports pandas
    (a test pins that the two agree)."""
    return f"assets/{category}/annoy_index/{day}.parquet"


def _added_on(storage: Storage, category: str, day: str) -> dict[str, str]:
    """product id -> day its image was stored, from the category's items-to-date table."""
    key = items_key(category, day)
    if not storage.exists(key):
        return {}
    table = pq.read_table(io.BytesIO(storage.read_bytes(key)), columns=["product_id", "added_on"])
    return dict(zip(table["product_id"].to_pylist(), table["added_on"].to_pylist(), strict=True))


def load_verified(storage: Storage, category: str, version: str, cache_root: Path) -> LoadedVersion:
    """Loads a version and checks it the way publish did; raises VersionRefused if it fails."""
    vdir = version_dir(category, version)
    cache = cache_root / category / version
    try:
        manifest = storage.read_json(f"{vdir}/manifest.json")
        sums = manifest["sha256"]
        ids_bytes = storage.read_bytes(f"{vdir}/ids.parquet")
        if hashlib.sha256(ids_bytes).hexdigest() != sums["ids.parquet"]:
            raise VersionRefused(f"{vdir}/ids.parquet: checksum does not match the manifest")
        table = pq.read_table(io.BytesIO(ids_bytes)).sort_by("annoy_id")
        ids = [str(p) for p in table["product_id"].to_pylist()]
        annoy_ids = table["annoy_id"].to_pylist()
        if annoy_ids != list(range(len(ids))):
            raise VersionRefused(f"{vdir}/ids.parquet: Annoy ids are not dense 0..n-1")
        path, downloaded = _annoy_path(storage, f"{vdir}/index.ann", sums["index.ann"], cache)
        index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
        index.load(str(path))  # mmap: pages come in as queries touch them
    except VersionRefused:
        shutil.rmtree(cache, ignore_errors=True)
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        shutil.rmtree(cache, ignore_errors=True)
        raise VersionRefused(f"{vdir}: {type(e).__name__}: {e}") from e
    loaded = LoadedVersion(
        category=category,
        version=version,
        manifest=manifest,
        index=index,
        ids=ids,
        rows={pid: i for i, pid in enumerate(ids)},
        added_on=_added_on(storage, category, str(manifest["date"])),
        loaded_at=time.time(),
        cache_dir=cache if downloaded else None,
    )
    problem = _check(loaded)
    if problem:
        loaded.retire()
        raise VersionRefused(f"{vdir}: {problem}")
    return loaded


def _check(loaded: LoadedVersion) -> str | None:
    count = int(loaded.manifest["count"])
    if loaded.index.get_n_items() != count or len(loaded.ids) != count:
        return f"holds {loaded.index.get_n_items()} items and {len(loaded.ids)} ids, not {count}"
    if len(loaded.rows) != count:
        return "the id map repeats a product id"
    if count and not loaded.index.get_nns_by_item(0, 1):
        return "a query returned no neighbour"
    return None
