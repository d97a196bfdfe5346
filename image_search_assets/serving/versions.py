"""One loaded, verified index version: a memory-mapped Annoy file, its ids and a hold count.

A version is opened and checked by the one reader of published versions
(core/index/published.py). The id maps are numpy arrays searched by bisection, not Python
dicts: building them is a few vectorised calls, so loading a 100k-item version beside the
request threads barely competes with them for the GIL. Nothing here imports pandas (half a
second of import in `image-search query`). On gs:// the Annoy file is downloaded once into
`cache_dir/<category>/<version>/`, which is removed when the version is released.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex

from image_search_assets.core.index import published
from image_search_assets.core.index.published import VersionRefused as VersionRefused
from image_search_assets.core.layout import live_set_key
from image_search_assets.core.storage import Storage


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

    def head(self, n: int) -> list[str]:
        return [str(x) for x in self.ids[:n]]


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


def _added_on(storage: Storage, category: str, day: str) -> IdMap:
    """product id -> day its image was stored, from the category's items-to-date table."""
    key = live_set_key(category, day)
    if not storage.exists(key):
        return IdMap(np.asarray([], dtype=str))
    pids, days = published.columns(storage.read_bytes(key), ["product_id", "added_on"])
    return IdMap(published.strings(pids), published.strings(days))


def load_verified(storage: Storage, category: str, version: str, cache_root: Path) -> LoadedVersion:
    """Loads a version and checks it the way publish did; raises VersionRefused if it fails."""
    opened = published.open_version(storage, category, version, cache_root)
    return LoadedVersion(
        category=category,
        version=version,
        manifest=opened.manifest,
        index=opened.index,
        ids=IdMap(opened.ids),
        added_on=_added_on(storage, category, str(opened.manifest["date"])),
        loaded_at=time.time(),
        cache_dir=opened.cache_dir,
    )
