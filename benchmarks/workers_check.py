"""The multi-worker engine path on a real device: one worker vs two workers sharing it.

A step granted N GPUs runs one worker thread per GPU (core/inference/engine/workers.py); on a
host with one GPU, two workers on the same device exercise the same threads, sharding, stream
and merge code. The
outputs must be the one-worker outputs, in the same order. Each configuration's first call is
reported apart ("cold": model replicas, calibration, each thread's cuDNN plans) from the next
("warm"), which reuses the long-lived worker threads. Prints one JSON line.

    python benchmarks/workers_check.py --device cuda --images 512
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from engine_throughput import synthetic_jpegs  # beside this script
from report import emit  # beside this script

from image_search_assets.core.inference import models
from image_search_assets.core.inference.engine import EngineStats, detect_sharded, embed_sharded


def run(devices, blobs, batch: int) -> tuple[list, np.ndarray, dict]:
    det_spec = models.ModelSpec("ssdlite320_mobilenet_v3_large", "demo", 192, num_classes=14)
    emb_spec = models.ModelSpec("mobilenet_v3_small", "demo", 112)
    det_stats, emb_stats = EngineStats(), EngineStats()
    started = time.perf_counter()
    boxes = detect_sharded(
        lambda d: models.load_detector(det_spec, str(d)),
        blobs,
        devices,
        stats=det_stats,
        class_ids=(),
        score_threshold=0.5,
        batch_size=batch,
    )
    vectors = embed_sharded(
        lambda d: models.load_embedder(emb_spec, str(d)),
        blobs,
        boxes,
        devices,
        stats=emb_stats,
        input_size=112,
        batch_size=batch,
    )
    seconds = time.perf_counter() - started
    figures = {
        "workers": len(devices),
        "images_per_second": round(len(blobs) / seconds, 1),
        "detect_precision": det_stats.precision,
        "calibration": det_stats.calibration
        | {"embed_" + k: v for k, v in emb_stats.calibration.items()},
    }
    return boxes, vectors, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
    device = models.resolve_device(args.device)
    blobs = synthetic_jpegs(args.images, 256)
    one_cold = run([device], blobs, args.batch)[2]
    one_boxes, one_vectors, one = run([device], blobs, args.batch)
    two_cold = run([device, device], blobs, args.batch)[2]
    two_boxes, two_vectors, two = run([device, device], blobs, args.batch)
    result = {
        "check": "workers",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "one_worker": one,
        "two_workers": two,
        "cold_images_per_second": {
            "one_worker": one_cold["images_per_second"],
            "two_workers": two_cold["images_per_second"],
        },
        "same_boxes": one_boxes == two_boxes,
        "embedding_cosine_min": round(float((one_vectors * two_vectors).sum(1).min()), 6),
    }
    emit(result, args.out, line=True)


if __name__ == "__main__":
    main()
