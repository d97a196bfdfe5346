"""One factory builds every category's detections → embeddings → annoy_index chain."""

from typing import Any, cast

import dagster as dg
import numpy as np
import pandas as pd

from image_search_assets.assets.guards import previous_models, require_configured_models
from image_search_assets.assets.retrying import (
    crash_retry_policy,
    failure_policy,
    resume_scope,
    stop_if_terminated,
)
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, live_set, retention
from image_search_assets.core.inference.chunks import work_prefix
from image_search_assets.core.inference.engine.runtime import device_model
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.inference.stages import StageResult, detect_items, embed_items
from image_search_assets.core.progress import Progress
from image_search_assets.core.records import asset_value_key, removals_key
from image_search_assets.core.storage import Storage
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import Category, Settings
from image_search_assets.tags import detector_class_ids, gpu_pool, gpu_tags, step_gpus
from resources import PREVIOUS_PARTITION, STORED_BY_STEP, ModelsResource, StorageResource

PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def _model_metadata(context: dg.AssetExecutionContext, identity: dict) -> dict[str, str]:
    if identity["weights"] == "random":
        context.log.warning(f"{identity['arch']} runs with RANDOM weights: demo/test only")
    return {f"model_{k}": str(v) for k, v in identity.items()}


def _category_labels(
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


def _planned_gpus(context: dg.AssetExecutionContext, category: Category) -> int:
    """GPUs this step was sized for: the day's plan (run tag) or the hand-set config."""
    return step_gpus(context.run.tags, gpu_tags(category))


def _run_metadata(result: StageResult) -> dict[str, Any]:
    """Chunks computed vs reused, and what the engine did for the computed ones."""
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


def _removed_ids(context: dg.AssetExecutionContext, store: Storage, day: str) -> set[str]:
    """The day's catalog removals (new_products records them for every category)."""
    key = removals_key(day)
    if not store.exists(key):
        context.log.warning(f"no removals record for {day} ({store.uri(key)}): none applied")
        return set()
    return set(store.read_parquet(key)["product_id"].astype(str))


def category_assets(
    category: Category, *, partitions: dg.PartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    name = category.name
    # Sizes a random detector's head only: a checkpoint's head is sized by its recorded labels.
    random_head = len(settings.categories) + 1
    common: dict[str, Any] = {
        "partitions_def": partitions,
        "group_name": name,
        "io_manager_key": "storage_io",
        "retry_policy": crash_retry_policy(settings.retry),
    }

    @dg.asset(
        key=[name, "detections"],
        ins={"product_images": dg.AssetIn(["product_images"])},
        pool=gpu_pool(category),
        op_tags={**gpu_tags(category), **k8s_op_tags(settings, category, gpu=True)},
        tags=gpu_tags(category),
        kinds={"pytorch"},
        **common,
    )
    def detections(
        context: dg.AssetExecutionContext,
        product_images: pd.DataFrame,
        models: ModelsResource,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """The day's items of this category: one detected box per product image."""
        with failure_policy(context, settings.retry):
            before = previous_models(context, settings, storage)
            gpus = _planned_gpus(context, category)
            detector = models.detector_replicas(random_head, gpus, storage.read_gs)
            class_ids = _category_labels(context, category, detector.primary)
            require_configured_models(context, models, storage, detector.primary, before)
            todo = cast(pd.DataFrame, product_images[product_images["category"] == name])
            result = detect_items(
                todo,
                storage.open(),
                detector,
                class_ids=class_ids,
                score_threshold=models.detector.score_threshold,
                batch_size=models.detector.batch_size,
                work_prefix=work_prefix(context.partition_key, name, "detections"),
                chunk_size=settings.chunk_size,
                run_scope=resume_scope(context),
                progress=Progress(f"{name} detect", len(todo), context.log.info, unit="images"),
            )
        sources = result.table["box_source"].value_counts().to_dict()
        # The box's model identity travels with it into the vectors and the live set.
        table = result.table.assign(detector=live_set.identity_json(detector.primary.identity))
        return dg.Output(
            table,
            metadata={
                "items": len(result.table),
                "box_sources": {str(k): int(v) for k, v in sources.items()},
                "images_per_second": round(result.items_per_second, 2),
                **_run_metadata(result),
                "devices": ", ".join(map(str, detector.devices)),
                "device_count": len(detector.devices),
                "gpu_model": device_model(detector.devices),  # the schedule plans per model
                "gpus": gpus,
                "class_ids": ", ".join(map(str, class_ids)) or "any",
                **_model_metadata(context, detector.primary.identity),
            },
        )

    @dg.asset(
        key=[name, "embeddings"],
        ins={"detections": dg.AssetIn([name, "detections"])},
        pool=gpu_pool(category),
        op_tags={**gpu_tags(category), **k8s_op_tags(settings, category, gpu=True)},
        tags=gpu_tags(category),
        kinds={"pytorch"},
        **common,
    )
    def embeddings(
        context: dg.AssetExecutionContext,
        detections: pd.DataFrame,
        models: ModelsResource,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """L2-normalised feature vectors of the day's cropped items."""
        with failure_policy(context, settings.retry):
            gpus = _planned_gpus(context, category)
            embedder = models.embedder_replicas(gpus, storage.read_gs)
            result = embed_items(
                detections,
                storage.open(),
                embedder,
                input_size=models.embedder.input_size,
                batch_size=models.embedder.batch_size,
                work_prefix=work_prefix(context.partition_key, name, "embeddings"),
                chunk_size=settings.chunk_size,
                run_scope=resume_scope(context),
                progress=Progress(f"{name} embed", len(detections), context.log.info, unit="crops"),
            )
        identity = embedder.primary.identity
        boxes = live_set.with_model_columns(detections)  # an old partition's: detector unknown
        detector_of = dict(zip(boxes["product_id"], boxes["detector"], strict=True))
        table = result.table.assign(embedder=live_set.identity_json(identity))
        table["detector"] = [detector_of.get(p, live_set.UNKNOWN) for p in table["product_id"]]
        return dg.Output(
            table,
            metadata={
                "items": len(table),
                "dim": int(identity["dim"]),
                "crops_per_second": round(result.items_per_second, 2),
                **_run_metadata(result),
                "devices": ", ".join(map(str, embedder.devices)),
                "device_count": len(embedder.devices),
                "gpu_model": device_model(embedder.devices),  # the schedule plans per model
                "gpus": gpus,
                **_model_metadata(context, identity),
            },
        )

    @dg.asset(
        key=[name, "annoy_index"],
        ins={
            "embeddings": dg.AssetIn([name, "embeddings"]),
            "previous": dg.AssetIn(
                [name, "annoy_index"],
                partition_mapping=PREVIOUS_DAY,
                metadata={PREVIOUS_PARTITION: True},
            ),
        },
        kinds={"annoy"},
        op_tags=k8s_op_tags(settings, category, gpu=False),
        metadata={STORED_BY_STEP: True},
        **common,
    )
    def annoy_index(
        context: dg.AssetExecutionContext,
        embeddings: pd.DataFrame,
        previous: pd.DataFrame | None,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """The live set of this category to date, published as a verified Annoy index.

        The value names which stored embedding rows are live; the vectors stay in the daily
        embeddings partitions (core/index/live_set.py)."""
        day = context.partition_key
        store = storage.open()
        try:
            live_set.require_one_model(previous, embeddings, category=name, day=day)
        except live_set.ModelChangeError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from e
        removed = _removed_ids(context, store, day)
        live = live_set.advance(previous, embeddings, day, removed)
        before = set() if previous is None else set(previous["product_id"])
        counts = {
            "count": len(live),
            "new_items": len(embeddings),
            "previous_count": len(before),
            "removed": len(before & (removed - set(embeddings["product_id"]))),
        }
        served_dim = annoy.current_dim(store, name)
        value_key = asset_value_key([name, "annoy_index"], day)
        if len(live) == 0 and served_dim is None:
            context.log.warning(f"{name}: no items to date; nothing to publish")
            store.write_parquet(value_key, live)
            return dg.Output(live, metadata=counts)
        with failure_policy(context, settings.retry):
            if len(live):
                vectors = live_set.load_vectors(store, name, live, loaded={day: embeddings})
            else:  # every product removed: an empty index replaces the served one
                vectors = np.zeros((0, served_dim or 0), np.float32)
            manifest = annoy.publish(
                store,
                name,
                day,
                live["product_id"].tolist(),
                vectors,
                metric=settings.index.metric,
                n_trees=settings.index.n_trees,
                models=live_set.manifest_models(live),
                recall_sample=settings.index.recall_sample,
                retention=settings.index.retention,
                move_current=False,
            )
            # Publish last: whatever can fail happens before CURRENT moves. The day's live set,
            # which the next day builds on, is stored here rather than by the IO manager after
            # the step, and retention reads and prunes the old records now.
            store.write_parquet(value_key, live)
            pruned = retention.prune_category(store, name, day, keep_days=settings.index.keep_days)
            stop_if_terminated(context)  # an operator's stop wins over the final act
            served = current.advance(
                store,
                name,
                version=manifest["version"],
                day=day,
                count=len(live),
                retention=settings.index.retention,
            )
        # CURRENT has moved (or was held): the step's outcome is decided. Pruning old versions
        # is housekeeping that the next publish repeats, so its failure is a warning.
        pointer = None
        try:
            annoy.prune(store, name, keep=settings.index.retention)
            pointer = current.read_pointer(store, name)
        except Exception as e:  # noqa: BLE001
            context.log.warning(f"{name}: pruning old versions failed, next publish retries: {e}")
        if not served.moved:
            context.log.warning(f"{name}: CURRENT not moved: {served.reason}")
        return dg.Output(
            live,
            metadata={
                **counts,
                "version": manifest["version"],
                "served_version": served.serving,
                "current": served.reason,
                "serving": current.describe(name, pointer) if pointer else served.reason,
                "recall_at_10": manifest["recall_at_10"],
                "build_seconds": manifest["build_seconds"],
                **pruned.as_metadata(),
            },
        )

    # `dg.asset(**common)` matches dg.asset's compute_fn overload for a type checker, which then
    # sees plain functions; at run time these are AssetsDefinitions.
    return cast(list[dg.AssetsDefinition], [detections, embeddings, annoy_index])
