"""Config edits that would lose stored days are refused at the day's first step, before any
work, and the served indexes stay as they were (real materialisations on one instance)."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from image_search_assets.core import partition_scheme
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.storage import open_storage
from tests.conftest import TEST_CATEGORIES
from tests.resilience.helpers import events, fast_settings, run_day

DAY1, DAY2 = "2026-11-01", "2026-11-02"


@pytest.fixture(scope="module")
def day_one_root(tmp_path_factory, sample_catalog):
    root = tmp_path_factory.mktemp("day-one") / "storage"
    settings = fast_settings(str(root), str(sample_catalog))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY1, instance).success
    return root


@pytest.fixture
def settings(day_one_root, tmp_path, sample_catalog):
    """Day 1 stored and served, in a copy of its own."""
    root = tmp_path / "storage"
    shutil.copytree(day_one_root, root)
    return fast_settings(str(root), str(sample_catalog))


def served(settings) -> dict[str, str]:
    store = open_storage(settings.storage_root)
    return {c: annoy.load_current(store, c).manifest["version"] for c in TEST_CATEGORIES}


def refused(settings, day: str) -> str:
    """Runs `day`; asserts it failed at its first step without retry; returns the message."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(settings, day, instance)
    assert not result.success and events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = events(result, "STEP_FAILURE")
    assert failure.step_key == "new_products"
    assert [e.step_key for e in events(result, "STEP_START")] == ["new_products"]
    return failure.event_specific_data.error.message


def test_the_first_day_records_the_partition_scheme(settings):
    recorded = partition_scheme.recorded(open_storage(settings.storage_root))
    assert recorded == partition_scheme.PartitionScheme(
        start_date=DAY1, timezone="Asia/Tokyo", cron_schedule="0 0 * * *", fmt="%Y-%m-%d"
    )


def test_a_start_date_moved_past_stored_days_is_refused_and_serving_is_unchanged(settings):
    before = served(settings)
    message = refused(settings.with_overrides(start_date=DAY2), DAY2)
    assert f"partitions.start_date moved to {DAY2}, past the stored days {DAY1}" in message
    assert f"restore partitions.start_date: {DAY1}" in message and "storage_root" in message
    assert served(settings) == before
    assert not open_storage(settings.storage_root).exists(f"removals/{DAY2}.parquet")


def test_a_changed_timezone_is_refused_and_serving_is_unchanged(settings):
    before = served(settings)
    message = refused(settings.with_overrides(timezone="UTC"), DAY2)
    assert "timezone changed from 'Asia/Tokyo' to 'UTC'" in message
    assert "restore the old timezone ('Asia/Tokyo')" in message and "backfill" in message
    assert served(settings) == before


def test_the_unchanged_config_runs_the_next_day(settings):
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY2, instance).success
    tops = annoy.load_current(open_storage(settings.storage_root), "tops")
    assert tops.manifest["date"] == DAY2
