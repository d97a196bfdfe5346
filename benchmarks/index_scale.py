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
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from index_scale_work import child_main  # beside this script


def child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hardware() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
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
        made = child(
            "setup",
            root,
            str(n),
            str(args.dim),
            str(args.history),
            str(args.days),
            str(args.change),
        )
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
    return {
        k: {"min": min(v), "median": round(float(np.median(v)), 3), "max": max(v)}
        for k in keys
        if (v := [r[k] for r in rows])
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
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
    report["summary"] = {
        str(n): summarise([r for r in report["rows"] if r["n_to_date"] == n]) for n in args.items
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
