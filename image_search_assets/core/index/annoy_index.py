"""Annoy index build, verified publish and query.

Layout under the storage root, per category:
    indexes/<category>/versions/<version>/{index.ann, ids.parquet, manifest.json}
    indexes/<category>/CURRENT.json      -> owned by current.py (served version, pin)
A version is written in full and verified (it loads, its count matches, a query answers)
before CURRENT may move (current.advance, a compare-and-swap that never goes back a day);
a crash at any point leaves the previous version serving. The .ann file, the one large
artefact, is never held in memory: Annoy builds it in the file that becomes the stored object
(renamed into place on local storage, uploaded from disk otherwise), it is hashed in chunks
once, and verified by memory-mapping it. Retention (retention.prune_versions) keeps a window
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex

from image_search_assets.core.index import current, items, retention

# The layout is spelled once, in current.py beside CURRENT; re-exported for this module's readers.
from image_search_assets.core.index.current import category_prefix as category_prefix
from image_search_assets.core.index.current import version_dir as version_dir
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


class IndexVerificationError(RuntimeError):
    """A freshly built index failed verification; CURRENT was not moved."""


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


def _stamp(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Which file, at which state: the same stamp, the same bytes as when it was taken (a
    rename keeps it; a rewrite changes the inode or the modification time)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _hash_and_move(storage: Storage, key: str, path: Path) -> tuple[str, tuple[int, ...]]:
    """Hashes the built file, then makes it the object `key`; its checksum and stamp."""
    stamp = _stamp(path)
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
    # Creation time first after the day: prune compares it, so microseconds, not seconds.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    version = f"{day}.{stamp}.{uuid.uuid4().hex[:6]}"
    vdir = version_dir(category, version)
    started = time.perf_counter()
    import pandas as pd  # here, not at the top: readers of this module skip its import cost

    ann_key = f"{vdir}/index.ann"
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
        "sha256": {"index.ann": ann_sha256},
    }
    storage.write_parquet(f"{vdir}/ids.parquet", ids_frame)
    manifest["sha256"]["ids.parquet"] = _sha256(storage.read_bytes(f"{vdir}/ids.parquet"))
    storage.write_json(f"{vdir}/manifest.json", manifest)
    verify(storage, vdir, manifest, vectors, hashed=ann_stamp)
    if not move_current:
        return manifest
    served = current.advance(
        storage, category, version=version, day=day, count=len(ids), retention=retention
    )
    prune(storage, category, keep=retention)
    return {**manifest, "served": served.as_json()}


def load_version(storage: Storage, vdir: str) -> ServedIndex:
    manifest = storage.read_json(f"{vdir}/manifest.json")
    ids = storage.read_parquet(f"{vdir}/ids.parquet").sort_values("annoy_id")
    index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
    fd, tmp = tempfile.mkstemp(suffix=".ann")
    os.close(fd)
    # Annoy mmaps the file; load from a private copy so a later prune can't pull it away.
    with storage.local_copy(f"{vdir}/index.ann") as path:
        shutil.copyfile(path, tmp)
    index.load(tmp)
    os.unlink(tmp)  # the mapping stays valid after unlink
    return ServedIndex(index, ids["product_id"].tolist(), manifest)


def verify(
    storage: Storage,
    vdir: str,
    manifest: dict[str, Any],
    vectors: np.ndarray,
    *,
    hashed: tuple[int, ...] | None = None,
) -> None:
    """Checks the written version: checksums, count and a real query, on the stored bytes.

    The stored index.ann is hashed in chunks, unless it is the very file whose checksum the
    manifest holds (`hashed`, its stamp then: local storage renamed it into place), and the
    query runs on that same file, memory-mapped.
    """
    index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
    with storage.local_copy(f"{vdir}/index.ann") as stored:
        same = hashed is not None and _stamp(stored) == hashed
        if not same and file_sha256(stored) != manifest["sha256"]["index.ann"]:
            raise IndexVerificationError(f"{vdir}: index.ann checksum mismatch after write")
        index.load(str(stored))  # the mapping outlives a downloaded copy's deletion
    ids = storage.read_parquet(f"{vdir}/ids.parquet")["product_id"].tolist()
    served = ServedIndex(index, ids, manifest)
    if served.index.get_n_items() != manifest["count"] or len(served.ids) != manifest["count"]:
        raise IndexVerificationError(
            f"{vdir}: holds {served.index.get_n_items()} items, expected {manifest['count']}"
        )
    if manifest["count"]:
        # One tree's leaf is enough to answer: every page a query touches is mapped in, and
        # all trees' leaves are most of the file.
        got = served.index.get_nns_by_vector(vectors[0].tolist(), 1, search_k=1)
        if not got:
            raise IndexVerificationError(f"{vdir}: a query returned no neighbour")
    index.unload()


def load_current(storage: Storage, category: str) -> ServedIndex:
    """The version CURRENT points at; FileNotFoundError if the category has none yet."""
    pointer = current.read_pointer(storage, category)
    if pointer is None:
        raise FileNotFoundError(f"no published index for category {category!r}")
    return load_version(storage, version_dir(category, pointer.version))


def prune(storage: Storage, category: str, *, keep: int) -> list[str]:
    """Deletes versions outside the rollback window of `keep` days (retention.prune_versions)."""
    return retention.prune_versions(storage, category, keep_days=keep)


def current_dim(storage: Storage, category: str) -> int | None:
    """The dimension of the version CURRENT points at; None if the category has none yet."""
    pointer = current.read_pointer(storage, category)
    if pointer is None:
        return None
    return int(storage.read_json(f"{version_dir(category, pointer.version)}/manifest.json")["dim"])
