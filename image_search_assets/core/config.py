"""The configuration types that core reads (Dagster-free, no imports above core).

settings.py parses platform.yaml into these and re-exports them; they live here so that the
dependency points one way: settings imports core, core never imports settings (import-linter
holds it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ConfigError(ValueError):
    """The configuration is invalid; the message says what to fix."""


# The engine's choices (core/inference/engine/precision.py), spelled out so that config needs
# no torch; tests/core/inference/engine/test_precision.py holds the two together.
PRECISIONS = ("auto", "calibrate", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    weights: str = "random"
    input_size: int = 224
    batch_size: int = 16
    score_threshold: float = 0.5
    precision: str = "auto"  # auto | calibrate | fp32 | fp16 | bf16 (engine/precision.py)
    compile: bool = False  # torch.compile (any device); pays off on long runs (see benchmarks)
    sha256: str | None = None  # pin the checkpoint: other bytes fail the step, never retried
    allow_torchscript: bool = False  # TorchScript carries code: load it only when set

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} is not 64 lower-case hex digits")
