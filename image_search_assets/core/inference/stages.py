"""The day's GPU stages as plain functions over tables: detect, embed.

Assets call these; nothing here knows about Dagster. Fetching the images is
core/ingest/store_images.py, which imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from image_search_assets.core.inference import engine, naive
from image_search_assets.core.inference.chunks import ChunkedRun, run_chunks, salt_of
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.inference.read_ahead import ReadAhead
from image_search_assets.core.ingest.catalog import quarantine_frame
from image_search_assets.core.progress import Progress
from image_search_assets.core.storage import Storage

BOX_COLUMNS = ["x1", "y1", "x2", "y2", "label", "score", "box_source", "candidates"]
DETECTION_COLUMNS = ["product_id", "image_key", "image_sha256", *BOX_COLUMNS]


@dataclass(frozen=True)
class StageResult:
    table: pd.DataFrame
    quarantined: pd.DataFrame
    seconds: float
    chunks: ChunkedRun | None = None  # how a resumable GPU stage's chunks were obtained
    engine_stats: engine.EngineStats | None = None  # what the engine did (computed chunks only)

    @property
    def items_per_second(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Replicas:
    """One model on the devices a step may use, one engine worker per entry of `devices`;
    `load(device)` gives that device's copy (core.models caches one per device)."""

    load: Callable[[torch.device], LoadedModel]
    devices: tuple[torch.device, ...]
    options: Mapping[str, Any] = field(default_factory=dict)  # engine amp / compile

    @classmethod
    def of(cls, model: LoadedModel) -> Replicas:
        return cls(lambda _device: model, (model.device,))

    @property
    def primary(self) -> LoadedModel:
        return self.load(self.devices[0])


def _replicas(model: Replicas | LoadedModel) -> Replicas:
    return model if isinstance(model, Replicas) else Replicas.of(model)


def read_images(storage: Storage, keys: Sequence[str], workers: int | None = None) -> list[bytes]:
    """The stored (normalised RGB JPEG) bytes in `keys` order; the engine decodes them in
    batches. `storage.read_concurrency` reads run at once (GCS: 10, since each read waits tens
    of milliseconds; local disk: 1, where threads only add cost; benchmarks/read_images.py)."""
    workers = storage.read_concurrency if workers is None else workers
    if workers <= 1 or len(keys) <= 1:
        return [storage.read_bytes(key) for key in keys]
    with ThreadPoolExecutor(min(workers, len(keys)), thread_name_prefix="read-images") as pool:
        return list(pool.map(storage.read_bytes, keys))


def _run_stage(
    storage: Storage,
    work_prefix: str,
    table: pd.DataFrame,
    compute: Callable[[pd.DataFrame, int, list[bytes]], pd.DataFrame],
    *,
    progress: Progress | None,
    chunk_size: int,
    **chunk_options: Any,
) -> ChunkedRun:
    """run_chunks over `table`, `compute(part, batch, its images)` per chunk, each chunk's
    images read from storage while the previous chunk computes."""
    keys = table["image_key"].tolist() if len(table) else []
    chunks = [keys[i : i + chunk_size] for i in range(0, len(keys), chunk_size)]
    with ReadAhead(lambda part: read_images(storage, part), chunks) as reader:
        run = run_chunks(
            storage,
            work_prefix,
            table,
            lambda part, batch: compute(part, batch, reader.read(part["image_key"].tolist())),
            chunk_size=chunk_size,
            on_chunk=progress.advance if progress is not None else None,
            **chunk_options,
        )
    if progress is not None:
        progress.finish()
    return run


def detect_items(
    images: pd.DataFrame,
    storage: Storage,
    detector: Replicas | LoadedModel,
    *,
    class_ids: Sequence[int],
    score_threshold: float,
    batch_size: int,
    work_prefix: str,
    chunk_size: int,
    run_scope: str,
    progress: Progress | None = None,
) -> StageResult:
    """One item per product image: its category's best box, or the full frame.

    Runs on the batched engine, one worker per device. Resumable: chunks finished under
    `work_prefix` by an earlier attempt with the same `run_scope` (a run and its retries and
    re-executions) are not recomputed; a new run recomputes, so a code fix is never masked by
    old chunks.
    """
    started, models, stats = time.perf_counter(), _replicas(detector), engine.EngineStats()

    def detect_chunk(part: pd.DataFrame, batch: int, blobs: list[bytes]) -> pd.DataFrame:
        boxes = engine.detect_sharded(
            models.load,
            blobs,
            models.devices,
            stats=stats,
            class_ids=class_ids,
            score_threshold=score_threshold,
            batch_size=batch,
            **models.options,
        )
        table = _columns(part, ["product_id", "image_key"]).reset_index(drop=True)
        # Carried along so the embeddings' chunk fingerprints see the image content.
        table["image_sha256"] = part["sha256"].to_numpy()
        for column in BOX_COLUMNS:
            table[column] = [getattr(box, column) for box in boxes]
        return _columns(table, DETECTION_COLUMNS)

    salt = salt_of(
        scope=run_scope,
        model=models.primary.identity,
        class_ids=list(class_ids),
        score=score_threshold,
    )
    run = _run_stage(
        storage,
        work_prefix,
        images,
        detect_chunk,
        key_columns=["product_id", "image_key", "sha256"],
        salt=salt,
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=progress,
    )
    return StageResult(run.table, quarantine_frame(), time.perf_counter() - started, run, stats)


def embed_items(
    detections: pd.DataFrame,
    storage: Storage,
    embedder: Replicas | LoadedModel,
    *,
    input_size: int,
    batch_size: int,
    work_prefix: str,
    chunk_size: int,
    run_scope: str,
    progress: Progress | None = None,
) -> StageResult:
    """Each detection cropped and embedded; `vector` holds the L2-normalised features.

    Runs on the batched engine; resumable like detect_items.
    """
    started, models, stats = time.perf_counter(), _replicas(embedder), engine.EngineStats()

    def embed_chunk(part: pd.DataFrame, batch: int, blobs: list[bytes]) -> pd.DataFrame:
        boxes = [
            naive.ChosenBox(**{c: row[c] for c in BOX_COLUMNS}) for row in part.to_dict("records")
        ]
        vectors = engine.embed_sharded(
            models.load,
            blobs,
            boxes,
            models.devices,
            stats=stats,
            input_size=input_size,
            batch_size=batch,
            **models.options,
        )
        table = _columns(part, ["product_id", "box_source", "score"]).reset_index(drop=True)
        table["vector"] = list(vectors.astype(np.float32))
        return table

    run = _run_stage(
        storage,
        work_prefix,
        detections,
        embed_chunk,
        key_columns=["product_id", "image_key", "image_sha256", *BOX_COLUMNS],
        salt=salt_of(scope=run_scope, model=models.primary.identity, input_size=input_size),
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=progress,
    )
    return StageResult(run.table, quarantine_frame(), time.perf_counter() - started, run, stats)


def vectors_of(table: pd.DataFrame) -> np.ndarray:
    """The `vector` column as an (n, d) float32 matrix."""
    if table.empty:
        return np.zeros((0, 0), np.float32)
    return np.stack(table["vector"].tolist()).astype(np.float32)


def _columns(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    # A list of names selects a DataFrame; pandas' unannotated __getitem__ infers a union.
    return cast(pd.DataFrame, table[columns])
