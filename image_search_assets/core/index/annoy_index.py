"""Annoy index build, verified publish and query.

A version (its files in core/layout.py) is written in full and verified by the one reader of
published versions (published.py: checksums, count, a query answers) before CURRENT may move
(current.advance, a compare-and-swap that never goes back a day); a crash at any point leaves
the previous version serving. The .ann file, the one large artefact, is never held in memory:
Annoy builds it in the file that becomes the stored object (renamed into place on local
storage, uploaded from disk otherwise), it is hashed in chunks once, and verified by
memory-mapping it. Retention (retention.prune_versions) keeps a window
of days for rollback and deletes what a crashed publish left.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex

from image_search_assets.core import layout
from image_search_assets.core.index import current, items, published, retention
from image_search_assets.core.index.recall import (
    RECALL_K,
    annoy_answers,
    exact_neighbours,
    publish_recall_queries,
    recall_of,
    recall_rows,
)
from image_search_assets.core.index.recall import recall_at_k as recall_at_k  # checks' import
from image_search_assets.core.storage import Storage, StorageFull, file_sha256


class IndexVerificationError(published.VersionRefused):
    """A freshly built (or rollback's) version failed verification; CURRENT was not moved."""


@dataclass(frozen=True)
class ServedIndex:
    index: AnnoyIndex
    ids: list[str]
    manifest: dict[str, Any]

    def query_vector(self, vector: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        found, dists = self.index.get_nns_by_vector(vector.tolist(), k, include_distances=True)
        return [(self.ids[i], float(d)) for i, d in zip(found, dists, strict=True)]


def build_index(
    vectors: np.ndarray,
    *,
    metric: str,
    n_trees: int,
    seed: int = 42,
    path: str | os.PathLike[str] | None = None,
) -> AnnoyIndex:
    """An Annoy index over dense ids 0..n-1, built on every core.

    With `path` the index is built in that file (Annoy's on-disk build): it is never copied
    out of memory by a save, and the items are written into it as whole blocks
    (core/index/items.py) rather than one Python list per vector.
    """
    index = AnnoyIndex(int(vectors.shape[1]), metric)  # type: ignore[arg-type]  # checked by Annoy
    index.set_seed(seed)
    if path is None:
        for i, v in enumerate(vectors):
            index.add_item(i, v.tolist())
    else:
        index.on_disk_build(str(path))
        items.add_items(index, Path(path), vectors, metric)
    index.build(n_trees, n_jobs=-1)
    return index


def _require_room(storage: Storage, key: str, path: Path, n: int, dim: int, n_trees: int) -> None:
    """Fails with StorageFull unless the disk holds what the on-disk build will map.

    Annoy builds in a sparse, memory-mapped file: on a full disk the first write to a page
    that finds no block kills the process with SIGBUS, where a write() would have raised.
    The estimate bounds the nodes (items, and each tree's splits) with Annoy's 1.3x growth.
    """
    node = 16 + 4 * dim
    nodes = n + 2 * n_trees * (2 * n // (dim + 2) + 1)
    needed = int(node * nodes * 1.3) + (1 << 20)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        cause = OSError(
            errno.ENOSPC,
            f"No space left on device: building the index needs about {needed >> 20} MiB, "
            f"{free >> 20} MiB free",
        )
        raise StorageFull("writing", key, storage.uri(key), cause)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_and_move(storage: Storage, key: str, path: Path) -> tuple[str, tuple[int, ...]]:
    """Hashes the built file, then makes it the object `key`; its checksum and stamp."""
    stamp = published.stamp(path)
    digest = file_sha256(path)
    storage.move_file(key, path)
    return digest, stamp


def publish(
    storage: Storage,
    category: str,
    day: str,
    ids: list[str],
    vectors: np.ndarray,
    *,
    metric: str,
    n_trees: int,
    models: dict[str, Any],
    recall_sample: int = 200,
    retention: int = 7,
    move_current: bool = True,
) -> dict[str, Any]:
    """Builds, writes and verifies a new version, then offers it to CURRENT; returns its manifest.

    With `move_current`, current.advance decides (a day older than the served one, or a pin,
    leaves CURRENT where it is), versions are pruned, and the returned dict (not the stored
    manifest) gains "served": {"moved", "reason", "version"}. Without it nothing but the
    version is written: the caller advances CURRENT and prunes when its own work is done.
    """
    if retention < 1:
        raise ValueError("retention must keep at least the current version")
    version = layout.version_name(day, datetime.now(UTC), uuid.uuid4().hex[:6])
    started = time.perf_counter()
    import pandas as pd  # here, not at the top: readers of this module skip its import cost

    ann_key = layout.ann_key(category, version)
    n, dim = vectors.shape
    rows = recall_rows(n, publish_recall_queries(n, dim, recall_sample))
    with storage.staged_path(ann_key) as ann_path, ThreadPoolExecutor(1) as pool:
        _require_room(storage, ann_key, Path(ann_path), n, dim, n_trees)
        # Built in the file that becomes the stored object: on local storage a rename, with no
        # save, copy or second read.
        index = build_index(vectors, metric=metric, n_trees=n_trees, path=ann_path)
        build_s = time.perf_counter() - started
        # Annoy's answers for the recall sample come from the build's own mapping; the exact
        # reference is searched after it is unmapped, so that the two never add up (the step's
        # peak memory is the build's). Meanwhile the file is hashed and moved into place on
        # the other core (both release the GIL).
        answers = annoy_answers(index, rows, RECALL_K)
        index.unload()
        moved = pool.submit(_hash_and_move, storage, ann_key, ann_path)
        recall = recall_of(answers, exact_neighbours(vectors, vectors[rows], RECALL_K))
        ann_sha256, ann_stamp = moved.result()
    ids_frame = pd.DataFrame({"annoy_id": np.arange(len(ids)), "product_id": ids})
    manifest = {
        "category": category,
        "date": day,
        "version": version,
        "count": len(ids),
        "dim": int(vectors.shape[1]),
        "metric": metric,
        "n_trees": n_trees,
        "models": models,
        "recall_at_10": recall,
        "recall_queries": len(rows),
        "build_seconds": round(build_s, 3),
        "sha256": {layout.ANN_FILE: ann_sha256},
    }
    ids_key = layout.ids_key(category, version)
    storage.write_parquet(ids_key, ids_frame)
    manifest["sha256"][layout.IDS_FILE] = _sha256(storage.read_bytes(ids_key))
    storage.write_json(layout.manifest_key(category, version), manifest)
    verify(storage, category, version, hashed=ann_stamp)
    if not move_current:
        return manifest
    served = current.advance(
        storage, category, version=version, day=day, count=len(ids), retention=retention
    )
    prune(storage, category, keep=retention)
    return {**manifest, "served": served.as_json()}


def load_version(storage: Storage, category: str, version: str) -> ServedIndex:
    """A private, verified copy of a version (published.open_version), for offline readers."""
    with tempfile.TemporaryDirectory() as cache:
        opened = published.open_version(storage, category, version, Path(cache), private=True)
    return ServedIndex(opened.index, [str(x) for x in opened.ids], opened.manifest)


def verify(
    storage: Storage, category: str, version: str, *, hashed: tuple[int, ...] | None = None
) -> None:
    """Checks a written version with the one reader (published.open_version), on the stored
    bytes; IndexVerificationError if it fails.

    The stored index.ann is hashed in chunks, unless it is the very file whose checksum the
    manifest holds (`hashed`, its stamp then: local storage renamed it into place), and the
    query runs on that same file, memory-mapped.
    """
    with tempfile.TemporaryDirectory() as cache:
        try:
            opened = published.open_version(storage, category, version, Path(cache), hashed=hashed)
        except published.VersionRefused as e:
            raise IndexVerificationError(str(e)) from e
        opened.index.unload()


def load_current(storage: Storage, category: str) -> ServedIndex:
    """The version CURRENT points at; FileNotFoundError if the category has none yet."""
    pointer = current.read_pointer(storage, category)
    if pointer is None:
        raise FileNotFoundError(f"no published index for category {category!r}")
    return load_version(storage, category, pointer.version)


def served_indexes(storage: Storage, categories: Sequence[str]) -> dict[str, ServedIndex]:
    """A private in-memory copy of every category's CURRENT index (offline evaluation)."""
    served = {}
    for cat in categories:
        try:
            served[cat] = load_current(storage, cat)
        except FileNotFoundError:
            continue
    return served


def prune(storage: Storage, category: str, *, keep: int) -> list[str]:
    """Deletes versions outside the rollback window of `keep` days (retention.prune_versions)."""
    return retention.prune_versions(storage, category, keep_days=keep)


def current_dim(storage: Storage, category: str) -> int | None:
    """The dimension of the version CURRENT points at; None if the category has none yet."""
    pointer = current.read_pointer(storage, category)
    if pointer is None:
        return None
    return int(published.read_manifest(storage, category, pointer.version)["dim"])
