"""Batch norms folded into convolutions (core/inference/engine/fold.py) vs the stock modules, eager.

Same weights, same channels_last input, alternating A/B rounds, median milliseconds per batch;
the ratio is stock / folded (above 1: folding is faster). The detection backbones are what the
engine runs per batch; the embedder is the whole ResNet-50.

    python benchmarks/fold_speed.py --device cpu --batch 8 --out benchmarks/results/fold_cpu.json
    (--out appends one JSON line)
    python benchmarks/fold_speed.py --device cuda --amp fp16 --batch 64     # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from report import emit  # beside this script

from image_search_assets.core.inference import models
from image_search_assets.core.inference.engine.fold import batch_norms, folded
from image_search_assets.core.inference.engine.runtime import autocast

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def cases(device: str, batch: int):
    def detector(arch: str, size: int):
        spec = models.ModelSpec(arch, "random", size, num_classes=14)
        return models.load_detector(spec, device).module.backbone

    embedder = models.load_embedder(models.ModelSpec("resnet50", "random", 224), device).module
    return [
        ("ssdlite320 backbone @320", detector("ssdlite320_mobilenet_v3_large", 320), 320, batch),
        ("retinanet v2 backbone @512", detector("retinanet_resnet50_fpn_v2", 512), 512, batch // 2),
        ("resnet50 embedder @224", embedder, 224, batch),
    ]


def timed_ms(module, x, device: torch.device, dtype, repeats: int) -> float:
    with autocast(device, dtype):
        started = time.perf_counter()
        for _ in range(repeats):
            module(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device, dtype = models.resolve_device(args.device), DTYPES[args.amp]
    repeats = 3 if device.type == "cpu" else 20
    rows = []
    with torch.inference_mode():
        for name, stock, size, batch in cases(str(device), args.batch):
            x = torch.rand(batch, 3, size, size, device=device)
            x = x.contiguous(memory_format=torch.channels_last)
            fold = folded(stock)
            ms = {"stock": [], "folded": []}
            for module in (stock, fold):
                timed_ms(module, x, device, dtype, 1)  # warm-up (cuDNN plans, allocator)
            for _ in range(args.rounds):
                for label, module in (("stock", stock), ("folded", fold)):
                    ms[label].append(timed_ms(module, x, device, dtype, repeats))
            stock_ms, fold_ms = statistics.median(ms["stock"]), statistics.median(ms["folded"])
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "batch_norms": batch_norms(stock),
                    "left_after_folding": batch_norms(fold),
                    "stock_ms": round(stock_ms, 2),
                    "folded_ms": round(fold_ms, 2),
                    "ratio": round(stock_ms / fold_ms, 3),
                }
            )
    hardware = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    result = {"check": "fold_speed", "amp": args.amp, "hardware": hardware, "rows": rows}
    emit(result, args.out, line=True)  # one JSON line: the GPU suite appends it to its log


if __name__ == "__main__":
    main()
