"""What each fresh process of benchmarks/index_scale.py measures: the setup, the step, bare Annoy.

Each runs in its own process (index_scale.py --child ...) so that its peak RSS is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from annoy import AnnoyIndex

from image_search_assets.core import layout
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import live_set, retention
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.storage import LocalStorage

CATEGORY = "tops"
EMBEDDER = json.dumps({"arch": "synthetic", "weights": "random", "dim": 576}, sort_keys=True)
START = date(2026, 1, 1)
SMALL = (".json", layout.IDS_FILE)


class CountingStorage(LocalStorage):
    """Local storage that counts every byte moved, per key."""

    def __init__(self, root: str | os.PathLike[str]):
        super().__init__(root)
        self.written: dict[str, int] = {}
        self.read: dict[str, int] = {}

    def _add(self, book: dict[str, int], key: str, n: int) -> None:
        book[key] = book.get(key, 0) + n

    def read_bytes(self, key: str) -> bytes:
        data = super().read_bytes(key)
        self._add(self.read, key, len(data))
        return data

    def write_bytes(self, key: str, data: bytes) -> None:
        self._add(self.written, key, len(data))
        super().write_bytes(key, data)

    def write_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._add(self.written, key, os.path.getsize(path))
        super().write_file(key, path)

    def move_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._add(self.written, key, os.path.getsize(path))
        super().move_file(key, path)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with super().local_copy(key) as path:  # counted in full: a caller may hash or copy it
            self._add(self.read, key, os.path.getsize(path))
            yield path


def day_of(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def embeddings_frame(ids: list[str], vectors: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"product_id": ids, "vector": list(vectors), "embedder": EMBEDDER})


def setup(root: str, n: int, dim: int, history: int, days: int, change: float) -> dict:
    """History partitions and live sets (not measured), then each measured day's inputs."""
    store = LocalStorage(root)
    rng = np.random.default_rng(n)
    live: pd.DataFrame | None = None
    per_day = -(-n // history)
    for h in range(history):
        ids = [f"p{i:08d}" for i in range(h * per_day, min(n, (h + 1) * per_day))]
        emb = embeddings_frame(ids, unit(rng, len(ids), dim))
        store.write_parquet(layout.asset_value_key([CATEGORY, "embeddings"], day_of(h)), emb)
        live = live_set.advance(live, emb, day_of(h)).live
        store.write_parquet(layout.asset_value_key([CATEGORY, "annoy_index"], day_of(h)), live)
    assert live is not None
    inputs = []
    next_id = n
    for d in range(history, history + days):
        alive = live["product_id"].to_numpy()
        picked = rng.choice(len(alive), size=int(n * change * 0.5), replace=False)
        resent, removed = np.split(alive[picked], [int(n * change * 0.3)])
        added = [f"p{i:08d}" for i in range(next_id, next_id + int(n * change * 0.5))]
        next_id += len(added)
        ids = [*resent.tolist(), *added]
        emb = embeddings_frame(ids, unit(rng, len(ids), dim))
        key = layout.asset_value_key([CATEGORY, "embeddings"], day_of(d))
        store.write_parquet(key, emb)
        gone = pd.DataFrame({"product_id": removed, "category": CATEGORY})
        store.write_parquet(layout.removals_key(day_of(d)), gone)
        live = live_set.advance(live, emb, day_of(d), set(removed.tolist())).live
        inputs.append(
            {
                "day": day_of(d),
                "adds": len(added),
                "resends": len(resent),
                "removals": len(removed),
                "new_vector_bytes": os.path.getsize(store.uri(key)),
            }
        )
    return {"days": inputs}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def cpu_s() -> float:  # every thread's; unlike wall time, barely moved by other processes
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + system


def step(root: str, day: str, n_trees: int, keep_days: int, vectors_out: str) -> dict:
    """The index step on day `day`, as the annoy_index asset runs it, bytes counted."""
    store = CountingStorage(root)
    rss_at_start, started, cpu_at_start = peak_rss_bytes(), time.perf_counter(), cpu_s()
    prev_day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    previous = store.read_parquet(layout.asset_value_key([CATEGORY, "annoy_index"], prev_day))
    embeddings = store.read_parquet(layout.asset_value_key([CATEGORY, "embeddings"], day))
    removed = set(store.read_parquet(layout.removals_key(day))["product_id"].astype(str))
    live_set.require_one_model(previous, embeddings, category=CATEGORY, day=day)
    live = live_set.advance(previous, embeddings, day, removed).live
    vectors = load_vectors(store, CATEGORY, live, loaded={day: embeddings})
    loaded_s = time.perf_counter() - started
    manifest = annoy.publish(
        store,
        CATEGORY,
        day,
        live["product_id"].tolist(),
        vectors,
        metric="angular",
        n_trees=n_trees,
        models={"embedders": live_set.embedders(live)},
    )
    published_s = time.perf_counter() - started
    retention.prune_category(store, CATEGORY, day, keep_days=keep_days)
    store.write_parquet(layout.asset_value_key([CATEGORY, "annoy_index"], day), live)  # IO manager
    total_s = time.perf_counter() - started
    rss, step_cpu_s = peak_rss_bytes(), cpu_s() - cpu_at_start
    np.save(vectors_out, vectors)  # for the baseline, after the measurement
    ann = sum(v for k, v in store.written.items() if k.endswith(layout.ANN_FILE))
    embeddings_read = sum(v for k, v in store.read.items() if "/embeddings/" in k)
    return {
        "items": len(live),
        "step_s": round(total_s, 3),
        "step_cpu_s": round(step_cpu_s, 3),
        "load_s": round(loaded_s, 3),
        "annoy_build_s": manifest["build_seconds"],
        "publish_rest_s": round(published_s - loaded_s - manifest["build_seconds"], 3),
        "retention_and_value_s": round(total_s - published_s, 3),
        "peak_rss_bytes": rss,
        "rss_after_imports_bytes": rss_at_start,
        "vector_bytes": int(vectors.nbytes),
        "ann_bytes": ann,
        "written_bytes": sum(store.written.values()),
        "written_small_bytes": sum(v for k, v in store.written.items() if not k.endswith(".ann")),
        "read_bytes": sum(store.read.values()),
        "read_embeddings_bytes": embeddings_read,
        "read_ann_bytes": sum(v for k, v in store.read.items() if k.endswith(layout.ANN_FILE)),
        "recall_at_10": manifest["recall_at_10"],
    }


def bare(vectors_path: str, n_trees: int, out: str) -> dict:
    """Bare Annoy on the same vectors: add_item, build on every core, save."""
    vectors = np.load(vectors_path)
    started, cpu_at_start = time.perf_counter(), cpu_s()
    index = AnnoyIndex(vectors.shape[1], "angular")
    index.set_seed(42)
    for i, v in enumerate(vectors):
        index.add_item(i, v.tolist())
    index.build(n_trees, n_jobs=-1)
    built_s = time.perf_counter() - started
    index.save(out)
    total_s = time.perf_counter() - started
    return {
        "bare_s": round(total_s, 3),
        "bare_cpu_s": round(cpu_s() - cpu_at_start, 3),
        "bare_build_only_s": round(built_s, 3),
        "bare_peak_rss_bytes": peak_rss_bytes(),
    }


def child_main(argv: list[str]) -> None:
    """One measured process: `setup`, `step` or `bare` with its arguments; prints its JSON."""
    kind, rest = argv[0], argv[1:]
    if kind == "setup":
        out = setup(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]), float(rest[5]))
    elif kind == "step":
        out = step(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
    else:
        out = bare(rest[0], int(rest[1]), rest[2])
    print(json.dumps(out))
