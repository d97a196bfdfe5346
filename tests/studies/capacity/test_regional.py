"""The month with region-wide T4 stock-outs: GPU fallback keeps every day, at a stated cost."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date

import pytest

from image_search_assets.core.planning.gpu_plan import ThroughputModel
from image_search_assets.settings import load_settings
from image_search_assets.studies.capacity import regional
from image_search_assets.studies.capacity.setups import platform
from image_search_assets.studies.capacity.supply import DAY, HOUR, RUN_AT_S, DayItems, daily_items

START = date(2026, 11, 1)
MODEL = ThroughputModel()
SETTINGS = load_settings()
DEFAULTS = {c.name: c.gpus for c in SETTINGS.categories}


@pytest.fixture(scope="module")
def month():
    supply = regional.make_regional_supply(START, days=30, seed=7)
    workload = daily_items(list(SETTINGS.category_names), START, days=30, seed=7)
    results = {
        p.name: regional.simulate_regional_month(p, workload, supply, MODEL)
        for p in regional.regional_setups(DEFAULTS)
    }
    return supply, results


def test_the_supply_has_region_wide_t4_stockouts_of_2_to_8_hours_mostly_at_night(month):
    supply, _ = month
    assert len(supply.t4_out) == 6
    assert all(2 <= e.hours <= 8 for e in supply.t4_out)
    at_night = [e for e in supply.t4_out if e.covers(e.start_s // DAY * DAY + RUN_AT_S)]
    assert len(at_night) > len(supply.t4_out) / 2
    e = supply.t4_out[0]
    mid = (e.start_s + e.end_s) / 2
    assert supply.capacity("a", mid) == supply.capacity("b", mid) == 0  # no zone helps
    assert supply.free("l4", "a", mid) > 0 and supply.free("l4-flex", "a", mid) == float("inf")
    assert all(0 <= e.left <= 4 and e.hours <= 2 for e in supply.l4_out) and supply.reclaims


def test_fallback_needs_no_human_and_is_never_late(month):
    _, results = month
    fallback = results["fallback"]
    assert fallback.manual_days == 0 and regional.late_days(fallback) == 0
    assert set(regional.option_hours(fallback)) <= set(regional.SHIPPED_OPTIONS)
    # The T4-only setups lose days to the same stock-outs.
    assert regional.late_days(results["reference"]) > 0
    # ... and cost more: the L4 spot hours are cheaper per image than T4 hours.
    assert regional.cost_usd(fallback) < regional.cost_usd(results["reference"])


def test_a_reclaimed_spot_step_resumes_from_its_chunks():
    """A reclaim halfway through: the retry runs only the unfinished half (plus its overhead)."""
    model = ThroughputModel(items_per_gpu_second=1.0, overhead_s=300.0)
    spot_only = replace(platform(), name="spot", options=("l4-spot",))
    day = DayItems(0, {"tops": 7200})  # 2 h of T4 work on 1 GPU: 1 h on an L4
    supply = regional.make_regional_supply(START, days=30, seed=1)
    start = RUN_AT_S
    reclaim = start + model.overhead_s + 0.5 * HOUR  # half the work done on the L4
    supply = replace(supply, reclaims=(reclaim,), t4_out=(), l4_out=())
    one_gpu = replace(spot_only, gpus={"tops": 1})
    result = regional.simulate_regional_day(one_gpu, day, start, supply, model, random.Random(1))
    first, second = result.attempts
    assert first.end_s == pytest.approx(reclaim) and first.option == "l4-spot"
    assert second.end_s - second.start_s == pytest.approx(model.overhead_s + 0.5 * HOUR)
    assert result.retries == 1 and result.manual_actions == 0


def test_prices_and_speeds_are_stated():
    assert regional.price("l4-spot") == pytest.approx(0.4 * regional.PRICE["l4"])
    assert regional.price("l4-flex") == regional.PRICE["l4"]
    assert regional.PRICE["l4"] / regional.PRICE["t4"] == pytest.approx(1.6)
