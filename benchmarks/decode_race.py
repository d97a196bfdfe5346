"""Does GPU JPEG decoding overwrite memory that queued kernels are still reading? (CUDA only)

The hazard (pytorch/vision#9606, meta-pytorch/torchcodec#1634): nvJPEG's hardware decoder writes
without waiting for the allocating stream's queued work, and PyTorch's caching allocator hands
out a block as soon as it is freed on that stream. Each iteration here fills tensors of the
decoded images' size, queues a ~100 ms kernel and then one reduction per tensor, frees the
tensors while the reductions are queued, decodes, and checks every reduction. Run for the bare
torchvision call and for the engine's decode_batch (its own decode stream, reader.py).

    python benchmarks/decode_race.py --iterations 100      # prints one JSON line
"""

from __future__ import annotations

import argparse
import io
import time
from typing import cast

import torch
from engine_throughput import synthetic_jpegs  # beside this script
from PIL import Image
from report import emit  # beside this script
from torchvision.io import ImageReadMode, decode_jpeg

from image_search_assets.core.inference.engine import decode_batch


def bare(blobs: list[bytes], device: torch.device) -> list[torch.Tensor]:
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    # decode_jpeg returns a list for a list input; its annotation covers both forms.
    return cast(list[torch.Tensor], decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


def trial(decode, blobs, device, size: int, iterations: int, spin: int) -> dict:
    corrupted, decode_s = 0, 0.0
    numel = 3 * size * size
    for it in range(iterations):
        values = [(it + i) % 250 + 1 for i in range(len(blobs))]
        tensors = [torch.full((numel,), v, dtype=torch.uint8, device=device) for v in values]
        torch.cuda.synchronize(device)
        torch.cuda._sleep(spin)  # keeps the stream busy, so the reductions below stay queued
        sums = [t.sum(dtype=torch.int64) for t in tensors]
        del tensors  # freed while the reductions that read them are still queued
        started = time.perf_counter()
        images = decode(blobs, device)
        decode_s += time.perf_counter() - started
        torch.cuda.synchronize(device)
        corrupted += any(int(s) != v * numel for s, v in zip(sums, values, strict=True))
        del images
    return {
        "iterations": iterations,
        "corrupted_iterations": corrupted,
        "decode_ms": round(1000 * decode_s / iterations, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--spin", type=int, default=100_000_000, help="cycles of the busy kernel")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    result: dict = {"check": "decode_race", "device": str(device), "torch": torch.__version__}
    if device.type != "cuda" or not torch.cuda.is_available():
        result["skipped"] = "needs CUDA"
    else:
        result["gpu"] = torch.cuda.get_device_name(device)
        blobs = synthetic_jpegs(args.images, args.size)
        assert {Image.open(io.BytesIO(b)).size for b in blobs} == {(args.size, args.size)}
        run = (blobs, device, args.size, args.iterations, args.spin)
        result["torchvision_decode_jpeg"] = trial(bare, *run)
        result["engine_decode_batch"] = trial(decode_batch, *run)
        cpu = decode_batch(blobs, torch.device("cpu"))
        gpu = decode_batch(blobs, device)
        result["max_abs_diff_vs_cpu_decode"] = max(
            int((c.int() - g.cpu().int()).abs().max()) for c, g in zip(cpu, gpu, strict=True)
        )
    emit(result, args.out, line=True)


if __name__ == "__main__":
    main()
