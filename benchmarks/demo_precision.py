"""precision@5 of the platform's detect -> crop -> embed path on synthetic products, with the
committed demo weights and with random weights of the same architectures.

The evaluation products are drawn fresh (a seed unrelated to training) by the demo catalog's
own generator: `--per-combo` products for every (category, colour, pattern), so every query has
enough true matches to fill k. Neighbours are searched per category, as the platform's one
index per category does; a hit shares the query's colour and pattern. The pooled figure
searches all categories together and needs all three to match.

    python benchmarks/demo_precision.py [--per-combo 6] [--json out.json]

`--served` instead asks the indexes that `image-search demo` published (the configured storage
and catalog; run it in the demo's directory): each indexed product's 5 nearest in its
category's Annoy index, a hit sharing its colour and pattern. To compare random weights there,
rerun the demo with a config naming `weights: random` (IMAGE_SEARCH_CONFIG).
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import replace

import torch
import torchvision

from image_search_assets.core.inference.models import ModelSpec
from image_search_assets.demo.retrieval_eval import draw_eval_set, evaluate_weights
from image_search_assets.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--per-combo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--json")
    parser.add_argument("--served", action="store_true", help="measure the demo's indexes")
    args = parser.parse_args()
    settings = load_settings()
    if args.served:
        return served(settings, args.json)
    d, e = settings.detector, settings.embedder
    if d.weights != "demo" or e.weights != "demo":
        raise SystemExit("platform.yaml does not name the demo weights")
    products = draw_eval_set(settings.category_names, args.per_combo, seed=args.seed)
    n_classes = len(settings.category_names) + 1
    runs = {}
    for weights in ("demo", "random"):
        runs[weights] = evaluate_weights(
            products,
            settings.category_names,
            ModelSpec.from_config(replace(d, weights=weights), n_classes),
            ModelSpec.from_config(replace(e, weights=weights)),
            score_threshold=d.score_threshold,
        )
        print(weights, {k: round(v, 4) for k, v in runs[weights].items()}, flush=True)
    result = {
        "products": len(products),
        "per_combo": args.per_combo,
        "seed": args.seed,
        "detector": f"{d.arch} @ {d.input_size}px, score_threshold {d.score_threshold}",
        "embedder": f"{e.arch} @ {e.input_size}px",
        "hardware": f"{platform.machine()} cpu, {torch.get_num_threads()} threads, no GPU",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "runs": {w: {k: round(v, 4) for k, v in r.items()} for w, r in runs.items()},
    }
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")


def served(settings, json_path: str | None) -> None:
    from image_search_assets.cli import _storage
    from image_search_assets.core.index.annoy_index import served_indexes
    from image_search_assets.demo.retrieval_eval import served_precision
    from image_search_assets.demo.synthetic import read_looks

    looks = read_looks(settings.catalog)
    indexes = served_indexes(_storage(settings), settings.category_names)
    result = served_precision(indexes, looks, k=5)
    models = {
        m: f"{c.arch} weights={c.weights}"
        for m, c in (("detector", settings.detector), ("embedder", settings.embedder))
    }
    result = {"catalog": settings.catalog, **models, **result}
    print(json.dumps(result, indent=2))
    if json_path:
        with open(json_path, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
