"""The daily chain's schedule evaluated against a real (SQLite) instance.

Each tick is evaluated once, at its own time, as the daemon does: a day that could not start
at one tick must start at a later tick, never be dropped because that tick's date moved on.
"""

import json
import uuid
from dataclasses import replace
from datetime import datetime, time, timedelta

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType

from image_search_assets.automation.chain import CHAIN_ACTION_TAG, REBUILD_REASON_TAG
from image_search_assets.automation.schedules import (
    CRON_ENV,
    GPU_PLAN_NOTE_TAG,
    SCHEDULE_NAME,
    THROUGHPUT_TAG,
    build_schedules,
    device_count,
)
from image_search_assets.core.planning.gpu_plan import ThroughputModel, plan_gpus
from image_search_assets.definitions import DAILY_JOB, build_definitions, build_resources
from image_search_assets.tags import GPU_PLAN_TAG

DAY1, DAY2, DAY3, DAY4 = "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"


def morning_after(settings, day: str) -> datetime:
    """06:00 local on the day after `day`: the first tick at which `day` is ready."""
    after = datetime.fromisoformat(day).date() + timedelta(days=1)
    return datetime.combine(after, time(6), settings.tz)


class Ticks:
    """The schedule's ticks, five minutes apart from a start, each evaluated exactly once."""

    def __init__(self, settings, instance, start: datetime) -> None:
        self.settings, self.instance, self.at = settings, instance, start
        self.defs = build_definitions(settings)

    def next(self):
        with dg.build_schedule_context(
            instance=self.instance,
            repository_def=self.defs.get_repository_def(),
            scheduled_execution_time=self.at,
            resources={"catalog": build_resources(self.settings)["catalog"]},
        ) as context:
            result = self.defs.resolve_schedule_def(SCHEDULE_NAME).evaluate_tick(context)
        self.at += timedelta(minutes=5)
        return result


def evaluate(settings, instance, day: str):
    """The one tick on the morning after `day`."""
    return Ticks(settings, instance, morning_after(settings, day)).next()


def add_run(instance, day: str, status, **tags) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name=DAILY_JOB,
            run_id=run_id,
            status=status,
            tags={"dagster/partition": day, **tags},
        )
    )
    return run_id


def materialise_index(instance, settings, day: str, categories=None) -> None:
    for category in categories or settings.category_names:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=[category, "annoy_index"], partition=day)
        )


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_the_chain_is_evaluated_every_five_minutes_in_the_configured_zone(settings, monkeypatch):
    monkeypatch.delenv(CRON_ENV, raising=False)
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    (schedule,) = build_schedules(settings, job)
    assert schedule.cron_schedule == "*/5 * * * *"
    assert schedule.execution_timezone == "Asia/Tokyo"
    assert schedule.job_name == DAILY_JOB


def test_first_partition_launches_with_the_days_gpu_plan(settings, instance):
    result = evaluate(settings, instance, DAY1)
    (request,) = result.run_requests
    assert request.partition_key == DAY1 and request.run_key == f"{DAY1}/launch/none"
    assert request.tags[CHAIN_ACTION_TAG] == "launch"
    # Sized on the day's catalog rows (tops 6, pants 2, hats 1), not the hand-set 4/2/1.
    expected = plan_gpus({"tops": 6, "pants": 2, "hats": 1}, model=ThroughputModel()).gpus
    assert json.loads(request.tags[GPU_PLAN_TAG]) == expected == {"tops": 2, "pants": 1, "hats": 1}
    assert GPU_PLAN_NOTE_TAG not in request.tags
    assert request.tags[THROUGHPUT_TAG] == (
        "0.25 items/GPU-s and 300 s overhead configured (none measured yet)"
    )


def report_engine_rate(instance, category: str, stage: str, per_second: float, devices: int):
    """As a GPU step records its rate: the device count a number, the devices for display."""
    names = ", ".join(f"cuda:{i}" for i in range(devices))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=[category, stage],
            partition=DAY1,
            metadata={
                "engine_images_per_second": per_second,
                "devices": names,
                "device_count": devices,
            },
        )
    )


def test_a_steps_device_count_is_its_number_else_its_older_display_string():
    def meta(**values):
        return {
            k: dg.MetadataValue.text(v) if isinstance(v, str) else dg.MetadataValue.int(v)
            for k, v in values.items()
        }

    assert device_count(meta(devices="cuda:0, cuda:1", device_count=2)) == 2
    assert device_count(meta(devices="cpu", device_count=3)) == 3  # CPU engine workers
    # Materialisations written before the count was recorded.
    assert device_count(meta(devices="cuda:0, cuda:1, cuda:2, cuda:3")) == 4
    assert device_count(meta()) == 1


