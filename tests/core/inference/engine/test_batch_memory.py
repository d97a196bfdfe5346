"""The engine's first batch follows the GPU's free memory; on a CPU the configured one stands.

This machine has no GPU, so the GPU side is driven through `free_bytes`, the figure
`torch.cuda.mem_get_info` would report; the CPU path runs the real engine end to end.
"""

from __future__ import annotations

import pytest
import torch

from image_search_assets.core.inference.engine import EngineStats, detect_boxes, embed_crops
from image_search_assets.core.inference.engine.runtime import (
    MAX_BATCH_SCALE,
    REFERENCE_FREE_BYTES,
    device_model,
    sized_for_memory,
)
from tests.core.inference.engine.conftest import CLASS_IDS
from tests.core.inference.engine.test_embed import boxes_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision")
GIB = 2**30
CUDA = torch.device("cuda", 0)


def test_on_a_cpu_the_configured_batch_stands():
    assert sized_for_memory(8, torch.device("cpu")) == 8
    assert device_model(["cpu", torch.device("cpu")]) == "cpu"


@pytest.mark.parametrize(
    "free_gib, expected",
    [
        (14, 8),  # the T4 the batch was chosen on
        (21, 8),  # an L4 (22 GiB) with a little in use: under 2x, so unchanged
        (28, 16),  # twice the memory, twice the batch
        (75, 32),  # an H100: 5x rounds down to 4x
        (500, 8 * MAX_BATCH_SCALE),  # capped
        (7, 4),  # a GPU half taken by another process: half the batch
        (0.5, 1),  # never below one
    ],
)
def test_the_batch_scales_with_free_gpu_memory(free_gib, expected):
    assert sized_for_memory(8, CUDA, free_bytes=int(free_gib * GIB)) == expected
    assert REFERENCE_FREE_BYTES == 14 * GIB


def test_detection_and_embedding_on_a_cpu_run_the_configured_batch(ssdlite, embedder, blobs):
    stats = EngineStats()
    detect_boxes(
        ssdlite, blobs, class_ids=CLASS_IDS, score_threshold=0.35, batch_size=4, stats=stats
    )
    assert stats.batch_size == 4 and stats.devices == ["cpu"]
    stats = EngineStats()
    embed_crops(embedder, blobs, boxes_for(blobs), input_size=64, batch_size=2, stats=stats)
    assert stats.batch_size == 2 and device_model(stats.devices) == "cpu"
