"""The daily chain as a plain decision: which day runs next, or why it waits."""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from image_search_assets.core.ingest.catalog import CatalogSchemaError
from image_search_assets.core.planning.daily_gate import (
    MAX_RELAUNCHES,
    Action,
    ActiveRun,
    DayState,
    LastRun,
    count_per_category,
    day_gpu_plan,
    decide_next,
    last_ready_day,
    previous_day,
)
from image_search_assets.core.planning.gpu_plan import ThroughputModel

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST = date(2026, 11, 1)


DAYS = [date(2026, 11, d) for d in (1, 2, 3, 4)]


def states(**by_day):
    """DayStates for DAYS, all indexed and current unless `by_day` says otherwise."""
    return [by_day.get(f"d{d.day}", DayState(d)) for d in DAYS]


@pytest.mark.parametrize(
    ("now_utc", "expected"),
    [
        # 06:00 in Tokyo is 21:00 UTC the evening before: the UTC date would be a day off.
        (datetime(2026, 11, 2, 21, 0, tzinfo=UTC), date(2026, 11, 2)),
        (datetime(2026, 11, 3, 14, 59, tzinfo=UTC), date(2026, 11, 2)),
        # 05:59 in Tokyo on the 4th: the 3rd is not complete yet.
        (datetime(2026, 11, 3, 20, 59, tzinfo=UTC), date(2026, 11, 2)),
    ],
)
def test_a_day_is_ready_at_ready_at_the_next_morning_in_the_configured_zone(now_utc, expected):
    assert last_ready_day(now_utc, TOKYO, time(6)) == expected


def test_the_first_partition_has_no_predecessor_and_launches():
    assert previous_day(FIRST, FIRST) is None
    missing = [DayState(d, ("tops",)) for d in DAYS]
    decision = decide_next(missing, [], first_day=FIRST)
    assert decision.action is Action.LAUNCH and decision.day == FIRST
    assert "first partition" in decision.reason and "4 day(s) to go through 2026-11-04" in (
        decision.reason
    )


def test_the_earliest_missing_day_launches_not_the_latest():
    """A deployment whose start date is days back catches up, oldest first."""
    chain = states(d3=DayState(DAYS[2], ("hats",)), d4=DayState(DAYS[3], ("tops", "hats")))
    decision = decide_next(chain, [], first_day=FIRST)
    assert decision.action is Action.LAUNCH and decision.day == DAYS[2]
    assert "2026-11-02 is indexed and current" in decision.reason


def test_an_active_run_delays_the_chain_and_names_the_command_that_clears_a_dead_one():
    chain = states(d4=DayState(DAYS[3], ("tops",)))
    running = ActiveRun("0123456789abcdef", "2026-11-03", "STARTED")
    decision = decide_next(chain, [running], first_day=FIRST)
    assert decision.action is Action.WAIT
    assert "2026-11-03 is STARTED (run 0123456789abcdef)" in decision.reason
    assert "image-search release-run 0123456789abcdef" in decision.reason


@pytest.mark.parametrize(("status", "words"), [("FAILURE", "failed"), ("CANCELED", "canceled")])
def test_a_day_whose_run_ended_badly_holds_every_later_day(status, words):
    failed = DayState(DAYS[1], ("pants",), last_run=LastRun("run-2", status))
    decision = decide_next(states(d2=failed, d3=DayState(DAYS[2], ("tops",))), [], first_day=FIRST)
    assert decision.action is Action.WAIT and decision.day == DAYS[1]
    assert words in decision.reason and "Re-execute" in decision.reason
    assert "run-2" in decision.reason and "never skips" in decision.reason


def test_a_missing_day_whose_last_run_succeeded_partially_is_launched_again():
    partial = DayState(DAYS[1], ("pants",), last_run=LastRun("run-2", "SUCCESS"))
    assert decide_next(states(d2=partial), [], first_day=FIRST).action is Action.LAUNCH


def test_a_stale_day_is_rebuilt_for_its_stale_categories_only():
    stale = DayState(DAYS[2], stale={"tops": "2026-11-02 was re-materialised after it"})
    decision = decide_next(states(d3=stale), [], first_day=FIRST)
    assert decision.action is Action.REBUILD and decision.categories == ("tops",)
    assert "no GPU work" in decision.reason and "re-materialised" in decision.reason


def test_a_failed_rebuild_holds_the_chain():
    stale = DayState(
        DAYS[2], stale={"tops": "x"}, last_run=LastRun("run-9", "FAILURE", rebuild=True)
    )
    decision = decide_next(states(d3=stale), [], first_day=FIRST)
    assert decision.action is Action.WAIT and "index rebuild (run run-9)" in decision.reason


def test_everything_indexed_is_idle_and_no_ready_day_is_idle():
    assert decide_next(states(), [], first_day=FIRST).action is Action.IDLE
    assert decide_next([], [], first_day=FIRST).action is Action.IDLE


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


def test_a_day_whose_run_died_is_launched_again_a_bounded_number_of_times():
    died = LastRun("run-2", "FAILURE", crashed=True)
    decision = decide_next(
        states(d2=DayState(DAYS[1], ("tops",), last_run=died, crashes=1)), [], first_day=FIRST
    )
    assert decision.action is Action.LAUNCH and decision.day == DAYS[1]
    assert "its run run-2 died before finishing (relaunch 1 of 3)" in decision.reason
    again = DayState(DAYS[1], ("tops",), last_run=died, crashes=MAX_RELAUNCHES + 1)
    decision = decide_next(states(d2=again), [], first_day=FIRST)
    assert decision.action is Action.WAIT and "something keeps killing it" in decision.reason
