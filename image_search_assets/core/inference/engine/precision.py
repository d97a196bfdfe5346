"""Which autocast dtype a stage runs in, checked against fp32 on the run's own first batch.

Reduced precision is a speed choice, and whether it is also a safe one depends on the weights.
Measured with CPU autocast over 64 images (`python benchmarks/amp_numerics.py`, results in
benchmarks/results/amp_numerics_cpu.json): fp16 turns every randomly initialised efficientnet_b0
feature vector into zeros (its activations underflow fp16's range) where bf16 keeps cosine >=
0.9998; the demo SSDlite's boxes move by IoU >= 0.9996 in fp16 but 0.997 in bf16, and with both
stages in bf16 such a shift moved one crop's embedding to cosine 0.981. No fixed dtype is right
for every model.

So `amp="auto"` on CUDA calibrates: the first batch runs in fp32 and in each candidate (fp16,
then bf16); the first candidate that agrees with fp32 within the equivalence tolerance (detect:
same label and box source, IoU >= 0.98, ties at the score threshold aside; embed: cosine >=
0.999) runs the rest, else fp32 does. Decided once per model per process; the agreement
figures go to EngineStats.calibration, hence to asset metadata.

On the CPU "auto" is fp32; "calibrate" calibrates on every device, on the CPU bf16 alone and
only where the CPU has it natively (fp16 is emulated there, 5-15x slower than fp32 here; bf16
is 1.7-2x faster with this CPU's avx512_bf16, and emulated without it). An explicit dtype is
used as given, on any device, and a tuple of dtypes is calibrated on any device (how the tests
exercise calibration on the CPU).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from image_search_assets.core.inference.naive import ChosenBox

T = TypeVar("T")

AUTO = "auto"
CALIBRATE = "calibrate"
# fp16 first: 10 mantissa bits against bf16's 7, so it is the closer of the two to fp32 wherever
# its range suffices; on current tensor cores both run at the same rate.
AUTO_CANDIDATES = (torch.float16, torch.bfloat16)
AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

DETECT_TOLERANCE = 0.98  # min IoU of each image's chosen box (0 when label or source differ)
EMBED_TOLERANCE = 0.999  # min cosine of each embedding
BORDERLINE = 0.01  # detect: images whose best score is this close to the threshold are ties
CALIBRATION_IMAGES = 32  # at most this many of the first batch are run in every candidate

# None: fp32; a dtype: that dtype; a tuple: calibrated among them; "auto": see the docstring.
Amp = torch.dtype | None | tuple[torch.dtype, ...] | str


def from_config(precision: str) -> Amp:
    """The `amp` option for a config's `precision` (auto | calibrate | fp32 | fp16 | bf16)."""
    return precision if precision in (AUTO, CALIBRATE) else AMP_DTYPES[precision]


def engine_options(precision: str, compile: bool) -> dict:
    """detect_boxes / embed_crops options from a model config's `precision` and `compile`."""
    return {"amp": from_config(precision), "compile": compile}


def resolve(device: torch.device, amp: Amp) -> torch.dtype | None | tuple[torch.dtype, ...]:
    """`amp` for `device`: a dtype to use, None for fp32, or the candidates to calibrate.
    bf16 becomes fp16 on GPUs without bf16."""
    if amp in (AUTO, CALIBRATE):
        cpu = (torch.bfloat16,) if amp == CALIBRATE and cpu_has_bf16() else None
        amp = AUTO_CANDIDATES if device.type == "cuda" else cpu
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if isinstance(amp, tuple):
            return tuple(dict.fromkeys(torch.float16 if d == torch.bfloat16 else d for d in amp))
        if amp == torch.bfloat16:
            return torch.float16
    if isinstance(amp, str):
        raise ValueError(f"amp {amp!r} is not 'auto', 'calibrate', a dtype, None or dtypes")
    return amp


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (avx512_bf16 or AMX): the speed is the reason to
    leave fp32, and elsewhere oneDNN emulates bf16."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


# Each module's decision per candidate tuple: (dtype, agreement record), made once per process.
_DECIDED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def calibrate(
    module: nn.Module,
    run: Callable[[torch.dtype | None], T],
    candidates: tuple[torch.dtype, ...],
    agreement: Callable[[T, T], float],
    tolerance: float,
    record: dict[str, float],
) -> torch.dtype | None:
    """The first of `candidates` whose `run(dtype)` agrees with `run(None)` (fp32) at or above
    `tolerance`, else None. Each tried candidate's agreement is written to `record`; a NaN
    agreement (non-finite outputs) fails. Decided once per `module` and candidates (later
    calls, e.g. the next chunk of a step, reuse the decision and its figures)."""
    decided = _DECIDED.setdefault(module, {})
    if candidates not in decided:
        reference, tried, chosen = run(None), {}, None
        for dtype in candidates:
            score = float(agreement(reference, run(dtype)))
            tried[name(dtype)] = round(score, 6) if score == score else float("nan")
            if score >= tolerance:
                chosen = dtype
                break
        decided[candidates] = (chosen, tried)
    chosen, tried = decided[candidates]
    record.update(tried)
    return chosen


def box_agreement(
    reference: Sequence[ChosenBox], other: Sequence[ChosenBox], threshold: float = 0.0
) -> float:
    """The worst image's agreement: its chosen boxes' IoU, 0 when label or source differ.

    An image whose best score is within BORDERLINE of the score threshold on either side is
    left out: its pick flips with any rounding (a 0.5001 box against a 0.5 threshold), so it
    says nothing about the precision, only about the tie.
    """
    pairs = [
        (a, b)
        for a, b in zip(reference, other, strict=True)
        if all(abs(x.score - threshold) > BORDERLINE for x in (a, b) if x.box_source == "detector")
    ]
    if not pairs:
        return 1.0
    iou = box_iou(
        torch.tensor([[a.x1, a.y1, a.x2, a.y2] for a, _ in pairs]),
        torch.tensor([[b.x1, b.y1, b.x2, b.y2] for _, b in pairs]),
    ).diagonal()
    same = torch.tensor([(a.label, a.box_source) == (b.label, b.box_source) for a, b in pairs])
    return float(torch.where(same, iou, 0.0).min())


def cosine_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """The worst row's cosine between L2-normalised embeddings (NaN if any is not finite)."""
    if not len(reference):
        return 1.0
    return float((reference * other).sum(axis=1).min())
