"""OOM-adaptive batching (with an injected CUDA OOM) and the stats the assets report."""

from __future__ import annotations

import pytest
import torch

from image_search_assets.core.failures import GpuMemoryExhausted
from image_search_assets.core.inference.engine import EngineStats, detect_boxes, embed_crops
from image_search_assets.core.inference.engine.fold import folded
from image_search_assets.core.inference.engine.runtime import AdaptiveBatch
from tests.core.inference.engine.conftest import CLASS_IDS
from tests.core.inference.engine.test_embed import boxes_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")


class OomAbove:
    """Wraps a callable taking a batch tensor; raises a CUDA OOM for batches above `limit`."""

    def __init__(self, fn, limit: int, error: type[BaseException] = torch.OutOfMemoryError):
        self.fn, self.limit, self.error, self.sizes = fn, limit, error, []

    def __call__(self, x, *args, **kwargs):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.fn(x, *args, **kwargs)


def test_oom_halves_the_batch_and_keeps_it_halved():
    stats = EngineStats()
    adaptive = AdaptiveBatch(8, stats)
    fake = OomAbove(lambda x: list(x), limit=2, error=RuntimeError)
    first = adaptive.map(lambda s, e: fake(range(s, e)), 10)
    assert [i for part in first for i in part] == list(range(10))
    assert stats.oom_halvings == [4, 2] and stats.batch_size == 2
    second = adaptive.map(lambda s, e: fake(range(s, e)), 4)  # starts at the halved size
    assert fake.sizes[-2:] == [2, 2] and len(second) == 2


def test_oom_at_batch_one_raises_and_other_errors_pass_through():
    with pytest.raises(GpuMemoryExhausted):
        AdaptiveBatch(4, EngineStats()).map(lambda s, e: OomAbove(len, limit=0)(range(s, e)), 3)
    with pytest.raises(RuntimeError, match="shape mismatch"):

        def broken(s, e):
            raise RuntimeError("shape mismatch")

        AdaptiveBatch(4, EngineStats()).map(broken, 3)


def test_detection_survives_an_oom_and_reports_the_halved_batch(ssdlite, blobs, monkeypatch):
    expected = detect_boxes(ssdlite, blobs, class_ids=CLASS_IDS, score_threshold=0.35, batch_size=8)
    backbone = folded(ssdlite.module.backbone)  # what the engine runs (fold.py)
    monkeypatch.setattr(backbone, "forward", OomAbove(backbone.forward, limit=2))
    stats = EngineStats()
    got = detect_boxes(
        ssdlite, blobs, class_ids=CLASS_IDS, score_threshold=0.35, batch_size=8, stats=stats
    )
    assert stats.oom_halvings == [4, 2] and stats.batch_size == 2
    assert [b.label for b in got] == [b.label for b in expected]
    assert [b.score for b in got] == pytest.approx([b.score for b in expected], abs=1e-4)
    meta = stats.as_metadata()
    assert meta["batch_size"] == 2 and meta["oom_halvings"] == [4, 2] and meta["images"] == 8
    assert meta["images_per_second"] > 0


def test_embedding_survives_an_oom(embedder, blobs, monkeypatch):
    boxes = boxes_for(blobs)
    expected = embed_crops(embedder, blobs, boxes, input_size=64, batch_size=4)
    net = folded(embedder.module)  # what the engine runs (fold.py)
    monkeypatch.setattr(net, "forward", OomAbove(net.forward, limit=1))
    stats = EngineStats()
    got = embed_crops(embedder, blobs, boxes, input_size=64, batch_size=4, stats=stats)
    assert stats.oom_halvings == [2, 1] and stats.batch_size == 1
    assert (got * expected).sum(axis=1).min() >= 0.99999


def test_merged_stats_add_up():
    a = EngineStats(images=4, detect_seconds=1.0, batch_size=8, devices=["cuda:0"])
    b = EngineStats(images=6, detect_seconds=2.0, batch_size=4, devices=["cuda:1"])
    b.oom_halvings.append(4)
    a.merge(b)
    assert (a.images, a.detect_seconds, a.batch_size) == (10, 3.0, 4)
    assert a.devices == ["cuda:0", "cuda:1"] and a.oom_halvings == [4]
