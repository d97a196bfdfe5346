"""A 3-day backfill launched through the webserver's GraphQL API, run by the daemon."""

from datetime import timedelta

import pytest

from image_search_assets.automation.chain import CHAIN_ACTION_TAG, REBUILD_REASON_TAG
from image_search_assets.automation.schedules import CRON_ENV, SCHEDULE_NAME
from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.records import day_report
from image_search_assets.core.storage import open_storage
from image_search_assets.settings import load_settings
from tests.e2e.harness import (
    CATEGORIES,
    LOCATION,
    REPOSITORY,
    DagsterDev,
    days_from,
    today_in_zone,
    wait_for,
    write_instance,
    write_platform,
)

pytestmark = pytest.mark.e2e

# Items indexed per day: the mix (tops 3, pants 2, hats 1) plus tops' valid 00:30 "edge" row;
# tops' truncated and not-an-image rows are quarantined.
INDEXED_PER_DAY = {"tops": 4, "pants": 2, "hats": 1}

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
RUNS = """
query($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs {
      results { runId status startTime endTime tags { key value } assetSelection { path } }
    }
  }
}"""
SCHEDULE = {
    "repositoryLocationName": LOCATION,
    "repositoryName": REPOSITORY,
    "scheduleName": SCHEDULE_NAME,
}
START_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) { __typename }
}"""
REBUILDS = """
query($key: String!) {
  runsOrError(filter: {tags: [{key: $key, value: "rebuild"}]}) {
    ... on Runs { results { runId status tags { key value } assetSelection { path } } }
  }
}"""

FAILURES = """
query($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection {
      events { ... on ExecutionStepFailureEvent { stepKey error { message } } }
    }
  }
}"""


def partition_of(run: dict) -> str:
    return next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition")


def asset_keys() -> list[dict[str, list[str]]]:
    keys = [["new_products"], ["removals"], ["product_images"]]
    keys += [
        [c, stage] for c in CATEGORIES for stage in ("detections", "embeddings", "annoy_index")
    ]
    return [{"path": k} for k in keys]


def backfill(dagster: DagsterDev, days: list[str]) -> tuple[str, list[dict]]:
    """Launches a backfill of every asset over `days`; its final status and its runs."""
    launched = dagster.graphql(
        LAUNCH, params={"assetSelection": asset_keys(), "partitionNames": days}
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> str | None:
        status = dagster.graphql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        return status["status"] if status["status"] != "REQUESTED" else None

    status = wait_for(finished, 600, "the backfill", every=3)
    return status, dagster.graphql(RUNS, id=backfill_id)["runsOrError"]["results"]


def test_a_three_day_backfill_runs_day_by_day_with_the_right_counts(tmp_path):
    start = today_in_zone() - timedelta(days=4)
    days = days_from(start, 3)
    config = write_platform(tmp_path, start, days=3)
    with DagsterDev(write_instance(tmp_path / "home"), config) as dagster:
        status, runs = backfill(dagster, days)

    assert status == "COMPLETED_SUCCESS"

    assert all(r["status"] == "SUCCESS" for r in runs)
    done = [(tuple(a["path"]), partition_of(r)) for r in runs for a in r["assetSelection"]]
    assert sorted(done) == sorted((tuple(k["path"]), d) for k in asset_keys() for d in days)
    # Detection and embedding of all days may run side by side; each category's index is built
    # day by day, each day only after the run that built its predecessor has finished.
    for category in CATEGORIES:
        index_runs = sorted(
            (r for r in runs if {"path": [category, "annoy_index"]} in r["assetSelection"]),
            key=partition_of,
        )
        assert [partition_of(r) for r in index_runs] == days
        for before, after in zip(index_runs, index_runs[1:], strict=False):
            assert after["startTime"] >= before["endTime"]

    settings = load_settings(config)
    store = open_storage(settings.storage_root)
    for n, day in enumerate(days, 1):
        report = day_report(store, day, CATEGORIES)
        for category in CATEGORIES:
            entry = report["categories"][category]
            assert entry["indexed"] == INDEXED_PER_DAY[category] and entry["unaccounted"] == []
            table = store.read_parquet(asset_value_key([category, "annoy_index"], day))
            assert len(table) == n * INDEXED_PER_DAY[category] == entry["index_count_to_date"]
    for category in CATEGORIES:
        served = load_current(store, category)
        assert served.manifest["date"] == days[-1]
        assert served.manifest["count"] == 3 * INDEXED_PER_DAY[category]


def test_a_failed_day_stops_the_later_days_of_a_backfill(tmp_path):
    # The range starts a day after a gap: its first day fails for want of its predecessor.
    start = today_in_zone() - timedelta(days=5)
    gap, *days = days_from(start, 4)
    config = write_platform(tmp_path, start, days=4)
    with DagsterDev(write_instance(tmp_path / "home"), config) as dagster:
        status, runs = backfill(dagster, days)
        index_runs = [
            r for r in runs if any(a["path"][-1] == "annoy_index" for a in r["assetSelection"])
        ]
        failures = [
            event
            for r in index_runs
            for event in dagster.graphql(FAILURES, id=r["runId"])["logsForRun"]["events"]
            if event.get("error")
        ]

    assert status in ("COMPLETED_FAILED", "FAILED"), status
    # Only the first day's indexes were tried, and each failed naming the missing day, once.
    # (A backfill names no partitions, so detections cannot tell that the gap lies outside
    # it: the index step, which reads the previous day, is where such a day fails.)
    assert {partition_of(r) for r in index_runs} == {days[0]}
    assert all(r["status"] == "FAILURE" for r in index_runs)
    failed = sorted(e["stepKey"] for e in failures)
    assert failed == sorted(f"{c}__annoy_index" for c in CATEGORIES), failures
    assert all(gap in e["error"]["message"] for e in failures)
    # Nothing later ran on missing data: no index of any later day, nothing published.
    store = open_storage(load_settings(config).storage_root)
    for category in CATEGORIES:
        for day in days:
            assert not store.exists(asset_value_key([category, "annoy_index"], day))
        with pytest.raises(FileNotFoundError):
            load_current(store, category)


def test_a_backfill_of_older_days_never_moves_serving_back_and_the_chain_rebuilds(tmp_path):
    start = today_in_zone() - timedelta(days=3)
    days = days_from(start, 3)  # through yesterday
    config = write_platform(tmp_path, start, days=3)
    store = open_storage(load_settings(config).storage_root)
    env = {CRON_ENV: "* * * * *"}
    with DagsterDev(write_instance(tmp_path / "home"), config, env) as dagster:
        assert backfill(dagster, days)[0] == "COMPLETED_SUCCESS"
        newest = {c: load_current(store, c).manifest["version"] for c in CATEGORIES}

        # An operator backfills the two older days again: serving stays on the newest day.
        assert backfill(dagster, days[:2])[0] == "COMPLETED_SUCCESS"
        for category in CATEGORIES:
            assert load_current(store, category).manifest["version"] == newest[category]

        # The chain sees day 3 built on an older day 2 and rebuilds its indexes by itself.
        started = dagster.graphql(START_SCHEDULE, selector=SCHEDULE)["startSchedule"]
        assert started["__typename"] == "ScheduleStateResult", started

        def rebuilt() -> dict | None:
            found = dagster.graphql(REBUILDS, key=CHAIN_ACTION_TAG)["runsOrError"]["results"]
            return next((r for r in found if r["status"] == "SUCCESS"), None)

        run = wait_for(rebuilt, 300, "the chain's rebuild of the newest day", every=3)

    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == days[2]
    assert f"{days[1]} was re-materialised after it" in tags[REBUILD_REASON_TAG]
    assert {a["path"][-1] for a in run["assetSelection"]} == {"annoy_index"}  # no GPU step
    for category in CATEGORIES:
        served = load_current(store, category).manifest
        assert served["date"] == days[2] and served["version"] != newest[category]
        assert served["count"] == 3 * INDEXED_PER_DAY[category]
