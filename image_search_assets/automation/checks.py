"""Asset checks on every category's annoy_index, one small factory each: recall, vectors,
accounting, reach and removals, and what is served against the day before. Published versions
are read through core/index/published.py alone. They never block the day (blocking=False): a
failed check is a visible signal (sensors.check_failure_alert posts it)."""

import warnings
from datetime import date
from typing import cast

import dagster as dg
import pandas as pd

from image_search_assets.automation.freshness import serving_metadata
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, published
from image_search_assets.core.index.checks import (
    CheckOutcome,
    accounting_outcome,
    aligned_vectors,
    kept_unless_removed_outcome,
    reach_outcome,
    recall_curve,
    recall_outcome,
    removed_outcome,
    vectors_outcome,
)
from image_search_assets.core.index.plots import line_chart_png, markdown_image
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.layout import asset_value_key, removals_key, version_day
from image_search_assets.core.planning.daily_gate import previous_day
from image_search_assets.core.records import day_report, removed_to_date
from image_search_assets.core.storage import Storage
from image_search_assets.partitions import daily_partitions
from image_search_assets.settings import Category, Settings
from resources import StorageResource

HISTORY_DAYS = 60


def min_recall(settings: Settings) -> float:
    """`checks.min_recall` from the config: recall@10 below it fails the check."""
    return settings.checks.min_recall


def _result(outcome: CheckOutcome, **extra: dg.MetadataValue) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={**outcome.metadata, **extra},
    )


