"""Load test of `image-search serve`: real HTTP clients against 2 x 100k-item indexes.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/serve_load.py --json out.json

Builds two categories of synthetic unit vectors with the platform's publish, starts the
service as its own process on 127.0.0.1 and drives it over keep-alive connections: closed loop
at several concurrencies with wrk (else aiohttp), then open loop at fixed rates (aiohttp: wrk
has none), the last while a new version of one category is swapped in. The baseline is the
same queries as bare in-process Annoy calls on the same index, in the same run. Last, the
hostile clients of serve_hostile.py, each while a fixed-rate load runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import yaml
from serve_hostile import hostile_cases
from serve_loadgen import CATEGORIES, percentiles, qps, run_loadgen
from serve_wrk import wrk_closed

from image_search_assets.core import layout
from image_search_assets.core.index.annoy_index import publish
from image_search_assets.core.storage import LocalStorage, Storage
from image_search_assets.serving import IndexReader

HEADER_TIMEOUT_S = 10.0  # the service's default, as deployed
REPO = Path(__file__).resolve().parents[1]


def ids_of(category: str, n: int) -> list[str]:
    return [f"{category}-{i:06d}" for i in range(n)]


def build(storage: Storage, category: str, day: str, n: int, dim: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    manifest = publish(
        storage,
        category,
        day,
        ids_of(category, n),
        vectors,
        metric="angular",
        n_trees=16,
        models={"embedder": "synthetic"},
        recall_sample=100,
    )
    return manifest["version"]


def bare(storage: Storage, n: int, queries: int, k: int) -> dict[str, Any]:
    """The same product queries as direct calls on the reader's loaded Annoy index."""
    with IndexReader(storage, CATEGORIES, cache_dir=tempfile.mkdtemp()) as reader:
        reader_lat, annoy_lat = [], []
        held = reader.state("tops").served
        assert held is not None
        rows = np.random.default_rng(1).integers(0, n, queries)
        for row in rows:
            t = time.perf_counter()
            held.index.get_nns_by_item(int(row), k + 1, include_distances=True)
            annoy_lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            reader.similar_to_product(f"tops-{int(row):06d}", k)
            reader_lat.append(time.perf_counter() - t)
    return {
        "annoy_get_nns_by_item": {**percentiles(annoy_lat), "qps_1_thread": qps(annoy_lat)},
        "reader_similar_to_product": {**percentiles(reader_lat), "qps_1_thread": qps(reader_lat)},
    }


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "cpu")


def load_1min() -> float:  # other work on the shared cores shows up here
    return round(os.getloadavg()[0], 2)


# -- the service -------------------------------------------------------------------------------
def start_service(root: Path, port: int) -> subprocess.Popen:
    config = {
        "storage_root": str(root / "storage"),
        "catalog": str(root / "c.csv"),
        "categories": [{"name": c} for c in CATEGORIES],
    }
    (root / "platform.yaml").write_text(yaml.safe_dump(config))
    (root / "tmp").mkdir()  # the service's TMPDIR: an upload must write nothing here
    env = {
        **os.environ,
        "IMAGE_SEARCH_CONFIG": str(root / "platform.yaml"),
        "TMPDIR": str(root / "tmp"),
    }
    argv = [str(Path(sys.executable).parent / "image-search"), "serve", "--port", str(port)]
    argv += ["--poll-interval", "1", "--cache-dir", str(root / "cache"), "--no-image-queries"]
    argv += ["--header-timeout", str(HEADER_TIMEOUT_S)]
    log = (root / "serve.log").open("wb")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not become ready")


def served_version(url: str, category: str) -> str | None:
    return requests.get(f"{url}/readyz", timeout=5).json()["categories"][category]["version"]


