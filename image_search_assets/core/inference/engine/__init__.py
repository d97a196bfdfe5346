"""The batched inference engine: reader (bytes → decoded batches on the device), mappers
(batched detection, on-device cropping, embedding) and multi-device workers. Dagster-free.

    boxes = detect_boxes(detector, blobs, class_ids=ids, score_threshold=0.5, batch_size=64)
    vectors = embed_crops(embedder, blobs, boxes, input_size=224, batch_size=256)

Both match the naive per-image reference path (core/inference/naive.py) within the tolerances
that tests/core/inference/engine asserts. Pass `stats=EngineStats()` to get images/s, per-stage
seconds, the batch sizes used (OOM halvings included) and the devices, e.g. for asset metadata via
`stats.as_metadata()`.
"""

from image_search_assets.core.inference.engine.detect import detect_boxes
from image_search_assets.core.inference.engine.embed import embed_crops
from image_search_assets.core.inference.engine.precision import engine_options
from image_search_assets.core.inference.engine.reader import decode_batch
from image_search_assets.core.inference.engine.runtime import EngineStats
from image_search_assets.core.inference.engine.workers import (
    cpu_workers,
    detect_sharded,
    embed_sharded,
    run_sharded,
    visible_devices,
)

__all__ = [
    "EngineStats",
    "cpu_workers",
    "decode_batch",
    "detect_boxes",
    "detect_sharded",
    "embed_crops",
    "embed_sharded",
    "engine_options",
    "run_sharded",
    "visible_devices",
]
