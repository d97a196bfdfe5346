"""Annoy index build, verified publish and query.

Layout under the storage root, per category:
    indexes/<category>/versions/<version>/{index.ann, ids.parquet, manifest.json}
    indexes/<category>/CURRENT.json      -> owned by current.py (served version, pin)
A version is written in full and verified (it loads, its count matches, a query answers)
before CURRENT may move (current.advance, a compare-and-swap that never goes back a day);
a crash at any point leaves the previous version serving. The .ann file, the one large
artefact, is never held in memory: it is hashed in chunks, uploaded from disk and verified by
memory-mapping it. Retention (retention.prune_versions) keeps a window of days for rollback
and deletes what a crashed publish left.
"""

from __future__ import annotations

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

from image_search_assets.core.index import current, retention

# The layout is spelled once, in current.py beside CURRENT; re-exported for this module's readers.
from image_search_assets.core.index.current import category_prefix as category_prefix
from image_search_assets.core.index.current import version_dir as version_dir
from image_search_assets.core.storage import Storage, file_sha256

# Exact search compares this many queries at once: a (queries x items) similarity block of
# 16 x 1M floats is 64 MB, where all 200 sampled queries at once would take 2.4 GB.
EXACT_QUERY_BLOCK = 16


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


def build_index(vectors: np.ndarray, *, metric: str, n_trees: int, seed: int = 42) -> AnnoyIndex:
    """An Annoy index over dense ids 0..n-1, built on every core."""
    index = AnnoyIndex(int(vectors.shape[1]), metric)  # type: ignore[arg-type]  # checked by Annoy
    index.set_seed(seed)
    for i, v in enumerate(vectors):
        index.add_item(i, v.tolist())
    index.build(n_trees, n_jobs=-1)
    return index


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k by cosine (vectors are unit-norm), the recall reference."""
    k = min(k, vectors.shape[0])
    blocks = [np.zeros((0, k), np.int64)]
    for start in range(0, len(queries), EXACT_QUERY_BLOCK):
        sims = queries[start : start + EXACT_QUERY_BLOCK] @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        blocks.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1))
    return np.concatenate(blocks)


def recall_at_k(
    index: AnnoyIndex,
    vectors: np.ndarray,
    *,
    k: int = 10,
    sample: int = 200,
    search_k: int = -1,
    seed: int = 0,
) -> float:
    """Mean recall@k of Annoy against exact search, over a sample of the indexed vectors."""
    n = vectors.shape[0]
    if n == 0:
        return 1.0
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    truth = exact_neighbours(vectors, vectors[rows], k)
    hits = 0
    for row, want in zip(rows, truth, strict=True):
        got = index.get_nns_by_item(int(row), len(want), search_k=search_k)
        hits += len(set(got) & set(want.tolist()))
    return hits / truth.size


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_and_write(storage: Storage, key: str, path: Path) -> str:
    digest = file_sha256(path)
    storage.write_file(key, path)
    return digest


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

    with tempfile.TemporaryDirectory() as tmp:
        ann_path = Path(tmp) / "index.ann"
        index = build_index(vectors, metric=metric, n_trees=n_trees)
        build_s = time.perf_counter() - started
        index.save(str(ann_path))  # Annoy frees its build memory and mmaps the saved file
        with ThreadPoolExecutor(1) as pool:
            # Hashing and uploading the file wait on disk or network, recall on the CPU: the
            # two overlap (both release the GIL). A failed upload raises from result().
            upload = pool.submit(_hash_and_write, storage, f"{vdir}/index.ann", ann_path)
            recall = recall_at_k(index, vectors, sample=recall_sample)
            ann_sha256 = upload.result()
        index.unload()
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
            "build_seconds": round(build_s, 3),
            "sha256": {"index.ann": ann_sha256},
        }
        storage.write_parquet(f"{vdir}/ids.parquet", ids_frame)
        manifest["sha256"]["ids.parquet"] = _sha256(storage.read_bytes(f"{vdir}/ids.parquet"))
        storage.write_json(f"{vdir}/manifest.json", manifest)
        verify(storage, vdir, manifest, vectors, built=ann_path)
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
    built: str | os.PathLike[str] | None = None,
) -> None:
    """Checks the written version: checksums, count and a real query.

    The stored index.ann is hashed in chunks. `built` is the local file it was uploaded from:
    once the checksums agree it holds the same bytes, so it is memory-mapped for the query
    rather than copied back from storage.
    """
    with storage.local_copy(f"{vdir}/index.ann") as stored:
        if file_sha256(stored) != manifest["sha256"]["index.ann"]:
            raise IndexVerificationError(f"{vdir}: index.ann checksum mismatch after write")
    if built is None:
        served = load_version(storage, vdir)
    else:
        index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
        index.load(str(built))
        ids = storage.read_parquet(f"{vdir}/ids.parquet")["product_id"].tolist()
        served = ServedIndex(index, ids, manifest)
    if served.index.get_n_items() != manifest["count"] or len(served.ids) != manifest["count"]:
        raise IndexVerificationError(
            f"{vdir}: holds {served.index.get_n_items()} items, expected {manifest['count']}"
        )
    if manifest["count"]:
        got = served.index.get_nns_by_vector(vectors[0].tolist(), 1)
        if not got:
            raise IndexVerificationError(f"{vdir}: a query returned no neighbour")


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
