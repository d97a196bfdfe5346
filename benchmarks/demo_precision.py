"""precision@5 of the platform's detect -> crop -> embed path on synthetic products, with the
committed demo weights and with random weights of the same architectures.

The evaluation products are drawn fresh (seed unrelated to training) by the demo catalog's own
generator: `--per-combo` products for every (category, colour, pattern), so every query has
enough true matches to fill k. Neighbours are searched per category, as the platform's one
index per category does; a neighbour is a hit when it shares the query's colour and pattern.
The pooled figure searches all categories together and needs all three attributes to match.

    python benchmarks/demo_precision.py [--per-combo 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import time

import numpy as np
import torch
import torchvision
from PIL import Image

from image_search_assets.core import inference
from image_search_assets.core.models import ModelSpec, load_detector, load_embedder
from image_search_assets.core.retrieval_eval import precision_at_k
from image_search_assets.core.synthetic import PALETTE, PATTERNS, draw_product_with_box
from image_search_assets.settings import load_settings


def eval_products(categories, per_combo: int, seed: int):
    rows = []
    for cat in categories:
        for colour in PALETTE:
            for pattern in PATTERNS:
                for n in range(per_combo):
                    rng = random.Random(f"eval:{seed}:{cat}:{colour}:{pattern}:{n}")
                    img, box = draw_product_with_box(cat, colour, pattern, rng)
                    buf = io.BytesIO()  # the catalog's JPEG round trip
                    img.save(buf, "JPEG", quality=90)
                    rows.append((cat, colour, pattern, Image.open(buf).convert("RGB"), box))
    return rows


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(rows, settings, weights: str) -> dict:
    d, e = settings.detector, settings.embedder
    n_classes = len(settings.category_names) + 1
    detector = load_detector(ModelSpec(d.arch, weights, d.input_size, n_classes), "cpu")
    embedder = load_embedder(ModelSpec(e.arch, weights, e.input_size), "cpu")
    started = time.perf_counter()
    images = [r[3] for r in rows]
    raw = inference.detect(detector, images, d.batch_size)
    boxes = [
        inference.choose_box(
            det,
            img.width,
            img.height,
            class_ids=(settings.category_names.index(cat) + 1,),
            score_threshold=d.score_threshold,
        )
        for (cat, *_), img, det in zip(rows, images, raw, strict=True)
    ]
    crops = [inference.crop(img, b) for img, b in zip(images, boxes, strict=True)]
    vectors = inference.embed(embedder, crops, input_size=e.input_size, batch_size=e.batch_size)
    seconds = time.perf_counter() - started
    cats = [r[0] for r in rows]
    looks = [f"{r[1]}/{r[2]}" for r in rows]
    detected = [b.box_source == "detector" for b in boxes]
    return {
        "weights": weights,
        "precision_at_5_per_category": round(precision_at_k(vectors, looks, 5, groups=cats), 4),
        "precision_at_5_pooled": round(
            precision_at_k(vectors, [f"{c}/{x}" for c, x in zip(cats, looks, strict=True)], 5), 4
        ),
        "detector_box_share": round(float(np.mean(detected)), 4),
        "mean_iou_of_detector_boxes": round(
            float(
                np.mean(
                    [
                        iou((b.x1, b.y1, b.x2, b.y2), r[4])
                        for b, r, ok in zip(boxes, rows, detected, strict=True)
                        if ok
                    ]
                    or [0.0]
                )
            ),
            4,
        ),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(rows) / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-combo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = load_settings()
    if settings.detector.weights != "demo" or settings.embedder.weights != "demo":
        raise SystemExit("platform.yaml does not name the demo weights")
    rows = eval_products(settings.category_names, args.per_combo, args.seed)
    result = {
        "products": len(rows),
        "per_combo": args.per_combo,
        "detector": f"{settings.detector.arch} @ {settings.detector.input_size}px",
        "embedder": f"{settings.embedder.arch} @ {settings.embedder.input_size}px",
        "hardware": f"{platform.machine()} cpu, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "runs": [evaluate(rows, settings, w) for w in ("demo", "random")],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