def _published_version(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> str | None:
    """The version the partition's latest materialisation published (None: nothing published)."""
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not found:
        return None
    materialization = found[0].asset_materialization
    version = materialization.metadata.get("version") if materialization else None
    return None if version is None else str(version.value)


def _count_history(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> list:
    """(partition, count) of the latest materialisation of each recent partition, oldest first."""
    latest: dict[str, int] = {}
    records = context.instance.fetch_materializations(key, limit=HISTORY_DAYS * 2).records
    for record in records:  # newest first: the first one seen per partition wins
        mat = record.asset_materialization
        count = mat.metadata.get("count") if mat else None
        if mat and mat.partition and count is not None and mat.partition not in latest:
            latest[mat.partition] = int(cast(int, count.value))
    return sorted(latest.items())[-HISTORY_DAYS:]


def _common(category: Category, settings: Settings) -> dict:
    """What every check of the category's annoy_index shares: its asset, partitions, no block."""
    key = dg.AssetKey([category.name, "annoy_index"])
    return {"asset": key, "blocking": False, "partitions_def": daily_partitions(settings)}


def _recall_check(category: Category, settings: Settings) -> dg.AssetChecksDefinition:
    name, common = category.name, _common(category, settings)
    threshold, sample = min_recall(settings), settings.index.recall_sample

    @dg.asset_check(name="recall_at_10", **common)
    def recall(
        context: dg.AssetCheckExecutionContext, index_table: pd.DataFrame, storage: StorageResource
    ) -> dg.AssetCheckResult:
        """The published index finds the exact top-10 neighbours often enough."""
        version = _published_version(context, common["asset"])
        if version is None or index_table.empty:
            return dg.AssetCheckResult(passed=True, description="no index published: no items")
        served = annoy.load_version(storage.open(), name, version)
        try:
            table_vectors = load_vectors(storage.open(), name, index_table)
            vectors = aligned_vectors(served.ids, index_table["product_id"].tolist(), table_vectors)
        except ValueError as e:
            return dg.AssetCheckResult(passed=False, description=f"index and table disagree: {e}")
        outcome = recall_outcome(served.index, vectors, min_recall=threshold, sample=sample)
        curve = recall_curve(served.index, vectors, sample=sample)
        png = line_chart_png(
            {name: sorted(curve.items())},
            title=f"{name} {context.partition_key}: recall@10 vs search_k",
            xlabel="search_k (nodes inspected per query)",
            ylabel="recall@10",
            logx=True,
            hline=(threshold, f"min_recall {threshold}"),
        )
        return _result(
            outcome,
            version=dg.MetadataValue.text(version),
            recall_vs_search_k=dg.MetadataValue.md(markdown_image(png, "recall vs search_k")),
        )

    return recall


def _vectors_check(category: Category, settings: Settings) -> dg.AssetChecksDefinition:
    name = category.name

    @dg.asset_check(name="vectors_finite_unit_norm", **_common(category, settings))
    def vectors(index_table: pd.DataFrame, storage: StorageResource) -> dg.AssetCheckResult:
        """Every indexed vector is finite and unit-norm."""
        return _result(vectors_outcome(load_vectors(storage.open(), name, index_table)))

    return vectors


def _accounting_check(category: Category, settings: Settings) -> dg.AssetChecksDefinition:
    name = category.name

    @dg.asset_check(name="every_new_product_accounted", **_common(category, settings))
    def accounting(
        context: dg.AssetCheckExecutionContext, storage: StorageResource
    ) -> dg.AssetCheckResult:
        """Every new product of the category is indexed or quarantined with a reason."""
        report = day_report(storage.open(), context.partition_key, [name])
        return _result(accounting_outcome(report["categories"][name]))

    return accounting


def _previous_ids(store: Storage, key: dg.AssetKey, day: str, first: date) -> list[str] | None:
    """The index table's ids of the day before `day` ([] on the first day; None if missing)."""
    prev = previous_day(date.fromisoformat(day), first)
    if prev is None:
        return []
    prev_key = asset_value_key(key.path, prev.isoformat())
    return store.read_parquet(prev_key)["product_id"].tolist() if store.exists(prev_key) else None


def _items_chart(context: dg.AssetCheckExecutionContext, name: str, key: dg.AssetKey) -> dict:
    history = _count_history(context, key)
    if len(history) < 2:
        return {}
    png = line_chart_png(
        {name: history}, title=f"{name}: items in the index", xlabel="day", ylabel="items"
    )
    return {"items_over_time": dg.MetadataValue.md(markdown_image(png, "items over time"))}


def _reach_outcome(
    store: Storage, name: str, day: str, version: str | None, ids: dict[str, list[str]]
) -> CheckOutcome:
    """Count = previous + new - re-sent - removed, and no removed product served (to date).

    `ids`: the product ids of the day before's table ("previous"), of the day's embeddings
    ("new") and of the day's index table ("table").
    """
    published_count, served_ids = 0, []
    if version is not None:
        published_count = int(published.read_manifest(store, name, version)["count"])
        served_ids = published.read_ids(store, name, version)
    removed_key = removals_key(day)
    removed = store.read_parquet(removed_key) if store.exists(removed_key) else None
    outcome = reach_outcome(
        ids["previous"],
        ids["new"],
        ids["table"],
        published_count,
        [] if removed is None else removed["product_id"].astype(str).tolist(),
    )
    # Independently of the live set: every removal to date, from the daily records.
    served = removed_outcome(served_ids, removed_to_date(store, day))
    return CheckOutcome(
        outcome.passed and served.passed,
        f"{outcome.description}; {served.description}",
        {**outcome.metadata, **served.metadata},
    )


def _reach_check(category: Category, settings: Settings) -> dg.AssetChecksDefinition:
    name, common = category.name, _common(category, settings)
    key, first = common["asset"], date.fromisoformat(settings.start_date)

    @dg.asset_check(
        name="reach_equals_previous_plus_new",
        additional_ins={"embeddings": dg.AssetIn([name, "embeddings"])},
        **common,
    )
    def reach(
        context: dg.AssetCheckExecutionContext,
        index_table: pd.DataFrame,
        embeddings: pd.DataFrame,
        storage: StorageResource,
    ) -> dg.AssetCheckResult:
        """Index count = previous + new - re-sent - removed; no removed product is served."""
        store, day = storage.open(), context.partition_key
        previous_ids = _previous_ids(store, key, day, first)
        if previous_ids is None:
            prev = previous_day(date.fromisoformat(day), first)
            return dg.AssetCheckResult(
                passed=False, description=f"previous day {prev} has no index table"
            )
        version = _published_version(context, key)
        ids = {
            "previous": previous_ids,
            "new": embeddings["product_id"].tolist(),
            "table": index_table["product_id"].tolist(),
        }
        outcome = _reach_outcome(store, name, day, version, ids)
        return _result(outcome, **_items_chart(context, name, key))

    return reach


def _kept_check(category: Category, settings: Settings) -> dg.AssetChecksDefinition:
    name, common = category.name, _common(category, settings)

    @dg.asset_check(name="served_ids_kept_unless_removed", **common)
    def kept(
        context: dg.AssetCheckExecutionContext, storage: StorageResource
    ) -> dg.AssetCheckResult:
        """Every product of the latest earlier day's version is still served, unless removed."""
        store, day = storage.open(), context.partition_key
        serving = serving_metadata(current.read_pointer(store, name))
        version = _published_version(context, common["asset"])
        earlier = [v for v in current.kept_versions(store, name) if version_day(v) < day]
        if version is None or not earlier:
            what = "nothing published" if version is None else "no earlier day kept"
            return dg.AssetCheckResult(passed=True, description=what, metadata=serving)
        outcome = kept_unless_removed_outcome(
            published.read_ids(store, name, earlier[-1]),
            version_day(earlier[-1]),
            published.read_ids(store, name, version),
            removed_to_date(store, day),
        )
        return _result(outcome, **serving)

    return kept


CHECK_FACTORIES = (_recall_check, _vectors_check, _accounting_check, _reach_check, _kept_check)


def index_checks(category: Category, *, settings: Settings) -> list[dg.AssetChecksDefinition]:
    """The checks of one category's annoy_index, partitioned like the asset."""
    return [factory(category, settings) for factory in CHECK_FACTORIES]


def build_asset_checks(settings: Settings, job: object = None) -> list[dg.AssetChecksDefinition]:
    # Partitioned checks are "preview" in dagster 1.13 (pinned), and the only way a check sees
    # one day of a daily asset: without partitions_def it loads every partition. Known and
    # chosen, so the warning is silenced here rather than printed on every code-location load.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def")
        return [check for c in settings.categories for check in index_checks(c, settings=settings)]
