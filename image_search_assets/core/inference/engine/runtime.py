"""What every engine stage shares: run statistics, OOM-adaptive batching, autocast, compile."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from image_search_assets.core.inference.engine import compile_cache, precision
from image_search_assets.core.inference.gpu_memory import (
    GpuMemoryExhausted,
    is_cuda_oom,
    release_gpu_memory,
)

R = TypeVar("R")


@dataclass
class EngineStats:
    """What a run did, for asset metadata. Functions given one add to it; it is not thread-safe,
    so each worker fills its own and `merge` combines them."""

    images: int = 0
    decode_seconds: float = 0.0  # in the reader thread: overlaps detect/embed when prefetching
    detect_seconds: float = 0.0
    embed_seconds: float = 0.0
    wall_seconds: float = 0.0  # end to end, what images_per_second divides by
    batch_size: int = 0  # the batch in use at the end (after any OOM halvings)
    oom_halvings: list[int] = field(default_factory=list)  # each batch size an OOM halved to
    devices: list[str] = field(default_factory=list)
    detect_path: str = ""  # "vectorised:ssd", "vectorised:retinanet" or "stock:<Module>"
    precision: str = ""  # "fp32", "float16", "bfloat16"; "+compile" when compiled
    calibration: dict[str, float] = field(default_factory=dict)  # see precision.calibrate
    batch_norms_folded: int = 0  # into the convolutions before them (fold.py)

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def add_device(self, device: torch.device) -> None:
        if str(device) not in self.devices:
            self.devices.append(str(device))

    def merge(self, other: EngineStats) -> None:
        """Adds a worker's figures: seconds are summed (device-seconds), wall is not touched."""
        self.images += other.images
        self.decode_seconds += other.decode_seconds
        self.detect_seconds += other.detect_seconds
        self.embed_seconds += other.embed_seconds
        sizes = [s for s in (self.batch_size, other.batch_size) if s]
        self.batch_size = min(sizes) if sizes else 0
        self.oom_halvings.extend(other.oom_halvings)
        for dev in other.devices:
            self.add_device(torch.device(dev))
        self.detect_path = self.detect_path or other.detect_path
        self.precision = self.precision or other.precision
        self.calibration = self.calibration or dict(other.calibration)
        self.batch_norms_folded = self.batch_norms_folded or other.batch_norms_folded

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values: images/s, per-stage seconds, batch sizes, devices."""
        return {
            "images": self.images,
            "images_per_second": round(self.images_per_second, 2),
            "decode_seconds": round(self.decode_seconds, 4),
            "detect_seconds": round(self.detect_seconds, 4),
            "embed_seconds": round(self.embed_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 4),
            "batch_size": self.batch_size,
            "oom_halvings": list(self.oom_halvings),
            "devices": list(self.devices),
            "detect_path": self.detect_path,
            "precision": self.precision,
            "calibration": dict(self.calibration),
            "batch_norms_folded": self.batch_norms_folded,
        }


@contextlib.contextmanager
def timed(stats: EngineStats, attr: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        setattr(stats, attr, getattr(stats, attr) + time.perf_counter() - started)


# The GPU the configured batch sizes were chosen on: a T4's 15 GiB, of which a step's process
# finds about this much free. A GPU with more free memory runs proportionally larger batches.
REFERENCE_FREE_BYTES = 14 * 2**30
MAX_BATCH_SCALE = 8  # past this the GPU is busy enough; bigger batches only add latency


def sized_for_memory(batch_size: int, device: torch.device, free_bytes: int | None = None) -> int:
    """The batch to start with on `device`: the configured one scaled by the GPU's free memory
    against the GPU it was chosen on, rounded down to a power of two times the configured size
    (compiled graphs and calibration stay comparable), never below 1.

    On a CPU the configured size stands: host memory is not what it was tuned against. The
    scaling is a first guess; a CUDA OOM still halves the batch (AdaptiveBatch).
    `free_bytes` overrides the device's own report (`torch.cuda.mem_get_info`).
    """
    if device.type != "cuda" and free_bytes is None:
        return batch_size
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    scale = free_bytes / REFERENCE_FREE_BYTES
    if scale >= 1:
        factor = 1
        while factor * 2 <= min(scale, MAX_BATCH_SCALE):
            factor *= 2
        return batch_size * factor
    return max(1, int(batch_size * scale))


def device_model(devices: Sequence[torch.device | str]) -> str:
    """What the step ran on, by the name the driver reports: "NVIDIA L4", "Tesla T4", "cpu"."""
    for device in map(torch.device, devices):
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
    return "cpu"


class AdaptiveBatch:
    """Runs slices of work at the largest batch that fits; the size carries across calls.

    A CUDA OOM halves the batch and retries the same slice; at batch 1 it raises
    GpuMemoryExhausted (permanent in core.failures: a smaller batch cannot help).
    """

    def __init__(self, batch_size: int, stats: EngineStats) -> None:
        self.size = max(1, batch_size)
        self.stats = stats
        stats.batch_size = self.size

    def map(self, fn: Callable[[int, int], R], n: int) -> list[R]:
        """`fn(start, end)` over [0, n) in slices of at most `self.size`, results in order."""
        out: list[R] = []
        start = 0
        while start < n:
            end = min(n, start + self.size)
            try:
                out.append(fn(start, end))
                start = end
                continue
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not is_cuda_oom(exc):
                    raise
                if self.size == 1:
                    raise GpuMemoryExhausted(f"CUDA out of memory at batch size 1: {exc}") from exc
            self.size //= 2
            self.stats.oom_halvings.append(self.size)
            self.stats.batch_size = self.size
            # Outside the handler, so the traceback's tensors are freed before emptying the cache.
            release_gpu_memory()
        return out


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None, compiled: bool) -> str:
    return precision.name(dtype) + ("+compile" if compiled else "")


_COMPILED: weakref.WeakKeyDictionary[nn.Module, Callable] = weakref.WeakKeyDictionary()


def maybe_compiled(module: nn.Module, want: bool) -> tuple[Callable, bool]:
    """`module`, or its torch.compile'd twin when `want`, on any device. Compiled once per module.

    dynamic=None (automatic): the first shape compiles static; the first new shape (a step's
    short last batch, an OOM-halved batch, another RetinaNet resize) recompiles once with
    dynamic sizes, which then serve every shape. dynamic=False would compile again for every
    new shape (measured on this CPU: ~25 s each for the SSDlite backbone) until dynamo's cache
    limit sends the module back to eager without a word.

    With a compile cache configured (compile_cache.configure), the module's archive is loaded
    first and each call that compiles writes it back, so the next process starts warm.
    """
    if not want:
        return module, False
    if module not in _COMPILED:
        compiled = torch.compile(module, dynamic=None)
        cache = compile_cache.active()
        _COMPILED[module] = compiled if cache is None else cache.tracking(module, compiled)
    return _COMPILED[module], True
