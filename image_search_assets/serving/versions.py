"""One loaded, verified index version: a memory-mapped Annoy file, its ids and a hold count.

A version is opened from the published layout (see core/index/annoy_index.py):
    indexes/<category>/versions/<version>/{index.ann, ids.parquet, manifest.json}
The id maps are numpy arrays searched by bisection, not Python dicts: building them is a few
vectorised calls, so loading a 100k-item version beside the request threads barely competes
with them for the GIL. Tables are read with pyarrow alone (pandas would cost half a second of
import in `image-search query`).
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

from image_search_assets.core.index.annoy_index import version_dir
from image_search_assets.core.storage import LocalStorage, Storage, file_sha256


class VersionRefused(RuntimeError):
    """A published version failed verification on load; it is never served."""


class IdMap:
    """Annoy id -> product id, and back by bisection over the sorted ids."""

    def __init__(self, ids: np.ndarray, values: np.ndarray | None = None) -> None:
        self.ids = ids  # position = Annoy id
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]
        self._values = values  # optional per-id payload (the day an image was stored)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, row: int) -> str:
        return str(self.ids[row])

    def __contains__(self, product_id: str) -> bool:
        return self.row(product_id) is not None

    def row(self, product_id: str) -> int | None:
        if len(product_id) > self._sorted.dtype.itemsize // 4:  # wider than every stored id
            return None
        # The needle in the array's own dtype: a wider one would make numpy cast (copy) the
        # whole sorted array on every lookup.
        needle = np.asarray(product_id, dtype=self._sorted.dtype)
        i = int(np.searchsorted(self._sorted, needle))
        if i < len(self._sorted) and self._sorted[i] == product_id:
            return int(self._order[i])
        return None

    def value(self, product_id: str) -> str | None:
        row = self.row(product_id)
        return None if row is None or self._values is None else str(self._values[row])

    def has_duplicates(self) -> bool:
        return bool(len(self._sorted) > 1 and (self._sorted[1:] == self._sorted[:-1]).any())

    def head(self, n: int) -> list[str]:
        return [str(x) for x in self.ids[:n]]


def _strings(values: list[Any]) -> np.ndarray:
    return np.asarray(values, dtype=str)  # fixed-width unicode: str() of each value


@dataclass
class LoadedVersion:
    """A served version. Read-only after load; `holders` counts queries that use it now."""

    category: str
    version: str
    manifest: dict[str, Any]
    index: AnnoyIndex
    ids: IdMap  # Annoy id <-> product id
    added_on: IdMap  # product id -> day its image was stored (for /v1/images)
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
            done = self.retired and self.holders == 0 and self._claim()
        if done:
            # The last holder is a request: unmapping and deleting the cache are not its work.
            threading.Thread(target=self._unmap, name="free-version", daemon=True).start()

    def retire(self) -> None:
        """No new query will take it; it is freed once the last holder lets go."""
        with self._lock:
            self.retired = True
            done = self.holders == 0 and self._claim()
        if done:
            self._unmap()

    def _claim(self) -> bool:
        """Marks the version released (under the lock); True for the one caller that frees it."""
        if self.released:
            return False
        self.released = True
        return True

    def _unmap(self) -> None:
        self.index.unload()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def by_item(self, row: int, k: int) -> list[tuple[str, float]]:
        found, dists = self.index.get_nns_by_item(row, k, include_distances=True)
        return [(self.ids[i], float(d)) for i, d in zip(found, dists, strict=True)]

    def row(self, product_id: str) -> int | None:
        return self.ids.row(product_id)

    def embedders(self) -> list[str]:
        """The embedder identities (JSON) its vectors were made with (the manifest's `models`)."""
        models = self.manifest.get("models")
        found = models.get("embedders") if isinstance(models, dict) else None
        return [str(e) for e in found] if isinstance(found, list) else []

    def embedder_mismatch(self, identity: str) -> str | None:
        """Why a query vector of the embedder `identity` cannot be searched here, or None."""
        served = self.embedders()
        if served == [identity]:
            return None
        built = " and ".join(served) if served else "no recorded embedder"
        return f"{self.version} was built with {built}; this service embeds with {identity}"

    def by_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        found, dists = self.index.get_nns_by_vector(vector.tolist(), k, include_distances=True)
        return [(self.ids[i], float(d)) for i, d in zip(found, dists, strict=True)]


def _annoy_path(storage: Storage, key: str, want_sha: str, cache: Path) -> tuple[Path, bool]:
    """A local path of the Annoy file whose checksum matches; (path, downloaded)."""
    if isinstance(storage, LocalStorage):
        path = Path(storage.uri(key))
        downloaded = False
    else:
        path = cache / "index.ann"
        if path.exists() and file_sha256(path) == want_sha:
            return path, True
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / ".index.ann.partial"
        partial.write_bytes(storage.read_bytes(key))
        partial.replace(path)
        downloaded = True
    if file_sha256(path) != want_sha:
        raise VersionRefused(f"{key}: checksum does not match the manifest")
    return path, downloaded


def items_key(category: str, day: str) -> str:
    """The category's items-to-date table: core.records.asset_value_key, which imports pandas
    (a test pins that the two agree)."""
    return f"assets/{category}/annoy_index/{day}.parquet"


def _columns(data: bytes, names: list[str]) -> list[list[Any]]:
    # ParquetFile.read, not pq.read_table (which goes through pyarrow.dataset), and to_pylist,
    # not to_numpy: both alternatives import pandas.
    table = pq.ParquetFile(io.BytesIO(data)).read(columns=names)
    return [table[name].to_pylist() for name in names]


def _added_on(storage: Storage, category: str, day: str) -> IdMap:
    """product id -> day its image was stored, from the category's items-to-date table."""
    key = items_key(category, day)
    if not storage.exists(key):
        return IdMap(np.asarray([], dtype=str))
    pids, days = _columns(storage.read_bytes(key), ["product_id", "added_on"])
    return IdMap(_strings(pids), _strings(days))


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
        annoy_ids, pids = _columns(ids_bytes, ["annoy_id", "product_id"])
        order = np.argsort(np.asarray(annoy_ids, dtype=np.int64), kind="stable")
        if not np.array_equal(np.asarray(annoy_ids, dtype=np.int64)[order], np.arange(len(order))):
            raise VersionRefused(f"{vdir}/ids.parquet: Annoy ids are not dense 0..n-1")
        ids = IdMap(_strings(pids)[order])
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
    if loaded.ids.has_duplicates():
        return "the id map repeats a product id"
    if count and not loaded.index.get_nns_by_item(0, 1):
        return "a query returned no neighbour"
    return None
