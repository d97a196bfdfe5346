"""The day's catalog rows and product images, shared by every category."""

from typing import Any, cast

import dagster as dg
import pandas as pd

from image_search_assets.assets.retrying import crash_retry_policy, failure_policy
from image_search_assets.core import partition_scheme
from image_search_assets.core.ingest.store_images import fetch_images
from image_search_assets.core.layout import REMOVALS_ASSET, quarantine_key
from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.core.progress import Progress
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.partitions import partition_date
from resources import CatalogResource, ImageFetchResource, StorageResource


def _reasons(quarantined: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in quarantined["reason"].value_counts().items()}


def _per_category(table: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in table["category"].value_counts().sort_index().items()}


def _record_quarantine(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    stage: str,
    quarantined: pd.DataFrame,
    what: str,
) -> None:
    """Writes the day's quarantine records for `stage` (the report reads them) and warns."""
    storage.open().write_parquet(quarantine_key(context.partition_key, stage), quarantined)
    if len(quarantined):
        context.log.warning(f"quarantined {len(quarantined)} {what}: {_reasons(quarantined)}")


def _scheme(partitions: dg.PartitionsDefinition) -> partition_scheme.PartitionScheme:
    daily = cast(dg.TimeWindowPartitionsDefinition, partitions)
    return partition_scheme.PartitionScheme(
        start_date=daily.start.strftime("%Y-%m-%d"),
        timezone=daily.timezone,
        cron_schedule=daily.cron_schedule,
        fmt=daily.fmt,
    )


def _require_same_scheme(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    scheme: partition_scheme.PartitionScheme,
    categories: list[str],
) -> None:
    """Fails with no retry if the config would cut the stored days differently."""
    try:
        notes = partition_scheme.check_and_record(storage.open(), scheme, categories)
    except partition_scheme.SchemeChangeError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    for note in notes:
        context.log.info(note)


def ingest_assets(
    partitions: dg.PartitionsDefinition,
    categories: list[str],
    *,
    retry: BackoffPolicy,
) -> list[dg.AssetsDefinition]:
    step: dict[str, Any] = {
        "partitions_def": partitions,
        "op_tags": k8s_op_tags(None, None, gpu=False),
        "retry_policy": crash_retry_policy(retry),
    }
    outs: dict[str, Any] = {
        "group_name": "ingest",
        "io_manager_key": "storage_io",
        "kinds": {"pandas"},
    }
    common = {**step, **outs}
    scheme = _scheme(partitions)

    @dg.multi_asset(
        name="new_products",
        outs={
            "new_products": dg.AssetOut(
                description="The day's catalog rows that passed validation; bad rows are "
                "quarantined.",
                **outs,
            ),
            REMOVALS_ASSET: dg.AssetOut(
                description="The day's catalog removals: every category's annoy_index drops them.",
                **outs,
            ),
        },
        **step,
    )
    def new_products(
        context: dg.AssetExecutionContext, catalog: CatalogResource, storage: StorageResource
    ) -> tuple[dg.Output[pd.DataFrame], dg.Output[pd.DataFrame]]:
        """The day's catalog, read once: its new rows and its removals."""
        with failure_policy(context, retry):
            _require_same_scheme(context, storage, scheme, categories)
            day = catalog.day(partition_date(context), categories)
            _record_quarantine(context, storage, "catalog", day.quarantined, "catalog row(s)")
        products = dg.Output(
            day.products,
            output_name="new_products",
            metadata={
                "new_products": len(day.products),
                "per_category": _per_category(day.products),
                "quarantined_rows": len(day.quarantined),
                "quarantine_reasons": _reasons(day.quarantined),
                "removed_products": len(day.removed),
            },
        )
        removals = dg.Output(
            day.removed,
            output_name=REMOVALS_ASSET,
            metadata={
                "removed_products": len(day.removed),
                "per_category": _per_category(day.removed),
            },
        )
        return products, removals

    # The one step that reaches image hosts: its pods alone may leave for public addresses.
    @dg.asset(**{**common, "op_tags": k8s_op_tags(None, None, gpu=False, image_hosts=True)})
    def product_images(
        context: dg.AssetExecutionContext,
        new_products: pd.DataFrame,
        fetcher: ImageFetchResource,
        storage: StorageResource,
    ) -> dg.Output[pd.DataFrame]:
        """The day's product images, decoded and stored as normalised RGB JPEGs."""
        with failure_policy(context, retry):
            result = fetch_images(
                new_products,
                storage.open(),
                context.partition_key,
                policy=fetcher.policy(),
                max_pixels=fetcher.fetch.max_pixels,
                workers=fetcher.fetch.workers,
                gcs_read=storage.read_gs,
                progress=Progress("fetch images", len(new_products), context.log.info),
            )
            _record_quarantine(context, storage, "image", result.quarantined, "image(s)")
        return dg.Output(
            result.table,
            metadata={
                "images": len(result.table),
                "quarantined_images": len(result.quarantined),
                "quarantine_reasons": _reasons(result.quarantined),
                "images_per_second": round(result.items_per_second, 2),
            },
        )

    # `dg.asset(**common)` matches dg.asset's compute_fn overload for a type checker, which then
    # sees plain functions; at run time these are AssetsDefinitions.
    return cast(list[dg.AssetsDefinition], [new_products, product_images])
