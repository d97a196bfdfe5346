"""A markdown table of engine_throughput.py results, checked against the issue's targets
(>= 1,000 images/s end to end and >= 7x the naive loop, both on one H100).

    python benchmarks/summarise_engine.py benchmarks/results/gpu/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGET_IMAGES_PER_SECOND, TARGET_RATIO = 1000, 7.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for path in sorted(args.results):
        result = json.loads(path.read_text())
        if "naive_images_per_second" in result:  # amp_numerics.json and the like: not a row
            print(row(path.stem, result))


if __name__ == "__main__":
    main()
