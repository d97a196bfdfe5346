"""Contiguous vs channels_last network inputs on the CPU, same weights, alternating A/B runs.

Why the engine feeds channels_last on every device (core/inference/engine/embed.py's docstring).

    python benchmarks/channels_last_cpu.py      # milliseconds per batch, 2 rounds of each
"""

from __future__ import annotations

import time
import warnings

import torch

from image_search_assets.core.inference import models


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    det = models.load_detector(
        models.ModelSpec("ssdlite320_mobilenet_v3_large", "demo", 192, num_classes=14), "cpu"
    )
    cases = [
        ("ssdlite backbone @192 x32", det.module.backbone, (32, 3, 192, 192)),
        (
            "resnet50 @224 x16",
            models.load_embedder(models.ModelSpec("resnet50", "random", 224), "cpu").module,
            (16, 3, 224, 224),
        ),
        (
            "mobilenet_v3_small @112 x64",
            models.load_embedder(models.ModelSpec("mobilenet_v3_small", "demo", 112), "cpu").module,
            (64, 3, 112, 112),
        ),
    ]
    isa = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {isa}")
    with torch.inference_mode():
        for name, module, shape in cases:
            x = torch.randn(shape)
            for layout in ("contiguous", "channels_last") * 2:
                xi = (
                    x.contiguous(memory_format=torch.channels_last)
                    if layout == "channels_last"
                    else x
                )
                module(xi)  # warm-up
                started = time.perf_counter()
                for _ in range(3):
                    module(xi)
                print(
                    f"{name:30s} {layout:14s} {(time.perf_counter() - started) / 3 * 1000:7.1f} ms"
                )


if __name__ == "__main__":
    main()
