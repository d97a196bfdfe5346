"""Multi-device execution: one worker per device, contiguous shards, results in input order.

Workers are threads: torch releases the GIL inside its kernels, so one Python process drives
several GPUs. The same code runs with several CPU "devices" (["cpu", "cpu"]), which is how the
tests exercise it. Each worker gets a model replica loaded before any work starts.

Worker threads live as long as the process, one per (device, slot), and every call reuses them.
PyTorch keeps its cuDNN convolution plans in thread_local caches (aten/src/ATen/native/cudnn/
Conv_v8.cpp: plans are not thread-safe across engines), so a fresh thread plans every
convolution again: a new pool per call made two workers many times slower than one
(benchmarks/results/gpu/workers_diag_cudnn.log).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import numpy as np
import torch

from image_search_assets.core.inference.engine.detect import detect_boxes
from image_search_assets.core.inference.engine.embed import embed_crops
from image_search_assets.core.inference.engine.runtime import EngineStats
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.inference.naive import ChosenBox

T = TypeVar("T")
S = TypeVar("S")


def visible_devices() -> list[torch.device]:
    """Every GPU this process may use (torch.cuda.device_count honours CUDA_VISIBLE_DEVICES),
    or the CPU when there is none."""
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def cpu_workers(n: int) -> list[torch.device]:
    """n CPU workers, capped at the cores there are."""
    return [torch.device("cpu")] * max(1, min(n, os.cpu_count() or 1))


def shards(n: int, parts: int) -> list[range]:
    """[0, n) cut into `parts` contiguous ranges whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    bounds = list(itertools.accumulate([base + (i < extra) for i in range(parts)], initial=0))
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def run_sharded(
    fn: Callable[[Sequence[T], torch.device], S],
    items: Sequence[T],
    devices: Sequence[str | torch.device],
) -> list[S]:
    """`fn(shard, device)` for contiguous shards of `items`, one thread per device; the shards'
    results in input order, whichever finishes first. An error in any worker is raised, once
    every worker has stopped. One shard runs in the calling thread; several run on the
    process's long-lived worker threads (see the module docstring)."""
    devs = [torch.device(d) for d in devices]
    if not devs:
        raise ValueError("run_sharded needs at least one device")
    parts = [
        (devs[i], items[r.start : r.stop]) for i, r in enumerate(shards(len(items), len(devs)))
    ]
    parts = [(dev, shard) for dev, shard in parts if len(shard)]
    if len(parts) <= 1:
        return [_on_device(fn, shard, dev) for dev, shard in parts]
    futures = [
        _worker(dev, slot).submit(_on_device, fn, shard, dev)
        for slot, (dev, shard) in enumerate(parts)
    ]
    wait(futures)
    return [f.result() for f in futures]


_WORKERS: dict[tuple[torch.device, int], ThreadPoolExecutor] = {}
_WORKERS_LOCK = threading.Lock()


def _forget_workers_in_a_forked_child() -> None:
    # A forked child inherits the executors but not their threads: work sent to them would
    # never run. The child starts its own.
    global _WORKERS_LOCK
    _WORKERS.clear()
    _WORKERS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_workers_in_a_forked_child)


def _worker(device: torch.device, slot: int) -> ThreadPoolExecutor:
    """The thread that runs shard `slot` on `device`, started on first use."""
    with _WORKERS_LOCK:
        key = (device, slot)
        if key not in _WORKERS:
            _WORKERS[key] = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{device}-{slot}")
        return _WORKERS[key]


def _on_device(fn: Callable[[Sequence[T], torch.device], S], shard, device: torch.device) -> S:
    """`fn(shard, device)` with `device` as the thread's current CUDA device: a new thread starts
    on cuda:0, and whatever uses the current device (streams, compiled kernels' launches) must
    see the worker's own GPU."""
    if device.type != "cuda":
        return fn(shard, device)
    with torch.cuda.device(device):
        return fn(shard, device)


def _replicas(
    load: Callable[[torch.device], LoadedModel], devices: Sequence[str | torch.device]
) -> dict[torch.device, LoadedModel]:
    # Loaded up front, in this thread: never inside a worker's loop, never twice per device.
    return {torch.device(d): load(torch.device(d)) for d in dict.fromkeys(map(str, devices))}


def detect_sharded(
    load: Callable[[torch.device], LoadedModel],
    blobs: Sequence[bytes],
    devices: Sequence[str | torch.device],
    *,
    stats: EngineStats | None = None,
    **options,
) -> list[ChosenBox]:
    """detect_boxes over `devices`; `load(device)` gives each device's replica (e.g.
    `lambda d: models.load_detector(spec, str(d))`), `options` go to detect_boxes."""
    models = _replicas(load, devices)
    started = time.perf_counter()
    worker_stats: list[EngineStats] = []

    def work(shard: Sequence[bytes], device: torch.device) -> list[ChosenBox]:
        own = EngineStats()
        worker_stats.append(own)
        return detect_boxes(models[device], shard, stats=own, **options)

    chosen = list(itertools.chain.from_iterable(run_sharded(work, blobs, devices)))
    _merge(stats, worker_stats, started)
    return chosen


def embed_sharded(
    load: Callable[[torch.device], LoadedModel],
    blobs: Sequence[bytes],
    boxes: Sequence[ChosenBox],
    devices: Sequence[str | torch.device],
    *,
    stats: EngineStats | None = None,
    **options,
) -> np.ndarray:
    """embed_crops over `devices`, like detect_sharded; rows in input order."""
    models = _replicas(load, devices)
    started = time.perf_counter()
    worker_stats: list[EngineStats] = []
    pairs = list(zip(blobs, boxes, strict=True))

    def work(shard: Sequence[tuple[bytes, ChosenBox]], device: torch.device) -> np.ndarray:
        own = EngineStats()
        worker_stats.append(own)
        shard_blobs, shard_boxes = [b for b, _ in shard], [x for _, x in shard]
        return embed_crops(models[device], shard_blobs, shard_boxes, stats=own, **options)

    parts = run_sharded(work, pairs, devices)
    _merge(stats, worker_stats, started)
    if not parts:
        dim = int(next(iter(models.values())).identity["dim"])
        return np.zeros((0, dim), np.float32)
    return np.concatenate(parts)


def _merge(stats: EngineStats | None, workers: list[EngineStats], started: float) -> None:
    if stats is None:
        return
    for own in workers:
        stats.merge(own)
    stats.wall_seconds += time.perf_counter() - started
