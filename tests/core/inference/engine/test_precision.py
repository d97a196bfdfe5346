"""Reduced precision: which dtype a stage runs in, and the calibration against fp32 that picks it.

The engine tests run autocast on the CPU (an explicit dtype or a candidate tuple is honoured on
any device), so the same code that picks fp16/bf16 on a GPU is exercised here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from image_search_assets.core.config import PRECISIONS
from image_search_assets.core.inference import models
from image_search_assets.core.inference.engine import (
    EngineStats,
    detect_boxes,
    embed_crops,
    precision,
)
from image_search_assets.core.inference.models import ModelSpec
from image_search_assets.settings import load_settings
from tests.core.inference.engine.conftest import jpeg, product
from tests.core.inference.engine.test_detect import assert_equivalent, naive
from tests.core.inference.engine.test_embed import boxes_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")

FP16, BF16 = torch.float16, torch.bfloat16
CPU = torch.device("cpu")


def test_auto_is_fp32_on_the_cpu_and_explicit_choices_hold_anywhere():
    assert precision.resolve(CPU, "auto") is None
    # CPU fp16 is emulated (slow); bf16 only where the CPU has it natively.
    native = precision.cpu_has_bf16()
    assert precision.resolve(CPU, "calibrate") == ((BF16,) if native else None)
    assert precision.resolve(CPU, BF16) is BF16
    assert precision.resolve(CPU, (FP16, BF16)) == (FP16, BF16)
    assert precision.resolve(CPU, None) is None
    assert [precision.from_config(p) for p in ("auto", "calibrate", "fp32", "fp16", "bf16")] == [
        "auto",
        "calibrate",
        None,
        FP16,
        BF16,
    ]
    assert precision.engine_options("auto", True) == {"amp": "auto", "compile": True}
    # settings.py spells the choices out to stay free of torch; they must be the engine's own.
    assert set(PRECISIONS) == {precision.AUTO, precision.CALIBRATE, *precision.AMP_DTYPES}
    with pytest.raises(ValueError, match="'fp8'"):
        precision.resolve(CPU, "fp8")


class Counting:
    """A `run` for calibrate: fp32 gives `truth`, each dtype what `outputs` says; counts calls."""

    def __init__(self, outputs: dict):
        self.outputs, self.calls = outputs, []

    def __call__(self, dtype):
        self.calls.append(dtype)
        return 1.0 if dtype is None else self.outputs[dtype]


def test_calibrate_takes_the_first_candidate_that_agrees_once_per_module():
    module, record = nn.Identity(), {}
    run = Counting({FP16: 0.5, BF16: 0.9995})
    chosen = precision.calibrate(module, run, (FP16, BF16), lambda a, b: b, 0.999, record)
    assert chosen is BF16 and record == {"float16": 0.5, "bfloat16": 0.9995}
    assert run.calls == [None, FP16, BF16]
    again: dict = {}  # the next chunk of the step: the decision and its figures, no rerun
    assert precision.calibrate(module, run, (FP16, BF16), lambda a, b: b, 0.999, again) is BF16
    assert again == record and len(run.calls) == 3


def test_calibrate_falls_back_to_fp32_and_a_nan_never_passes():
    record: dict = {}
    run = Counting({FP16: float("nan"), BF16: 0.2})
    assert (
        precision.calibrate(nn.Identity(), run, (FP16, BF16), lambda a, b: b, 0.9, record) is None
    )
    assert np.isnan(record["float16"]) and record["bfloat16"] == 0.2


@pytest.fixture(scope="module")
def demo_detector():
    """The committed demo SSDlite (trained: its scores are not the near-ties of random init)."""
    settings = load_settings()
    d = settings.detector
    spec = ModelSpec.from_config(
        dataclasses.replace(d, weights="demo"), len(settings.category_names) + 1
    )
    return models.load_detector.__wrapped__(spec, "cpu"), d.score_threshold


@pytest.fixture(scope="module")
def demo_products():
    return [jpeg(product(i, size=192)) for i in range(12)]


def test_trained_detector_runs_fp16_and_matches_the_naive_fp32_path(demo_detector, demo_products):
    detector, threshold = demo_detector
    expected = naive(detector, demo_products, threshold, class_ids=())
    stats = EngineStats()
    got = detect_boxes(
        detector,
        demo_products,
        class_ids=(),
        score_threshold=threshold,
        batch_size=4,
        stats=stats,
        amp=(FP16,),
    )
    assert stats.precision == "float16"
    assert stats.calibration["float16"] >= precision.DETECT_TOLERANCE
    assert sum(b.box_source == "detector" for b in got) >= 10  # real boxes were compared
    # The same boxes, but for ties at the threshold (image 3 scores 0.5001 in fp32).
    ties = [abs(b.score - threshold) <= precision.BORDERLINE for b in expected]
    assert_equivalent(
        [b for b, tie in zip(expected, ties, strict=True) if not tie],
        [b for b, tie in zip(got, ties, strict=True) if not tie],
        score_tolerance=5e-3,
        candidates=False,
    )
    assert sum(ties) <= 1


class Scaled(nn.Module):
    """An embedder whose features are ~1e-8: below fp16's smallest subnormal (6e-8), well inside
    bf16's range. Real networks get there too (efficientnet_b0 random init under fp16)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1e-8


def test_an_embedder_that_underflows_fp16_is_run_in_bf16(embedder, blobs):
    boxes = boxes_for(blobs)
    reference = embed_crops(embedder, blobs, boxes, input_size=64, batch_size=4, amp=None)
    tiny = dataclasses.replace(embedder, module=Scaled(embedder.module))
    stats = EngineStats()
    got = embed_crops(
        tiny, blobs, boxes, input_size=64, batch_size=4, stats=stats, amp=(FP16, BF16)
    )
    assert stats.calibration["float16"] < 0.5  # zero vectors: fp16 refused
    assert stats.calibration["bfloat16"] >= precision.EMBED_TOLERANCE
    assert stats.precision == "bfloat16" and stats.as_metadata()["calibration"] == stats.calibration
    assert (got * reference).sum(axis=1).min() >= precision.EMBED_TOLERANCE


def test_fp32_when_no_candidate_agrees(embedder, blobs):
    boxes = boxes_for(blobs)
    tiny = dataclasses.replace(embedder, module=Scaled(embedder.module))
    stats = EngineStats()
    embed_crops(tiny, blobs, boxes, input_size=64, batch_size=4, stats=stats, amp=(FP16,))
    assert stats.precision == "fp32" and set(stats.calibration) == {"float16"}
