"""Trains the demo detector and embedder on the synthetic catalog and writes fp16 checkpoints.

    python -m image_search_assets.demo.train_weights        # both models, GPU if present
    python -m image_search_assets.demo.train_weights --only embedder --embedder-steps 50

Writes image_search_assets/demo/weights/demo_{detector,embedder}.pt (the `weights: demo` files)
and demo_weights.json (how they were made). The detector is trained on the platform config's
categories and its label names are recorded there (`labels`, label 0 background): the platform
maps categories to labels by those names, so a later change of the config's order or of its
category list never needs retraining to stay correct.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import torch
import torchvision

from image_search_assets.core.inference.checkpoints import DEMO_WEIGHTS, WEIGHTS_DIR
from image_search_assets.core.inference.models import resolve_device
from image_search_assets.demo.training import to_fp16, train_detector, train_embedder
from image_search_assets.settings import load_settings

ARCH = {"detector": "ssdlite320_mobilenet_v3_large", "embedder": "mobilenet_v3_small"}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--only", choices=sorted(ARCH), help="train one model only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--detector-steps", type=int, default=700)
    parser.add_argument("--detector-batch", type=int, default=32)
    parser.add_argument("--detector-size", type=int, default=192)
    parser.add_argument("--embedder-steps", type=int, default=1200)
    parser.add_argument("--embedder-batch", type=int, default=64)
    parser.add_argument("--embedder-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()

    device = resolve_device(args.device)
    categories = load_settings().category_names
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "demo_weights.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for role in [args.only] if args.only else sorted(ARCH):
        started = time.monotonic()
        steps, batch, size = (getattr(args, f"{role}_{k}") for k in ("steps", "batch", "size"))
        train = train_detector if role == "detector" else train_embedder
        state = train(
            categories,
            arch=ARCH[role],
            steps=steps,
            batch=batch,
            input_size=size,
            device=device,
            seed=args.seed,
            log=lambda line: print(line, flush=True),
        )
        if role == "embedder":  # the platform strips the classifier: don't ship it
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        path = args.out / DEMO_WEIGHTS[ARCH[role]]
        torch.save(to_fp16(state), path)
        meta[role] = {
            "arch": ARCH[role],
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size,
            "input_size": size,
            "steps": steps,
            "batch": batch,
            "seed": args.seed,
            "categories": list(categories),
            # Label i's name (training's label i+1 is categories[i]); models.known_labels reads it.
            **({"labels": ["background", *categories]} if role == "detector" else {}),
            "seconds": round(time.monotonic() - started, 1),
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        }
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
