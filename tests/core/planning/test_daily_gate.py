"""The daily gate as a plain decision: which day a tick launches, and when it must skip."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from image_search_assets.core.ingest.catalog import CatalogSchemaError
from image_search_assets.core.planning.daily_gate import (
    ActiveRun,
    count_per_category,
    day_gpu_plan,
    decide_daily_run,
    previous_day,
    target_day,
)
from image_search_assets.core.planning.gpu_plan import ThroughputModel

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST = date(2026, 11, 1)


@pytest.mark.parametrize(
    ("tick_utc", "expected"),
    [
        # 06:00 in Tokyo is 21:00 UTC the evening before: the UTC date would be a day off.
        (datetime(2026, 11, 2, 21, 0, tzinfo=UTC), date(2026, 11, 2)),
        (datetime(2026, 11, 3, 14, 59, tzinfo=UTC), date(2026, 11, 2)),
        (datetime(2026, 11, 3, 15, 0, tzinfo=UTC), date(2026, 11, 3)),
    ],
)
def test_a_tick_launches_the_day_before_its_date_in_the_configured_zone(tick_utc, expected):
    assert target_day(tick_utc, TOKYO) == expected


def test_the_first_partition_has_no_predecessor_and_proceeds():
    assert previous_day(FIRST, FIRST) is None
    decision = decide_daily_run(FIRST, FIRST, missing_previous=[], active_runs=[])
    assert decision.launch and "first partition" in decision.reason


def test_a_missing_previous_day_skips_with_the_categories_and_the_repair():
    day = date(2026, 11, 3)
    decision = decide_daily_run(day, FIRST, missing_previous=["pants", "hats"], active_runs=[])
    assert not decision.launch
    assert "previous day 2026-11-02 has not succeeded for hats, pants" in decision.reason
    assert "backfill" in decision.reason


def test_an_active_run_of_the_previous_day_skips_even_when_it_is_materialised():
    day = date(2026, 11, 3)
    running = ActiveRun("0123456789abcdef", "2026-11-02", "STARTED")
    decision = decide_daily_run(day, FIRST, missing_previous=[], active_runs=[running])
    assert not decision.launch
    assert "2026-11-02 is STARTED (run 01234567)" in decision.reason


def test_a_successful_previous_day_launches():
    decision = decide_daily_run(date(2026, 11, 3), FIRST, missing_previous=[], active_runs=[])
    assert decision.launch and "2026-11-02 succeeded" in decision.reason


def test_a_day_before_the_first_partition_is_skipped():
    decision = decide_daily_run(date(2026, 10, 31), FIRST, missing_previous=[], active_runs=[])
    assert not decision.launch and "before the first partition" in decision.reason


def test_counts_per_category_include_empty_categories():
    products = pd.DataFrame({"category": ["tops", "tops", "pants"]})
    assert count_per_category(products, ["tops", "pants", "hats"]) == {
        "tops": 2,
        "pants": 1,
        "hats": 0,
    }


def test_the_gpu_plan_follows_the_days_items():
    model = ThroughputModel(items_per_gpu_second=0.25, overhead_s=300)
    plan = day_gpu_plan({"tops": 4, "pants": 2, "hats": 1}, lambda: {"tops": 10, "hats": 3000})
    assert plan.gpus["hats"] == 4 and plan.gpus["tops"] == 1  # a hat sale day
    assert day_gpu_plan({}, lambda: {"tops": 1800}, model).gpus == {"tops": 4}


def test_an_unreadable_catalog_falls_back_to_the_hand_set_gpus():
    def unreadable() -> dict[str, int]:
        raise CatalogSchemaError("catalog /nowhere.csv does not exist")

    plan = day_gpu_plan({"tops": 4, "pants": 2}, unreadable)
    assert plan.gpus == {"tops": 4, "pants": 2}
    assert any("/nowhere.csv does not exist" in note for note in plan.notes)
