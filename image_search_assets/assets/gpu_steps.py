"""What a category's GPU steps share: their decorator, their models and their metadata.

The daily detections and embeddings steps (assets/category.py) and the re-index op
(assets/reindex.py) load the configured models alike and run the one detect-then-embed
sequence (core/inference/detect_embed.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from image_search_assets.assets.retrying import resume_scope
from image_search_assets.core.inference.detect_embed import ModelParams, Work
from image_search_assets.core.inference.engine.runtime import device_model
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.inference.stages import Replicas, StageResult
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import Category, Settings
from image_search_assets.tags import (
    detector_class_ids,
    gpu_pool,
    gpu_tags,
    random_detector_classes,
    step_gpus,
)
from resources import ModelsResource, StorageResource


def gpu_asset(
    category: Category,
    settings: Settings,
    common: dict[str, Any],
    *,
    stage: str,
    upstream: list[str],
) -> Callable[..., Any]:
    """The decorator of one of the category's GPU steps (`stage` is detections or embeddings):
    on the category's GPU pool, with its GPU tags and its GPU pod; `upstream` is its input."""
    tags = gpu_tags(category)
    return dg.asset(
        key=[category.name, stage],
        ins={upstream[-1]: dg.AssetIn(upstream)},
        pool=gpu_pool(category),
        op_tags={**tags, **k8s_op_tags(settings, category, gpu=True)},
        tags=tags,
        kinds={"pytorch"},
        **common,
    )


def planned_gpus(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, category: Category
) -> int:
    """GPUs this step was sized for: the day's plan (run tag) or the hand-set config."""
    return step_gpus(context.run.tags, gpu_tags(category))


def load_detector(
    models: ModelsResource, settings: Settings, storage: StorageResource, gpus: int
) -> Replicas:
    return models.detector_replicas(random_detector_classes(settings), gpus, storage.read_gs)


def load_embedder(models: ModelsResource, storage: StorageResource, gpus: int) -> Replicas:
    return models.embedder_replicas(gpus, storage.read_gs)


def model_params(models: ModelsResource) -> ModelParams:
    """How the configured models run, as the models resource sets it."""
    return ModelParams(models.detector, models.embedder)


def daily_work(
    context: dg.AssetExecutionContext, storage: StorageResource, settings: Settings, name: str
) -> Work:
    """Where the day's step of category `name` keeps its resumable chunks."""
    return Work(
        storage.open(),
        context.partition_key,
        name,
        run_scope=resume_scope(context),
        chunk_size=settings.chunk_size,
        log=context.log.info,
    )


def category_labels(
    context: dg.AssetExecutionContext, category: Category, detector: LoadedModel
) -> tuple[int, ...]:
    """The detector labels of `category`, by name; warns when the detector has none of them."""
    class_ids = detector_class_ids(category, detector.labels)
    if not class_ids and detector.labels is not None:
        wanted = ", ".join(category.labels or (category.name,))
        context.log.warning(
            f"{category.name}: the detector ({detector.identity['weights']}) has no label named "
            f"{wanted} and the category sets no class_ids, so its items get the best box of any "
            "label (the full image when none clears score_threshold). Fix: train the detector "
            "on it, or set labels or class_ids on the category in platform.yaml"
        )
    return class_ids


def gpu_metadata(
    context: dg.AssetExecutionContext, result: StageResult, models: Replicas, gpus: int
) -> dict[str, Any]:
    """Chunks computed vs reused, what the engine did, and where and with what model it ran."""
    devices = models.devices
    return {
        **_run_metadata(result),
        "devices": ", ".join(map(str, devices)),
        "device_count": len(devices),  # the schedule's plan reads the number
        "gpu_model": device_model(devices),  # the schedule plans per model
        "gpus": gpus,
        **_model_metadata(context, models.primary.identity),
    }


def _model_metadata(context: dg.AssetExecutionContext, identity: dict) -> dict[str, str]:
    if identity["weights"] == "random":
        context.log.warning(f"{identity['arch']} runs with RANDOM weights: demo/test only")
    return {f"model_{k}": str(v) for k, v in identity.items()}


def _run_metadata(result: StageResult) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if result.chunks is not None:
        meta |= {
            "chunks_computed": len(result.chunks.computed),
            "chunks_reused": len(result.chunks.reused),
            "batch_size": result.chunks.batch_size,
        }
    if result.engine_stats is not None and result.engine_stats.images:
        engine = result.engine_stats.as_metadata()
        meta |= {
            "engine_images_per_second": engine["images_per_second"],
            "engine_batch_size": engine["batch_size"],
            "engine_oom_halvings": str(engine["oom_halvings"]),
            "engine_precision": _precision_text(engine["precision"], engine["calibration"]),
            "engine": engine,
        }
    return meta


def _precision_text(precision: str, calibration: dict[str, float]) -> str:
    """e.g. "float16 (calibrated against fp32: float16 0.9996)" or "fp32"."""
    if not calibration:
        return precision
    tried = ", ".join(f"{dtype} {score}" for dtype, score in calibration.items())
    return f"{precision} (calibrated against fp32: {tried})"
