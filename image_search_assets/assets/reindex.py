"""The `reindex` job: a model rollout, one category at a time, off the daily path.

The job has one op per category (`<category>__reindex`), each on its category's GPU pool with
its GPU tags, exactly like the daily detections/embeddings steps, so it runs within the same
weighted budget and asks Kubernetes for the same GPUs. The ops are independent:
- UI: open the `reindex` job's Launchpad, pick the categories with the op selection (e.g.
  `tops__reindex`) and, optionally, set `up_to` in an op's config; launch.
- CLI: `image-search reindex --category tops [--up-to 2026-11-02]`.
`up_to` is the day whose live set is re-indexed; empty means the latest one, which is the day
the next daily run builds on. The logic lives in core/index/reindex.py.
"""

from typing import Any, cast

import dagster as dg
from pydantic import Field

from image_search_assets.assets.gpu_steps import (
    load_detector,
    load_embedder,
    model_params,
    planned_gpus,
)
from image_search_assets.assets.retrying import crash_retry_policy, failure_policy, resume_scope
from image_search_assets.core.index import reindex
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import Category, Settings
from image_search_assets.tags import detector_class_ids, gpu_pool, gpu_tags
from resources import ModelsResource, StorageResource

REINDEX_JOB = "reindex"


def reindex_op_name(category: str) -> str:
    return f"{category}__reindex"


class ReindexConfig(dg.Config):
    """Which day's live set to re-index with the configured models."""

    up_to: str = Field(
        default="",
        description="ISO day with a live set; empty: the latest (the day the next daily run "
        "builds on)",
    )


def _reindex_op(category: Category, settings: Settings) -> dg.OpDefinition:
    name = category.name

    @dg.op(
        name=reindex_op_name(name),
        pool=gpu_pool(category),
        tags={**gpu_tags(category), **k8s_op_tags(settings, category, gpu=True)},
        retry_policy=crash_retry_policy(settings.retry),
    )
    def reindex_category(
        context: dg.OpExecutionContext,
        config: ReindexConfig,
        models: ModelsResource,
        storage: StorageResource,
    ) -> None:
        """Re-detects and re-embeds the category's live products, then publishes one model."""
        # The platform policy reads only members an op's context has too.
        step = cast(dg.AssetExecutionContext, context)
        store = storage.open()
        if not config.up_to and not reindex.live_days(store, name):
            context.log.info(f"{name} has no index yet: nothing to re-index")
            return
        try:
            target = reindex.plan(store, name, config.up_to or None)
        except reindex.ReindexError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from e
        if target.later_days:
            context.log.warning(
                f"{name}: live sets after {target.day} ({', '.join(target.later_days)}) keep the "
                f"old model; re-run those days after this re-index"
            )
        with failure_policy(step, settings.retry):
            gpus = planned_gpus(context, category)
            detector = load_detector(models, settings, storage, gpus)
            result = reindex.reindex(
                store,
                target,
                detector,
                load_embedder(models, storage, gpus),
                class_ids=detector_class_ids(category, detector.primary.labels),
                params=model_params(models),
                chunk_size=settings.chunk_size,
                run_scope=resume_scope(step),
                index_options={
                    "metric": settings.index.metric,
                    "n_trees": settings.index.n_trees,
                    "recall_sample": settings.index.recall_sample,
                    "retention": settings.index.retention,
                },
                log=context.log.info,
            )
        summary: dict[str, Any] = {
            "category": name,
            "up_to": target.day,
            "count": result.count,
            "embedder": result.embedder,
            "detector": result.detector,
            "previous_embedders": ", ".join(result.previous_embedders),
            "snapshot": result.snapshot,
            "chunks_computed": result.chunks_computed,
            "chunks_reused": result.chunks_reused,
        }
        if result.manifest is not None:
            summary |= {
                "version": result.manifest["version"],
                "recall_at_10": result.manifest["recall_at_10"],
            }
        # The day's live set changed: its partition's history shows this run.
        context.log_event(
            dg.AssetMaterialization(
                asset_key=[name, "annoy_index"],
                partition=target.day,
                description="re-indexed with the configured models",
                metadata=summary,
            )
        )

    return reindex_category


def reindex_job(settings: Settings) -> dg.JobDefinition:
    """Every category's re-index op, independent of one another; select the ones to run."""

    @dg.job(
        name=REINDEX_JOB,
        description="Re-embed categories with the configured models; see assets/reindex.py",
        tags={"image_search/kind": "rollout"},
    )
    def reindex_all() -> None:
        for category in settings.categories:
            _reindex_op(category, settings)()

    return reindex_all
