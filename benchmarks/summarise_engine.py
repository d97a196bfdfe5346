"""Markdown tables of engine_throughput.py and cold_start.py results, checked against the
targets: >= 1,000 images/s end to end and >= 7x the naive loop, both on one H100; a fresh
step process from exec to its first finished batch in <= 10 s eager and <= 15 s compiled on a
warm compile cache.

    python benchmarks/summarise_engine.py benchmarks/results/gpu/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGET_IMAGES_PER_SECOND, TARGET_RATIO = 1000, 7.0
# Seconds from exec to the first finished batch, per cold_start.py mode (a cold cache: none).
TARGET_FIRST_BATCH_S = {"eager": 10.0, "compiled_warm": 15.0}
COLD_HEADER = (
    "| result | hardware | detector | mode | import | load | compile | first-batch one-off "
    "| exec to first batch | exec to last batch | target |"
)
HEADER = (
    "| result | hardware | detector | embedder | precision | naive img/s | engine img/s "
    "| ratio | engine decode / detect / embed | GPU util | min IoU / cos | targets |"
)


def row(name: str, r: dict) -> str:
    hw, m = r["hardware"], r["models"]
    naive, engine = r["naive_images_per_second"], r["engine_images_per_second"]
    util = r.get("gpu_utilisation_during_engine") or {}
    eq = r["equivalence"]
    met = (
        engine["end_to_end"] >= TARGET_IMAGES_PER_SECOND
        and r["ratio_engine_over_naive"] >= TARGET_RATIO
    )
    cells = [
        name,
        hw["gpu"] or f"{hw['cpu']} ({hw['torch_threads']} threads)",
        f"{m['detector']} @{m['det_size']} ({m['detect_path']})",
        f"{m['embedder']} @{m['emb_size']}",
        f"{m['detect_precision']} / {m['embed_precision']}",
        f"{naive['end_to_end']:,.1f}",
        f"{engine['end_to_end']:,.1f}",
        f"{r['ratio_engine_over_naive']:.2f}x",
        f"{engine['decode']:,.0f} / {engine['detect']:,.0f} / {engine['embed']:,.0f}",
        f"{util['mean_percent']}% (max {util['max_percent']}%)" if util else "n/a",
        f"{eq['box_iou_min']} / {eq['embedding_cosine_min']}",
        "met" if met else "missed",
    ]
    return "| " + " | ".join(cells) + " |"


def cold_rows(name: str, r: dict) -> list[str]:
    hw, out = r["hardware"], []
    for run in r["runs"]:
        p, target = run.get("phases"), TARGET_FIRST_BATCH_S.get(run["mode"])
        if p is None:
            verdict = "failed"
        elif target is None:
            verdict = "n/a"
        else:
            met = p["exec_to_first_batch_s"] <= target
            verdict = f"{'met' if met else 'missed'} (<= {target:.0f} s)"
        cells = [name, hw["gpu"] or hw["cpu"], run["detector"], run["mode"]]
        keys = ("import_s", "load_s", "compile_s", "first_batch_one_off_s")
        keys += ("exec_to_first_batch_s", "exec_to_last_batch_s")
        cells += [f"{p[k]} s" if p else "-" for k in keys] + [verdict]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    results = {path.stem: json.loads(path.read_text()) for path in sorted(args.results)}
    for name, result in results.items():
        if "naive_images_per_second" in result:  # amp_numerics.json and the like: not a row
            print(row(name, result))
    cold = [cold_rows(name, r) for name, r in results.items() if "runs" in r]
    if cold:
        print("\n" + COLD_HEADER)
        print("|" + "---|" * (COLD_HEADER.count(" | ") + 1))
        print("\n".join(line for lines in cold for line in lines))


if __name__ == "__main__":
    main()
