"""What a benchmark wants to know about the accelerator while it runs: utilisation sampled
through the measured pass, and a profile of one pass sorted by where the time goes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


class UtilisationSampler:
    """Samples `torch.cuda.utilization` (NVML) every `every_s` while the `with` block runs.

    `summary()` is None without CUDA or NVML, so CPU runs report nothing rather than zeros.
    """

    def __init__(self, device: torch.device, every_s: float = 0.1) -> None:
        self.device, self.every_s = device, every_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> int | None:
        try:
            return int(torch.cuda.utilization(self.device))
        except (RuntimeError, ModuleNotFoundError, ValueError):  # no NVML / pynvml
            return None

    def __enter__(self) -> UtilisationSampler:
        if self.device.type == "cuda" and self._read() is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            if (value := self._read()) is not None:
                self.samples.append(value)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        return {
            "mean_percent": round(sum(self.samples) / len(self.samples), 1),
            "max_percent": max(self.samples),
            "samples": len(self.samples),
            "every_s": self.every_s,
        }


def profile_table(run: Callable[[], object], device: torch.device, rows: int = 30) -> str:
    """One call of `run` under torch.profiler; the top `rows` ops by self time on the device
    (CUDA) or the CPU, as torch prints them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=False) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
