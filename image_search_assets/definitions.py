"""The code location: `defs` is built from the one platform config."""

from __future__ import annotations

import os

import dagster as dg

from image_search_assets.assets import category_assets, ingest_assets
from image_search_assets.assets.reindex import reindex_job
from image_search_assets.automation import (
    build_asset_checks,
    build_freshness,
    build_schedules,
    build_sensors,
    rollback_job,
)
from image_search_assets.automation.pool_limits import pool_limits_sensor
from image_search_assets.automation.run_health import dead_run_sensor
from image_search_assets.partitions import daily_partitions
from image_search_assets.settings import Settings, load_settings
from resources import (
    CatalogResource,
    ImageFetchResource,
    ModelsResource,
    StorageIOManager,
    StorageResource,
)

DAILY_JOB = "daily_index"


def build_resources(settings: Settings) -> dict[str, object]:
    storage = StorageResource(root=settings.storage_root, gcp_project=settings.gcp_project)
    return {
        "storage": storage,
        "storage_io": StorageIOManager(storage=storage),
        "catalog": CatalogResource(
            uri=settings.catalog, timezone=settings.timezone, storage=storage
        ),
        "fetcher": ImageFetchResource.from_config(settings.fetch, settings.gcp_project),
        "models": ModelsResource.from_settings(settings),
    }


def select_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The one place that picks how steps run, from IMAGE_SEARCH_EXECUTOR (deployment config)."""
    name = name or os.environ.get("IMAGE_SEARCH_EXECUTOR", "in_process")
    if name == "in_process":
        # One process per run: models load once and are shared by all 13 categories' steps.
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        # Each step is a Kubernetes Job; imported here so local runs never load dagster_k8s.
        from image_search_assets.k8s.executor import image_search_k8s_executor

        return image_search_k8s_executor
    raise ValueError(f"IMAGE_SEARCH_EXECUTOR={name!r}: expected in_process, multiprocess or k8s")


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings)
    assets = [
        *ingest_assets(partitions, list(settings.category_names), retry=settings.retry),
        *(
            asset
            for category in settings.categories
            for asset in category_assets(category, partitions=partitions, settings=settings)
        ),
    ]
    freshness = build_freshness(settings)
    daily = dg.AssetSelection.assets(*assets) - freshness.selection
    daily_job = dg.define_asset_job(DAILY_JOB, selection=daily)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*build_asset_checks(settings, daily_job), *freshness.checks],
        jobs=[daily_job, reindex_job(settings), freshness.job, rollback_job(settings)],
        schedules=[*build_schedules(settings, daily_job), freshness.schedule],
        sensors=[
            *build_sensors(settings, daily_job, freshness.job),
            dead_run_sensor,
            pool_limits_sensor(settings),
        ],
        resources=build_resources(settings),
        executor=select_executor(),
    )


defs = build_definitions(load_settings())
