"""Engine vs naive throughput, one run, same inputs: decode -> detect -> crop -> embed.

Naive: PIL decode, the stock torchvision detector called per image, naive.choose_box,
naive.crop + embed one item at a time. Engine: image_search_assets.core.inference.engine. Warm-up
batches are excluded from both. Writes a JSON naming the hardware, versions and models.

    python benchmarks/engine_throughput.py --device cpu --images 32 --det-size 160 --out r.json
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from gpu_probe import UtilisationSampler, profile_table  # beside this script
from PIL import Image
from report import emit  # beside this script

from image_search_assets.core.inference import models, naive
from image_search_assets.core.inference.engine import (
    EngineStats,
    decode_batch,
    detect_boxes,
    embed_crops,
)
from image_search_assets.core.inference.engine.precision import from_config
from image_search_assets.demo import synthetic

# The images show the first three categories; a box counts only with their labels (1-3), as a
# category step accepts only its own class ids.
CLASS_IDS = (1, 2, 3)


def synthetic_jpegs(n: int, size: int) -> list[bytes]:
    out = []
    for i in range(n):
        rng = random.Random(i)
        category = rng.choice(synthetic.CATEGORIES[: len(CLASS_IDS)])
        img = synthetic.draw_product(category, "red", rng.choice(synthetic.PATTERNS), rng, size)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_naive(detector, embedder, blobs, args) -> dict:
    """Per image: PIL decode, stock detector, choose_box, crop, embed (batch 1)."""
    timings = {"decode": 0.0, "detect": 0.0, "embed": 0.0}
    boxes, vectors = [], []
    for blob in blobs:
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(blob)) as img:
            pic = img.convert("RGB")
        t1 = time.perf_counter()
        det = naive.detect(detector, [pic], batch_size=1)[0]
        box = naive.choose_box(
            det, pic.width, pic.height, class_ids=CLASS_IDS, score_threshold=args.threshold
        )
        sync(detector.device)
        t2 = time.perf_counter()
        crop = naive.crop(pic, box)
        vectors.append(naive.embed(embedder, [crop], input_size=args.emb_size, batch_size=1))
        sync(embedder.device)
        t3 = time.perf_counter()
        timings["decode"] += t1 - t0
        timings["detect"] += t2 - t1
        timings["embed"] += t3 - t2
        boxes.append(box)
    return {"boxes": boxes, "vectors": np.concatenate(vectors), "seconds": timings}


def run_engine(detector, embedder, blobs, args) -> dict:
    det_stats, emb_stats = EngineStats(), EngineStats()
    sync(detector.device)
    started = time.perf_counter()
    options = {"batch_size": args.batch, "compile": args.compile, "amp": from_config(args.amp)}
    boxes = detect_boxes(
        detector,
        blobs,
        class_ids=CLASS_IDS,
        score_threshold=args.threshold,
        stats=det_stats,
        **options,
    )
    vectors = embed_crops(
        embedder, blobs, boxes, input_size=args.emb_size, stats=emb_stats, **options
    )
    sync(embedder.device)
    wall = time.perf_counter() - started
    # Decode alone, for its own images/s (inside the engine it overlaps compute).
    t0 = time.perf_counter()
    for start in range(0, len(blobs), args.batch):
        decode_batch(blobs[start : start + args.batch], detector.device)
    sync(detector.device)
    return {
        "boxes": boxes,
        "vectors": vectors,
        "wall": wall,
        "decode_only": time.perf_counter() - t0,
        "detect_stats": det_stats.as_metadata(),
        "embed_stats": emb_stats.as_metadata(),
    }


def equivalence(naive: dict, engine: dict) -> dict:
    a, b = naive["boxes"], engine["boxes"]
    same_label = sum(
        x.label == y.label and x.box_source == y.box_source for x, y in zip(a, b, strict=True)
    )
    ious = torchvision.ops.box_iou(
        torch.tensor([[x.x1, x.y1, x.x2, x.y2] for x in a]),
        torch.tensor([[y.x1, y.y1, y.x2, y.y2] for y in b]),
    ).diagonal()
    cos = (naive["vectors"] * engine["vectors"]).sum(axis=1)
    return {
        "items": len(a),
        "same_label_and_source": same_label,
        "box_iou_min": round(float(ious.min()), 5),
        "score_abs_diff_max": round(
            max(abs(x.score - y.score) for x, y in zip(a, b, strict=True)), 6
        ),
        "candidates_equal": sum(x.candidates == y.candidates for x, y in zip(a, b, strict=True)),
        "embedding_cosine_min": round(float(cos.min()), 6),
        # How many items fall outside the tolerances tests/core/inference/engine states for fp32
        # on the CPU; on a GPU, nvJPEG's pixels and reduced precision both move boxes a little.
        "box_iou_below_0.98": int((ious < 0.98).sum()),
        "embedding_cosine_below_0.999": int((cos < 0.999).sum()),
        "detector_boxes": sum(x.box_source == "detector" for x in a),
    }


def hardware(device: torch.device) -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    info = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--detector", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--embedder", default="resnet50")
    parser.add_argument("--det-size", type=int, default=320)
    parser.add_argument("--emb-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument(
        "--weights", default="random", help="random | demo (ssdlite + mobilenet_v3_small only)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's models")
    parser.add_argument(
        "--amp", default="auto", choices=("auto", "calibrate", "fp32", "fp16", "bf16")
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--profile", type=Path, default=None, help="append a torch.profiler table of one pass"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = models.resolve_device(args.device)
    det_spec = models.ModelSpec(args.detector, args.weights, args.det_size, num_classes=14)
    detector = models.load_detector(det_spec, str(device))
    embedder = models.load_embedder(
        models.ModelSpec(args.embedder, args.weights, args.emb_size), str(device)
    )
    blobs = synthetic_jpegs(args.images, args.image_size)
    warm = blobs[: min(len(blobs), max(2, args.batch))]
    run_naive(detector, embedder, warm[:2], args)
    run_engine(detector, embedder, warm, args)

    naive = run_naive(detector, embedder, blobs, args)
    with UtilisationSampler(device) as sampler:
        engine = run_engine(detector, embedder, blobs, args)
    if args.profile:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        table = profile_table(lambda: run_engine(detector, embedder, blobs, args), device)
        with args.profile.open("a") as f:  # several configurations may share one file
            f.write(f"== {args.detector} @{args.det_size} + {args.embedder} @{args.emb_size}\n")
            f.write(table + "\n\n")
    n = len(blobs)
    naive_wall = sum(naive["seconds"].values())
    det, emb = engine["detect_stats"], engine["embed_stats"]
    result = {
        "hardware": hardware(device),
        "models": {
            "detector": args.detector,
            "det_size": args.det_size,
            "detect_path": det["detect_path"],
            "detect_precision": det["precision"],
            "embedder": args.embedder,
            "emb_size": args.emb_size,
            "embed_precision": emb["precision"],
            "weights": args.weights,
        },
        "inputs": {
            "images": n,
            "image_size": args.image_size,
            "batch": args.batch,
            "score_threshold": args.threshold,
            "compile": args.compile,
            "amp": args.amp,
        },
        "naive_images_per_second": {stage: round(n / s, 2) for stage, s in naive["seconds"].items()}
        | {"end_to_end": round(n / naive_wall, 2)},
        "engine_images_per_second": {
            "decode": round(n / engine["decode_only"], 2),
            "detect": round(n / det["detect_seconds"], 2),
            "embed": round(n / emb["embed_seconds"], 2),
            "end_to_end": round(n / engine["wall"], 2),
        },
        "engine_stats": {"detect": det, "embed": emb},
        "ratio_engine_over_naive": round(naive_wall / engine["wall"], 2),
        "gpu_utilisation_during_engine": sampler.summary(),
        "equivalence": equivalence(naive, engine),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
