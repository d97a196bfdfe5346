"""detect_boxes against the naive path (reference.detect + choose_box) on the same weights."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from image_search_assets.core.inference import naive as reference
from image_search_assets.core.inference.engine import EngineStats, detect_boxes
from tests.core.inference.engine.conftest import CLASS_IDS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


def naive(detector, blobs, threshold, class_ids=CLASS_IDS):
    pictures = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    raw = reference.detect(detector, pictures, batch_size=1)
    return [
        reference.choose_box(d, p.width, p.height, class_ids=class_ids, score_threshold=threshold)
        for d, p in zip(raw, pictures, strict=True)
    ]


def assert_equivalent(expected, got, score_tolerance=1e-3, candidates=True):
    assert len(expected) == len(got)
    for want, have in zip(expected, got, strict=True):
        assert have.box_source == want.box_source
        assert have.label == want.label
        assert have.score == pytest.approx(want.score, abs=score_tolerance)
        # Exact: both count the same post-NMS boxes; a near-tie at the threshold could flip one
        # (so not asserted under autocast, where scores move by ~1e-3).
        assert have.candidates == want.candidates or not candidates
        iou = box_iou(
            torch.tensor([[want.x1, want.y1, want.x2, want.y2]]),
            torch.tensor([[have.x1, have.y1, have.x2, have.y2]]),
        )
        assert float(iou) >= 0.98


@pytest.mark.parametrize(
    ("model", "threshold", "path"),
    [("ssdlite", 0.35, "vectorised:ssd"), ("retinanet", 0.54, "vectorised:retinanet")],
)
def test_vectorised_detection_matches_naive(request, blobs, model, threshold, path):
    detector = request.getfixturevalue(model)
    expected = naive(detector, blobs, threshold)
    stats = EngineStats()
    got = detect_boxes(
        detector, blobs, class_ids=CLASS_IDS, score_threshold=threshold, batch_size=3, stats=stats
    )
    assert_equivalent(expected, got)
    # The comparison means something: real boxes, and both outcomes, were compared.
    assert {b.box_source for b in got} == {"detector", "full_image"} or all(
        b.box_source == "detector" for b in got
    )
    assert sum(b.candidates for b in got) > len(got)
    assert stats.detect_path == path and stats.images == len(blobs) and stats.batch_size == 3
    assert stats.devices == ["cpu"] and stats.precision == "fp32"


def test_mixed_sizes_and_empty_class_list(ssdlite, retinanet, mixed_blobs):
    for detector, threshold in ((ssdlite, 0.35), (retinanet, 0.54)):
        expected = naive(detector, mixed_blobs, threshold, class_ids=())
        got = detect_boxes(
            detector, mixed_blobs, class_ids=(), score_threshold=threshold, batch_size=4
        )
        assert_equivalent(expected, got)
        for box, blob in zip(got, mixed_blobs, strict=True):
            width, height = Image.open(io.BytesIO(blob)).size
            assert 0 <= box.x1 <= box.x2 <= width and 0 <= box.y1 <= box.y2 <= height


def test_full_frame_when_no_box_passes(ssdlite, blobs):
    got = detect_boxes(ssdlite, blobs[:3], class_ids=CLASS_IDS, score_threshold=0.99, batch_size=8)
    assert [(b.box_source, b.x2, b.y2, b.candidates) for b in got] == [
        ("full_image", 128.0, 128.0, 0)
    ] * 3


def test_other_architectures_fall_back_to_the_stock_module(faster_rcnn, blobs):
    stats = EngineStats()
    got = detect_boxes(
        faster_rcnn, blobs[:4], class_ids=CLASS_IDS, score_threshold=0.05, batch_size=2, stats=stats
    )
    assert stats.detect_path == "stock:FasterRCNN"
    assert_equivalent(naive(faster_rcnn, blobs[:4], 0.05), got)
