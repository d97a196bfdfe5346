"""One factory builds every category's detections → embeddings → annoy_index chain."""

from typing import Any, cast

import dagster as dg
import numpy as np
import pandas as pd

from image_search_assets.assets.gpu_steps import (
    category_labels,
    daily_work,
    gpu_asset,
    gpu_metadata,
    load_detector,
    load_embedder,
    model_params,
    planned_gpus,
)
from image_search_assets.assets.guards import previous_models, require_configured_models
from image_search_assets.assets.retrying import (
    crash_retry_policy,
    failure_policy,
    stop_if_terminated,
)
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, live_set, retention
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.inference import detect_embed
from image_search_assets.core.layout import REMOVALS_ASSET, asset_value_key
from image_search_assets.core.storage import Storage
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import Category, Settings
from resources import PREVIOUS_PARTITION, STORED_BY_STEP, ModelsResource, StorageResource

PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def category_assets(
    category: Category, *, partitions: dg.PartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    common: dict[str, Any] = {
        "partitions_def": partitions,
        "group_name": category.name,
        "io_manager_key": "storage_io",
        "retry_policy": crash_retry_policy(settings.retry),
    }
    return [
        _detections(category, settings, common),
        _embeddings(category, settings, common),
        _annoy_index(category, settings, common),
    ]


def _detections(
    category: Category, settings: Settings, common: dict[str, Any]
) -> dg.AssetsDefinition:
    name = category.name

    @gpu_asset(category, settings, common, stage="detections", upstream=["product_images"])
    def detections(
        context: dg.AssetExecutionContext,
        product_images: pd.DataFrame,
        models: ModelsResource,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """The day's items of this category: one detected box per product image."""
        with failure_policy(context, settings.retry):
            before = previous_models(context, settings, storage)
            gpus = planned_gpus(context, category)
            detector = load_detector(models, settings, storage, gpus)
            class_ids = category_labels(context, category, detector.primary)
            require_configured_models(context, models, storage, detector.primary, before)
            todo = cast(pd.DataFrame, product_images[product_images["category"] == name])
            work = daily_work(context, storage, settings, name)
            result = detect_embed.detect(todo, detector, class_ids, model_params(models), work)
        sources = result.table["box_source"].value_counts().to_dict()
        return dg.Output(
            result.table,
            metadata={
                "items": len(result.table),
                "box_sources": {str(k): int(v) for k, v in sources.items()},
                "images_per_second": round(result.items_per_second, 2),
                "class_ids": ", ".join(map(str, class_ids)) or "any",
                **gpu_metadata(context, result, detector, gpus),
            },
        )

    return cast(dg.AssetsDefinition, detections)


def _embeddings(
    category: Category, settings: Settings, common: dict[str, Any]
) -> dg.AssetsDefinition:
    name = category.name

    @gpu_asset(category, settings, common, stage="embeddings", upstream=[name, "detections"])
    def embeddings(
        context: dg.AssetExecutionContext,
        detections: pd.DataFrame,
        models: ModelsResource,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """L2-normalised feature vectors of the day's cropped items."""
        with failure_policy(context, settings.retry):
            gpus = planned_gpus(context, category)
            embedder = load_embedder(models, storage, gpus)
            work = daily_work(context, storage, settings, name)
            result = detect_embed.embed(detections, embedder, model_params(models), work)
        return dg.Output(
            result.table,
            metadata={
                "items": len(result.table),
                "dim": int(embedder.primary.identity["dim"]),
                "crops_per_second": round(result.items_per_second, 2),
                **gpu_metadata(context, result, embedder, gpus),
            },
        )

    return cast(dg.AssetsDefinition, embeddings)


def _annoy_index(
    category: Category, settings: Settings, common: dict[str, Any]
) -> dg.AssetsDefinition:
    name = category.name

    @dg.asset(
        key=[name, "annoy_index"],
        ins={
            "embeddings": dg.AssetIn([name, "embeddings"]),
            "removals": dg.AssetIn([REMOVALS_ASSET]),
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
        removals: pd.DataFrame,
        previous: pd.DataFrame | None,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """The live set of this category to date, published as a verified Annoy index.

        The value names which stored embedding rows are live; the vectors stay in the daily
        embeddings partitions (core/index/live_set.py)."""
        day, store = context.partition_key, storage.open()
        try:
            live_set.require_one_model(previous, embeddings, category=name, day=day)
        except live_set.ModelChangeError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from e
        step = live_set.advance(previous, embeddings, day, removals["product_id"].astype(str))
        live = step.live
        counts = {
            "count": len(live),
            "new_items": len(embeddings),
            "previous_count": 0 if previous is None else len(set(previous["product_id"])),
            "removed": len(step.removed),
        }
        served_dim = annoy.current_dim(store, name)
        if len(live) == 0 and served_dim is None:
            context.log.warning(f"{name}: no items to date; nothing to publish")
            store.write_parquet(asset_value_key([name, "annoy_index"], day), live)
            return dg.Output(live, metadata=counts)
        with failure_policy(context, settings.retry):
            manifest, served, pruned = _publish(
                context, store, settings, name, live, embeddings, served_dim
            )
        # CURRENT has moved (or was held): the step's outcome is decided. Pruning old versions
        # is housekeeping that the next publish repeats, so its failure is a warning.
        pointer = _prune_versions(context, store, name, keep=settings.index.retention)
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

    return cast(dg.AssetsDefinition, annoy_index)


def _publish(
    context: dg.AssetExecutionContext,
    store: Storage,
    settings: Settings,
    name: str,
    live: pd.DataFrame,
    embeddings: pd.DataFrame,
    served_dim: int | None,
) -> tuple[dict[str, Any], current.Advance, retention.Pruned]:
    """Builds and verifies the day's version, stores the live set, prunes old records, then
    moves CURRENT: (the version's manifest, what CURRENT did, what retention pruned)."""
    day, index = context.partition_key, settings.index
    if len(live):
        vectors = load_vectors(store, name, live, loaded={day: embeddings})
    else:  # every product removed: an empty index replaces the served one
        vectors = np.zeros((0, served_dim or 0), np.float32)
    manifest = annoy.publish(
        store,
        name,
        day,
        live["product_id"].tolist(),
        vectors,
        metric=index.metric,
        n_trees=index.n_trees,
        models=live_set.manifest_models(live),
        recall_sample=index.recall_sample,
        retention=index.retention,
        move_current=False,
    )
    # Publish last: whatever can fail happens before CURRENT moves. The day's live set, which
    # the next day builds on, is stored here rather than by the IO manager after the step, and
    # retention reads and prunes the old records now.
    store.write_parquet(asset_value_key([name, "annoy_index"], day), live)
    pruned = retention.prune_category(store, name, day, keep_days=index.keep_days)
    stop_if_terminated(context)  # an operator's stop wins over the final act
    served = current.advance(
        store,
        name,
        version=manifest["version"],
        day=day,
        count=len(live),
        retention=index.retention,
    )
    return manifest, served, pruned


def _prune_versions(
    context: dg.AssetExecutionContext, store: Storage, name: str, *, keep: int
) -> current.Pointer | None:
    """Prunes old versions and reads CURRENT back; a failure is a warning."""
    try:
        annoy.prune(store, name, keep=keep)
        return current.read_pointer(store, name)
    except Exception as e:  # noqa: BLE001
        context.log.warning(f"{name}: pruning old versions failed, next publish retries: {e}")
        return None
