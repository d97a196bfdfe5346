"""The annoy_index step at scale: daily bytes, wall time and peak RSS against bare Annoy.

    .venv/bin/python benchmarks/index_scale.py --items 100000 --days 5 \
        --json benchmarks/results/index_scale_100k_cpu.json

One category of synthetic unit vectors (dim 576) with N items to date, stored as `--history`
daily embeddings partitions with their live sets, then `--days` measured days of a 1% change
(0.5% adds, 0.3% re-sends, 0.2% removals). Each measured day runs the step's Dagster-free code
path (what the annoy_index asset calls: load the previous live set and the day's embeddings
as the IO manager does, advance the live set, read the vectors, publish, retention, write the
live set) on a byte-counting local storage, in a fresh process so that its peak RSS
(ru_maxrss) is its own. The baseline, in another fresh process on the same vectors in the same
run: bare Annoy (add_item, build, save) with the same trees, seed and threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from annoy import AnnoyIndex

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import live_set, retention
from image_search_assets.core.records import asset_value_key, removals_key
from image_search_assets.core.storage import LocalStorage

CATEGORY = "tops"
EMBEDDER = json.dumps({"arch": "synthetic", "weights": "random", "dim": 576}, sort_keys=True)
START = date(2026, 1, 1)
SMALL = (".json", "ids.parquet")


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
        store.write_parquet(asset_value_key([CATEGORY, "embeddings"], day_of(h)), emb)
        live = live_set.advance(live, emb, day_of(h)).live
        store.write_parquet(asset_value_key([CATEGORY, "annoy_index"], day_of(h)), live)
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
        key = asset_value_key([CATEGORY, "embeddings"], day_of(d))
        store.write_parquet(key, emb)
        gone = pd.DataFrame({"product_id": removed, "category": CATEGORY})
        store.write_parquet(removals_key(day_of(d)), gone)
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
    previous = store.read_parquet(asset_value_key([CATEGORY, "annoy_index"], prev_day))
    embeddings = store.read_parquet(asset_value_key([CATEGORY, "embeddings"], day))
    removed = set(store.read_parquet(removals_key(day))["product_id"].astype(str))
    live_set.require_one_model(previous, embeddings, category=CATEGORY, day=day)
    live = live_set.advance(previous, embeddings, day, removed).live
    vectors = live_set.load_vectors(store, CATEGORY, live, loaded={day: embeddings})
    loaded_s = time.perf_counter() - started
    manifest = annoy.publish(
        store, CATEGORY, day, live["product_id"].tolist(), vectors, metric="angular",
        n_trees=n_trees, models={"embedders": live_set.embedders(live)},
    )  # fmt: skip
    published_s = time.perf_counter() - started
    retention.prune_category(store, CATEGORY, day, keep_days=keep_days)
    store.write_parquet(asset_value_key([CATEGORY, "annoy_index"], day), live)  # IO manager
    total_s = time.perf_counter() - started
    rss, step_cpu_s = peak_rss_bytes(), cpu_s() - cpu_at_start
    np.save(vectors_out, vectors)  # for the baseline, after the measurement
    ann = sum(v for k, v in store.written.items() if k.endswith("index.ann"))
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
        "read_ann_bytes": sum(v for k, v in store.read.items() if k.endswith("index.ann")),
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
    return {"bare_s": round(total_s, 3), "bare_cpu_s": round(cpu_s() - cpu_at_start, 3),
            "bare_build_only_s": round(built_s, 3),
            "bare_peak_rss_bytes": peak_rss_bytes()}  # fmt: skip


def child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hardware() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text()
    cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "machine": f"{os.cpu_count()}-core {platform.machine()} VM, no GPU",
        "cpu": cpu,
        "cpu_flags": sorted({"avx2", "avx512f", "sha_ni"} & set(info.split())),
        "memory_gib": round(int(mem) / 2**20, 1),
        "load_average_at_start": os.getloadavg(),
        "versions": {
            "python": platform.python_version(),
            **{p: metadata.version(p) for p in ("numpy", "pandas", "pyarrow", "annoy")},
        },
    }


def run_size(n: int, args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        root = f"{tmp}/root"
        made = child("setup", root, str(n), str(args.dim), str(args.history), str(args.days),
                     str(args.change))  # fmt: skip
        for day in made["days"]:
            vec = f"{tmp}/vectors.npy"
            row = {"n_to_date": n, "load_average_1m": os.getloadavg()[0], **day}
            row |= child("step", root, day["day"], str(args.n_trees), str(args.keep_days), vec)
            row |= child("bare", vec, str(args.n_trees), f"{tmp}/bare.ann")
            small = row["written_small_bytes"]  # manifests, ids, CURRENT, the live set
            bound = row["new_vector_bytes"] + row["ann_bytes"] + small
            row["written_with_vectors_bytes"] = row["written_bytes"] + row["new_vector_bytes"]
            row["ratio_step_vs_bare"] = round(row["step_s"] / row["bare_s"], 3)
            row["ratio_step_vs_bare_cpu"] = round(row["step_cpu_s"] / row["bare_cpu_s"], 3)
            row["ratio_rss_vs_vectors_plus_ann"] = round(
                row["peak_rss_bytes"] / (row["vector_bytes"] + row["ann_bytes"]), 3
            )
            row["ratio_rss_net_vs_vectors_plus_ann"] = round(
                (row["peak_rss_bytes"] - row["rss_after_imports_bytes"])
                / (row["vector_bytes"] + row["ann_bytes"]),
                3,
            )
            row["ratio_written_vs_bound"] = round(row["written_with_vectors_bytes"] / bound, 3)
            row["ratio_read_beyond_build_vs_bound"] = round(
                (row["read_bytes"] - row["read_embeddings_bytes"]) / bound, 3
            )
            rows.append(row)
            print(summary(row), flush=True)
    return rows


def summary(r: dict) -> str:
    mb = 1e6
    rest = r["publish_rest_s"] + r["retention_and_value_s"]
    return (
        f"N={r['n_to_date']:>8} {r['day']}  step {r['step_s']:7.1f} s (load {r['load_s']:.1f}, "
        f"annoy {r['annoy_build_s']:.1f}, rest {rest:.1f})"
        f"  bare {r['bare_s']:7.1f} s  x{r['ratio_step_vs_bare']:.2f} | RSS "
        f"{r['peak_rss_bytes'] / mb:7.0f} MB (bare {r['bare_peak_rss_bytes'] / mb:.0f}) "
        f"x{r['ratio_rss_vs_vectors_plus_ann']:.2f} of vectors+ann "
        f"(x{r['ratio_rss_net_vs_vectors_plus_ann']:.2f} net of imports) | written "
        f"{r['written_with_vectors_bytes'] / mb:.1f} MB x{r['ratio_written_vs_bound']:.2f} of bound"
        f" | read {r['read_bytes'] / mb:.1f} MB ({r['read_embeddings_bytes'] / mb:.1f} vectors)"
    )


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Min, median, max over a size's days; a day's step and baseline ran back to back."""
    keys = [k for k in rows[0] if k.endswith("_s") or k.startswith(("ratio_step", "ratio_rss"))]
    return {k: {"min": min(v), "median": round(float(np.median(v)), 3), "max": max(v)}
            for k in keys if (v := [r[k] for r in rows])}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "setup":
            out = setup(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]),
                        float(rest[5]))  # fmt: skip
        elif kind == "step":
            out = step(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
        else:
            out = bare(rest[0], int(rest[1]), rest[2])
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description="The annoy_index step at scale.")
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=3, help="measured days per size")
    parser.add_argument("--history", type=int, default=15, help="days of partitions before")
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--n-trees", type=int, default=16)
    parser.add_argument("--keep-days", type=int, default=14)
    parser.add_argument("--scratch", default=None, help="directory for the storage roots")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {"hardware": hardware(), "config": vars(args) | {"json": None}}
    print(json.dumps(report["hardware"]), flush=True)
    report["rows"] = [row for n in args.items for row in run_size(n, args)]
    report["summary"] = {str(n): summarise([r for r in report["rows"] if r["n_to_date"] == n])
                         for n in args.items}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
