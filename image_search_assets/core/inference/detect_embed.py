"""The detect-then-embed sequence, one for the daily GPU steps and the re-index (Dagster-free).

The daily graph runs the two halves as two steps (detections, embeddings); a re-index runs them
back to back. Either way each half stamps its rows with the model identities the live set
records (core/index/live_set.py): a box with its detector, a vector with its embedder and the
detector of its box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from image_search_assets.core.config import ModelConfig
from image_search_assets.core.index import live_set
from image_search_assets.core.inference.stages import (
    Replicas,
    StageResult,
    detect_items,
    embed_items,
)
from image_search_assets.core.layout import work_prefix
from image_search_assets.core.progress import Progress
from image_search_assets.core.storage import Storage


@dataclass(frozen=True)
class ModelParams:
    """How the configured models run (batch sizes, the detector's threshold, the crop size):
    their platform.yaml sections whole, as core/config.py parses them."""

    detector: ModelConfig
    embedder: ModelConfig


@dataclass(frozen=True)
class Work:
    """Where a category's day of GPU work keeps its resumable chunks and who may reuse them:
    a run and its retries reuse them (`run_scope`), a new run recomputes."""

    storage: Storage
    day: str
    category: str
    run_scope: str
    chunk_size: int
    log: Callable[[str], object] = print
    reindex: bool = False  # a re-index's chunks stay apart from the daily steps'

    def prefix(self, stage: str) -> str:
        return work_prefix(self.day, self.category, f"reindex-{stage}" if self.reindex else stage)

    def progress(self, verb: str, total: int, unit: str) -> Progress:
        label = f"{self.category} {'re-' if self.reindex else ''}{verb}"
        return Progress(label, total, self.log, unit=unit)


def detect(
    images: pd.DataFrame,
    detector: Replicas,
    class_ids: Sequence[int],
    params: ModelParams,
    work: Work,
) -> StageResult:
    """One box per product image (core/inference/stages.py), each naming its detector."""
    result = detect_items(
        images,
        work.storage,
        detector,
        class_ids=class_ids,
        score_threshold=params.detector.score_threshold,
        batch_size=params.detector.batch_size,
        work_prefix=work.prefix("detections"),
        chunk_size=work.chunk_size,
        run_scope=work.run_scope,
        progress=work.progress("detect", len(images), "images"),
    )
    # The box's model identity travels with it into the vectors and the live set.
    identity = live_set.identity_json(detector.primary.identity)
    return replace(result, table=result.table.assign(detector=identity))


def embed(
    detections: pd.DataFrame, embedder: Replicas, params: ModelParams, work: Work
) -> StageResult:
    """A vector per box, each naming its embedder and the detector of its box."""
    result = embed_items(
        detections,
        work.storage,
        embedder,
        input_size=params.embedder.input_size,
        batch_size=params.embedder.batch_size,
        work_prefix=work.prefix("embeddings"),
        chunk_size=work.chunk_size,
        run_scope=work.run_scope,
        progress=work.progress("embed", len(detections), "crops"),
    )
    boxes = live_set.with_model_columns(detections)  # an old partition's: detector unknown
    detector_of = dict(zip(boxes["product_id"], boxes["detector"], strict=True))
    table = result.table.assign(embedder=live_set.identity_json(embedder.primary.identity))
    table["detector"] = [detector_of.get(p, live_set.UNKNOWN) for p in table["product_id"]]
    return replace(result, table=table)


def detect_and_embed(
    images: pd.DataFrame,
    detector: Replicas,
    embedder: Replicas,
    class_ids: Sequence[int],
    params: ModelParams,
    work: Work,
) -> tuple[StageResult, StageResult]:
    """Both halves in order: (the boxes, the vectors)."""
    detected = detect(images, detector, class_ids, params, work)
    return detected, embed(detected.table, embedder, params, work)
