"""How far fp16 and bf16 autocast move the engine's outputs from fp32, per model, and how fast.

For each detector and embedder: the engine in fp32, then in each dtype, on the same JPEGs with
the same weights. Detection: share of images whose chosen box agrees (same label and source,
IoU >= 0.98), the worst IoU (ties at the score threshold aside, as calibration counts them) and
how many images were such ties. Embedding (on the fp32 boxes): worst and mean cosine, zero
vectors. This is what precision.py's calibration decides on, measured over every image rather
than the first batch. Writes a JSON naming the hardware and versions.

    python benchmarks/amp_numerics.py --device cpu --out benchmarks/results/amp_numerics_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from engine_throughput import hardware, synthetic_jpegs  # beside this script
from report import emit  # beside this script
from torchvision.ops import box_iou

from image_search_assets.core.inference import models
from image_search_assets.core.inference.engine import detect_boxes, embed_crops, precision

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# (arch, weights, input size): the demo's trained pair, then random-init stock architectures.
DETECTORS = {
    "demo": [("ssdlite320_mobilenet_v3_large", "demo", 192)],
    "gpu": [
        ("ssdlite320_mobilenet_v3_large", "demo", 192),
        ("ssdlite320_mobilenet_v3_large", "random", 320),
        ("retinanet_resnet50_fpn_v2", "random", 512),
    ],
}
EMBEDDERS = [
    ("mobilenet_v3_small", "demo", 112),
    ("resnet50", "random", 224),
    ("efficientnet_b0", "random", 224),
]


def timed(device: torch.device, fn):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - started


def detection_row(arch, weights, size, device, blobs, threshold, batch) -> dict:
    det = models.load_detector(models.ModelSpec(arch, weights, size, num_classes=14), str(device))
    opts = {"class_ids": (), "score_threshold": threshold, "batch_size": batch}
    row = {"detector": arch, "weights": weights, "size": size}
    ref = None
    for name, dt in (("fp32", None), *DTYPES.items()):
        run = functools.partial(detect_boxes, det, blobs, amp=dt, **opts)
        run()  # warm-up (kernel selection)
        got, seconds = timed(device, run)
        ref = got if ref is None else ref
        iou = box_iou(
            torch.tensor([[b.x1, b.y1, b.x2, b.y2] for b in ref]),
            torch.tensor([[b.x1, b.y1, b.x2, b.y2] for b in got]),
        ).diagonal()
        agree = [
            (a.label, a.box_source) == (b.label, b.box_source) and i >= 0.98
            for a, b, i in zip(ref, got, iou.tolist(), strict=True)
        ]
        ties = sum(
            abs(a.score - threshold) <= precision.BORDERLINE
            or abs(b.score - threshold) <= precision.BORDERLINE
            for a, b in zip(ref, got, strict=True)
        )
        row[name] = {
            "images_per_second": round(len(blobs) / seconds, 2),
            "agree_share": round(sum(agree) / len(ref), 4),
            "worst_agreement_ties_aside": round(precision.box_agreement(ref, got, threshold), 5),
            "threshold_ties": ties,
            "detector_boxes": sum(b.box_source == "detector" for b in got),
        }
    return row


def embedding_row(arch, weights, size, device, blobs, boxes, batch) -> dict:
    emb = models.load_embedder(models.ModelSpec(arch, weights, size), str(device))
    row = {"embedder": arch, "weights": weights, "size": size}
    ref = None
    for name, dt in (("fp32", None), *DTYPES.items()):
        run = functools.partial(
            embed_crops, emb, blobs, boxes, input_size=size, batch_size=batch, amp=dt
        )
        run()  # warm-up
        got, seconds = timed(device, run)
        ref = got if ref is None else ref
        cos = (ref * got).sum(axis=1)
        row[name] = {
            "images_per_second": round(len(blobs) / seconds, 2),
            "cosine_min": round(float(np.nan_to_num(cos, nan=-1).min()), 6),
            "cosine_mean": round(float(np.nan_to_num(cos, nan=-1).mean()), 6),
            "zero_or_nan_vectors": int(
                (~np.isfinite(got).all(1) | (np.abs(got).sum(1) == 0)).sum()
            ),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--detectors", choices=sorted(DETECTORS), default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
    device = models.resolve_device(args.device)
    which = args.detectors or ("gpu" if device.type == "cuda" else "demo")
    blobs = synthetic_jpegs(args.images, args.image_size)
    detections = [
        detection_row(*spec, device, blobs, args.threshold, args.batch) for spec in DETECTORS[which]
    ]
    det = models.load_detector(models.ModelSpec(*DETECTORS["demo"][0], num_classes=14), str(device))
    boxes = detect_boxes(
        det, blobs, class_ids=(), score_threshold=args.threshold, batch_size=args.batch, amp=None
    )
    embeddings = [embedding_row(*spec, device, blobs, boxes, args.batch) for spec in EMBEDDERS]
    result = {
        "hardware": hardware(device),
        "inputs": {"images": len(blobs), "image_size": args.image_size, "batch": args.batch},
        "tolerances": {"detect": precision.DETECT_TOLERANCE, "embed": precision.EMBED_TOLERANCE},
        "detection": detections,
        "embedding": embeddings,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
