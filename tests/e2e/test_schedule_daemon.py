"""The daily chain driven by a running daemon, with no action from the test until a day fails.

Honest and fast: the schedule's cron is minutely here (IMAGE_SEARCH_SCHEDULE_CRON, the
deployment override), so the real daemon evaluates each tick once, on the real clock. The
start date is three days back; the catalog is dated relative to today.
"""

import json
import shutil
from datetime import timedelta

import pytest

from image_search_assets.automation.chain import CHAIN_ACTION_TAG
from image_search_assets.automation.schedules import CRON_ENV, SCHEDULE_NAME
from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import open_storage
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG
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
    ... on Schedule { scheduleState { ticks(limit: 50) { tickId status timestamp skipReason runIds
      error { message } } } }
  }
}"""
RUNS = """
{ runsOrError { ... on Runs { results { runId status startTime tags { key value } } } } }"""
REEXECUTE = """
mutation($parent: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
# A fast retry policy: the injected fault is retried once, then the day fails.
FAST_RETRY = {"first_delay_s": 1, "max_delay_s": 2, "max_retries": 1, "deadline_s": 120}


def ticks(dagster: DagsterDev) -> list[dict]:
    """Finished ticks, oldest first."""
    data = dagster.graphql(TICKS, selector=SELECTOR)["scheduleOrError"]["scheduleState"]
    return sorted(
        (t for t in data["ticks"] if t["status"] != "STARTED"), key=lambda t: t["timestamp"]
    )


def runs(dagster: DagsterDev) -> list[dict]:
    """Every run, oldest first, with its tags as a dict."""
    found = dagster.graphql(RUNS)["runsOrError"]["results"]
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return sorted(found, key=lambda r: r["startTime"] or float("inf"))


def finished_run_of(dagster: DagsterDev, day: str, status: str) -> dict | None:
    return next(
        (
            r
            for r in runs(dagster)
            if r["tags"].get("dagster/partition") == day and r["status"] == status
        ),
        None,
    )


def test_the_chain_catches_up_by_itself_and_a_failed_day_holds_it_until_re_executed(tmp_path):
    day1 = today_in_zone() - timedelta(days=3)
    days = days_from(day1, 3)  # through yesterday
    config = write_platform(tmp_path, day1, days=3, retry=FAST_RETRY)
    store = open_storage(load_settings(config).storage_root)
    # The injected fault: day 2's hats index cannot be written (a directory sits on its key).
    blocker = tmp_path / "storage" / asset_value_key(["hats", "annoy_index"], days[1])
    blocker.mkdir(parents=True)
    home = write_instance(tmp_path / "home")
    with DagsterDev(home, config, extra_env={CRON_ENV: "* * * * *"}) as dagster:
        started = dagster.graphql(START, selector=SELECTOR)["startSchedule"]
        assert started["__typename"] == "ScheduleStateResult", started

        # With no action: day 1 runs, then day 2 runs and fails.
        failed = wait_for(
            lambda: finished_run_of(dagster, days[1], "FAILURE"), 600, "day 2 to fail", every=3
        )
        assert finished_run_of(dagster, days[0], "SUCCESS")

        def holding_tick() -> dict | None:
            return next(
                (
                    t
                    for t in ticks(dagster)
                    if f"its daily run (run {failed['runId']}) failed" in (t["skipReason"] or "")
                ),
                None,
            )

        held = wait_for(holding_tick, 150, "a tick that waits on the failed day", every=3)
        assert "Re-execute" in held["skipReason"]
        assert not any(r["tags"].get("dagster/partition") == days[2] for r in runs(dagster))

        # The operator repairs the fault and re-executes day 2 from failure; nothing else.
        shutil.rmtree(blocker)
        again = dagster.graphql(REEXECUTE, parent=failed["runId"])["launchRunReexecution"]
        assert again["__typename"] == "LaunchRunSuccess", again
        assert dagster.wait_run(again["run"]["runId"]) == "SUCCESS"

        day3 = wait_for(
            lambda: finished_run_of(dagster, days[2], "SUCCESS"), 400, "day 3 to run", every=3
        )
        history = runs(dagster)
        every_tick = ticks(dagster)

    # Every day ran in order, each launched by the chain except the operator's re-execution.
    order = [r["tags"]["dagster/partition"] for r in history if r["status"] == "SUCCESS"]
    assert order == [days[0], days[1], days[2]]
    assert day3["tags"][CHAIN_ACTION_TAG] == "launch"
    assert set(json.loads(day3["tags"][GPU_PLAN_TAG])) == set(CATEGORIES)
    launched = [r for t in every_tick for r in t["runIds"]]
    assert failed["runId"] in launched and day3["runId"] in launched
    assert len(launched) == 3  # day 1, day 2 once, day 3: the failed day was never relaunched
    for category in CATEGORIES:
        assert load_current(store, category).manifest["date"] == days[2]
