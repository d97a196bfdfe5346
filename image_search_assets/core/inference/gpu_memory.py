"""CUDA out-of-memory, told apart and cleaned up after (no imports beyond the standard library,
so the engine can use it wherever torch runs)."""

from __future__ import annotations

import sys


class GpuMemoryExhausted(RuntimeError):
    """CUDA ran out of memory at batch size 1: a smaller batch cannot help."""


def is_cuda_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error that a smaller batch may avoid."""
    if isinstance(exc, GpuMemoryExhausted):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Older torch and some kernels raise a bare RuntimeError with this text.
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def release_gpu_memory() -> None:
    """Returns cached CUDA blocks after an OOM, so that a retry in this process starts clean."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