def test_the_plan_uses_the_engines_measured_rate_per_device(settings, instance):
    # 4 GPUs detecting 400 images/s = 100 per device; embedding 300/s on 1 = 300 per device.
    report_engine_rate(instance, "tops", "detections", 400.0, 4)
    report_engine_rate(instance, "tops", "embeddings", 300.0, 1)
    (request,) = evaluate(settings, instance, DAY1).run_requests
    assert request.tags[THROUGHPUT_TAG].startswith("75 items/GPU-s measured")  # 1/(1/100+1/300)
    # At 75 items/GPU-s the day's 6 tops take seconds: one GPU each is as fast as four.
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 1, "pants": 1, "hats": 1}

    configured = replace(settings.planning, use_measured=False)
    (request,) = evaluate(settings.with_overrides(planning=configured), instance, DAY1).run_requests
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 2, "pants": 1, "hats": 1}


def test_a_deployment_started_days_late_catches_up_oldest_first(settings, instance):
    """Start date three days back and nothing run: each tick launches the next day in order."""
    ticks = Ticks(settings, instance, morning_after(settings, DAY3) + timedelta(hours=2))
    launched = []
    for _ in range(3):
        (request,) = ticks.next().run_requests
        launched.append(request.partition_key)
        materialise_index(instance, settings, request.partition_key)  # the day's run succeeded
    assert launched == [DAY1, DAY2, DAY3]
    assert "every day from 2026-11-01 through 2026-11-03 is indexed" in ticks.next().skip_message


def test_a_late_predecessor_delays_the_next_day_and_never_drops_it(settings, instance):
    materialise_index(instance, settings, DAY1)
    run_id = add_run(instance, DAY2, dg.DagsterRunStatus.STARTED)
    # Day 2 is still running on the morning its successor is due, and for two more days.
    ticks = Ticks(settings, instance, morning_after(settings, DAY3))
    for _ in range(3):
        skipped = ticks.next()
        assert not skipped.run_requests
        assert f"2026-11-02 is STARTED (run {run_id})" in skipped.skip_message
        ticks.at += timedelta(days=1)
    # Day 2 finally succeeds: the very next tick launches day 3, not the newest day.
    materialise_index(instance, settings, DAY2)
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=DAILY_JOB), run_id=run_id
    )
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    (request,) = ticks.next().run_requests
    assert request.partition_key == DAY3


def test_a_failed_day_holds_the_chain_until_it_is_re_executed(settings, instance):
    materialise_index(instance, settings, DAY1)
    materialise_index(instance, settings, DAY2, ["tops", "pants"])  # hats failed
    # As Dagster tags a run that failed because a step did (after that step's retries).
    failed = add_run(
        instance, DAY2, dg.DagsterRunStatus.FAILURE, **{"dagster/failure_reason": "STEP_FAILURE"}
    )
    ticks = Ticks(settings, instance, morning_after(settings, DAY3))
    for _ in range(2):
        skipped = ticks.next()
        assert not skipped.run_requests
        assert f"2026-11-02 waits: its daily run (run {failed}) failed" in skipped.skip_message
    # The operator re-executes it from failure; the chain moves on by itself.
    add_run(instance, DAY2, dg.DagsterRunStatus.SUCCESS)
    materialise_index(instance, settings, DAY2, ["hats"])
    (request,) = ticks.next().run_requests
    assert request.partition_key == DAY3


def test_re_running_an_older_day_rebuilds_the_later_days_indexes_in_order(settings, instance):
    for day in (DAY1, DAY2, DAY3):
        materialise_index(instance, settings, day)
    materialise_index(instance, settings, DAY1, ["tops"])  # a re-run of day 1's tops
    ticks = Ticks(settings, instance, morning_after(settings, DAY3))
    (request,) = ticks.next().run_requests
    assert request.partition_key == DAY2 and request.tags[CHAIN_ACTION_TAG] == "rebuild"
    assert request.asset_selection == [dg.AssetKey(["tops", "annoy_index"])]  # no GPU steps
    assert "2026-11-01 was re-materialised after it" in request.tags[REBUILD_REASON_TAG]
    materialise_index(instance, settings, DAY2, ["tops"])
    (request,) = ticks.next().run_requests
    assert request.partition_key == DAY3 and request.tags[CHAIN_ACTION_TAG] == "rebuild"
    materialise_index(instance, settings, DAY3, ["tops"])
    assert not ticks.next().run_requests


def test_the_same_state_never_launches_twice_but_a_deleted_run_relaunches(settings, instance):
    first = evaluate(settings, instance, DAY1).run_requests[0]
    run_id = add_run(instance, DAY1, dg.DagsterRunStatus.CANCELED)
    instance.delete_run(run_id)
    again = evaluate(settings, instance, DAY1).run_requests[0]
    assert again.run_key == first.run_key  # the daemon's run-key dedup sees the same state


def test_unreadable_catalog_falls_back_to_the_hand_set_plan(settings, instance):
    broken = settings.with_overrides(catalog=str(settings.catalog) + ".missing")
    (request,) = evaluate(broken, instance, DAY1).run_requests
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 4, "pants": 2, "hats": 1}
    assert "catalog unreadable" in request.tags[GPU_PLAN_NOTE_TAG]


def test_cron_can_be_overridden_by_the_deployment(settings, monkeypatch):
    monkeypatch.setenv(CRON_ENV, "* * * * *")
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    assert build_schedules(settings, job)[0].cron_schedule == "* * * * *"