def swap_under_load(url: str, storage: Storage, staged: Storage, args: Any) -> dict[str, Any]:
    """A fixed-rate load; midway a pre-built version is copied in and CURRENT moved to it."""
    proc, out = run_loadgen("open", url, args.items, args.swap_rate, args.swap_seconds, args.k)
    time.sleep(args.swap_seconds / 3)
    key = layout.pointer_key("tops")
    pointer = staged.read_json(key)
    for part in staged.list(layout.version_dir("tops", pointer["version"])):
        storage.write_bytes(part, staged.read_bytes(part))
    generation = storage.generation(key)
    moved_at = time.perf_counter()
    storage.write_bytes_if_generation(key, staged.read_bytes(key), generation)
    while served_version(url, "tops") != pointer["version"]:
        time.sleep(0.05)
    swapped_after_s = time.perf_counter() - moved_at
    result = out.get()
    proc.join()
    timeline = result.pop("timeline")
    return {
        **result,
        "swap_seen_after_s": round(swapped_after_s, 2),
        "worst_10_ms": sorted(b for _, b in timeline)[-10:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 1000])
    parser.add_argument("--swap-rate", type=float, default=200)
    parser.add_argument("--swap-seconds", type=float, default=30)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--json")
    parser.add_argument("--aiohttp-only", action="store_true", help="closed loop without wrk")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="serve-load-"))
    storage, staged = LocalStorage(root / "storage"), LocalStorage(root / "staged")
    load_at_start = load_1min()
    t = time.perf_counter()
    for seed, category in enumerate(CATEGORIES):
        build(storage, category, "2026-11-01", args.items, args.dim, seed)
    build(staged, "tops", "2026-11-02", args.items, args.dim, 99)
    print(f"built 3 x {args.items} items (dim {args.dim}) in {time.perf_counter() - t:.0f} s")
    baseline = bare(storage, args.items, 5000, args.k)
    print("bare in-process:", json.dumps(baseline))
    url = f"http://127.0.0.1:{args.port}"
    service = start_service(root, args.port)
    try:
        wait_ready(url)
        # Warm-up: the first requests fault the mapped index pages in and start the workers.
        warm, warm_out = run_loadgen("closed", url, args.items, 4, 5.0, args.k)
        warmup = {**warm_out.get(), "load_1min": load_1min()}  # read before join: it feeds it
        warm.join()
        print("warm-up:", json.dumps(warmup))
        closed = []
        for c in args.concurrency:
            if shutil.which("wrk") and not args.aiohttp_only:
                closed.append(wrk_closed(url, args.items, c, args.seconds, args.k))
            else:
                proc, out = run_loadgen("closed", url, args.items, c, args.seconds, args.k)
                closed.append({**out.get(), "generator": "aiohttp"})
                proc.join()
            closed[-1]["load_1min"] = load_1min()
            print("closed loop:", json.dumps(closed[-1]))
        fixed = []
        for rate in args.rates:
            proc, out = run_loadgen("open", url, args.items, rate, args.seconds, args.k)
            fixed.append({k: v for k, v in out.get().items() if k != "timeline"})
            proc.join()
            fixed[-1]["load_1min"] = load_1min()
            print("fixed rate:", json.dumps(fixed[-1]))
        swap = {**swap_under_load(url, storage, staged, args), "load_1min": load_1min()}
        print("swap under load:", json.dumps(swap))
        hostile = hostile_cases(
            lambda s: run_loadgen("open", url, args.items, args.swap_rate, s, args.k),
            args.port,
            root / "tmp",
            HEADER_TIMEOUT_S,
        )
    finally:
        service.terminate()
        service.wait(30)
        shutil.rmtree(root, ignore_errors=True)  # 3 x 100k-item versions: ~270 MB
    result = {
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "hardware": f"{platform.machine()} {cpu_model()}, "
        f"{os.cpu_count()} cores shared by the server, the load generator and any other work "
        "(see each phase's load_1min)",
        "items_per_category": args.items,
        "dim": args.dim,
        "k": args.k,
        "n_trees": 16,
        "load_1min_at_start": load_at_start,
        "warm_up": warmup,
        "bare_in_process": baseline,
        "http_closed_loop": closed,
        "http_fixed_rate": fixed,
        "swap_under_load": swap,
        "hostile_clients": hostile,
        "http_over_bare_p50": round(
            closed[0]["p50_ms"] / baseline["annoy_get_nns_by_item"]["p50_ms"], 1
        ),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
