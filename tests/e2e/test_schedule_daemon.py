"""The daily schedule driven by a running daemon: a skip with its reason, then a launched day.

Honest and fast: the schedule's cron is minutely here (IMAGE_SEARCH_SCHEDULE_CRON, the
deployment override), so the real daemon ticks within a minute on the real clock. Every tick
of a day targets the same partition (yesterday in the configured zone), exactly as the daily
06:00 tick would, and the catalog is dated relative to today so that yesterday exists.
"""

import json
from datetime import timedelta

import pytest

from image_search_assets.automation.schedules import CRON_ENV, SCHEDULE_NAME
from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.storage import open_storage
from image_search_assets.definitions import DAILY_JOB
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG
from tests.e2e.harness import (
    CATEGORIES,
    LOCATION,
    REPOSITORY,
    DagsterDev,
    today_in_zone,
    wait_for,
    write_instance,
    write_platform,
)

pytestmark = pytest.mark.e2e

SELECTOR = {
    "repositoryLocationName": LOCATION,
    "repositoryName": REPOSITORY,
    "scheduleName": SCHEDULE_NAME,
}
START = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""
TICKS = """
query($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    ... on Schedule { scheduleState { ticks(limit: 20) { tickId status timestamp skipReason runIds
      error { message } } } }
  }
}"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUN_TAGS = (
    "query($id: ID!) { runOrError(runId: $id) { ... on Run { jobName tags { key value } } } }"
)


def ticks(dagster: DagsterDev) -> list[dict]:
    """Finished ticks, oldest first."""
    data = dagster.graphql(TICKS, selector=SELECTOR)["scheduleOrError"]["scheduleState"]
    return sorted(
        (t for t in data["ticks"] if t["status"] != "STARTED"), key=lambda t: t["timestamp"]
    )


def test_daemon_skips_a_day_whose_predecessor_is_missing_then_launches_it(tmp_path):
    yesterday = today_in_zone() - timedelta(days=1)
    before = yesterday - timedelta(days=1)
    config = write_platform(tmp_path, before, days=2)
    home = write_instance(tmp_path / "home")
    with DagsterDev(home, config, extra_env={CRON_ENV: "* * * * *"}) as dagster:
        started = dagster.graphql(START, selector=SELECTOR)["startSchedule"]
        assert started["__typename"] == "ScheduleStateResult", started

        first = wait_for(lambda: ticks(dagster), 150, "the first tick", every=2)[0]
        assert first["status"] == "SKIPPED" and not first["runIds"]
        assert (
            f"{yesterday} not launched: the previous day {before} has not succeeded for "
            "hats, pants, tops" in first["skipReason"]
        )

        # The repair: run the missing day (as a person would from the UI's job page).
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": DAILY_JOB,
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": str(before)}]},
        }
        launched = dagster.graphql(LAUNCH_RUN, params=params)["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert dagster.wait_run(launched["run"]["runId"]) == "SUCCESS"

        def launching_tick() -> dict | None:
            return next((t for t in ticks(dagster) if t["status"] == "SUCCESS"), None)

        tick = wait_for(launching_tick, 150, "a tick that launches a run", every=2)
        (run_id,) = tick["runIds"]
        assert dagster.wait_run(run_id) == "SUCCESS"
        run = dagster.graphql(RUN_TAGS, id=run_id)["runOrError"]
        every_tick = ticks(dagster)

    # Ticks between the skip and the launch saw the repair run in progress, or nothing yet.
    for skipped in every_tick[: every_tick.index(tick)]:
        assert skipped["status"] == "SKIPPED", skipped
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["jobName"] == DAILY_JOB and tags["dagster/partition"] == str(yesterday)
    assert set(json.loads(tags[GPU_PLAN_TAG])) == set(CATEGORIES)
    store = open_storage(load_settings(config).storage_root)
    served = load_current(store, "tops")
    assert (served.manifest["date"], served.manifest["count"]) == (str(yesterday), 8)
