"""The daily schedule evaluated against a real (SQLite) instance, tick by tick."""

import json
import uuid
from dataclasses import replace
from datetime import datetime, time, timedelta

import dagster as dg
import pytest

from image_search_assets.automation.schedules import (
    CRON_ENV,
    GPU_PLAN_NOTE_TAG,
    SCHEDULE_NAME,
    THROUGHPUT_TAG,
    build_schedules,
)
from image_search_assets.core.planning.gpu_plan import ThroughputModel, plan_gpus
from image_search_assets.definitions import DAILY_JOB, build_definitions, build_resources
from image_search_assets.tags import GPU_PLAN_TAG

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def tick_for(settings, day: str) -> datetime:
    """06:00 local on the day after `day`: the tick that launches `day`."""
    after = datetime.fromisoformat(day).date() + timedelta(days=1)
    return datetime.combine(after, time(6), settings.tz)


def evaluate(settings, instance, day: str):
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    with dg.build_schedule_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=tick_for(settings, day),
        resources={"catalog": build_resources(settings)["catalog"]},
    ) as context:
        return schedule.evaluate_tick(context)


def materialise_index(instance, settings, day: str, categories=None) -> None:
    for category in categories or settings.category_names:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=[category, "annoy_index"], partition=day)
        )


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_schedule_runs_daily_at_six_in_the_configured_zone(settings, monkeypatch):
    monkeypatch.delenv(CRON_ENV, raising=False)
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    (schedule,) = build_schedules(settings, job)
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "Asia/Tokyo"
    assert schedule.job_name == DAILY_JOB


def test_first_partition_launches_with_the_days_gpu_plan(settings, instance):
    result = evaluate(settings, instance, DAY1)
    (request,) = result.run_requests
    assert request.partition_key == DAY1 and request.run_key == DAY1
    # Sized on the day's catalog rows (tops 6, pants 2, hats 1), not the hand-set 4/2/1.
    expected = plan_gpus({"tops": 6, "pants": 2, "hats": 1}, model=ThroughputModel()).gpus
    assert json.loads(request.tags[GPU_PLAN_TAG]) == expected == {"tops": 2, "pants": 1, "hats": 1}
    assert GPU_PLAN_NOTE_TAG not in request.tags
    assert request.tags[THROUGHPUT_TAG] == (
        "0.25 items/GPU-s and 300 s overhead configured (none measured yet)"
    )


def report_engine_rate(instance, category: str, stage: str, per_second: float, devices: str):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=[category, stage],
            partition=DAY1,
            metadata={"engine_images_per_second": per_second, "devices": devices},
        )
    )


def test_the_plan_uses_the_engines_measured_rate_per_device(settings, instance):
    # 4 GPUs detecting 400 images/s = 100 per device; embedding 300/s on 1 = 300 per device.
    report_engine_rate(instance, "tops", "detections", 400.0, "cuda:0, cuda:1, cuda:2, cuda:3")
    report_engine_rate(instance, "tops", "embeddings", 300.0, "cuda:0")
    (request,) = evaluate(settings, instance, DAY1).run_requests
    assert request.tags[THROUGHPUT_TAG].startswith("75 items/GPU-s measured")  # 1/(1/100+1/300)
    # At 75 items/GPU-s the day's 6 tops take seconds: one GPU each is as fast as four.
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 1, "pants": 1, "hats": 1}

    configured = replace(settings.planning, use_measured=False)
    (request,) = evaluate(settings.with_overrides(planning=configured), instance, DAY1).run_requests
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 2, "pants": 1, "hats": 1}


def test_missing_previous_day_skips_with_a_clear_reason_until_repaired(settings, instance):
    materialise_index(instance, settings, DAY1, ["tops", "pants"])  # hats never finished
    result = evaluate(settings, instance, DAY2)
    assert not result.run_requests
    assert "previous day 2026-11-01 has not succeeded for hats" in result.skip_message

    materialise_index(instance, settings, DAY1, ["hats"])  # e.g. a backfill repaired it
    (request,) = evaluate(settings, instance, DAY2).run_requests
    assert request.partition_key == DAY2


def test_a_run_still_in_progress_for_the_previous_day_skips(settings, instance):
    materialise_index(instance, settings, DAY1)
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name=DAILY_JOB,
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": DAY1},
        )
    )
    result = evaluate(settings, instance, DAY2)
    assert not result.run_requests
    assert f"2026-11-01 is STARTED (run {run_id[:8]})" in result.skip_message

    instance.report_run_failed(instance.get_run_by_id(run_id))
    assert evaluate(settings, instance, DAY2).run_requests


def test_unreadable_catalog_falls_back_to_the_hand_set_plan(settings, instance):
    broken = settings.with_overrides(catalog=str(settings.catalog) + ".missing")
    (request,) = evaluate(broken, instance, DAY1).run_requests
    assert json.loads(request.tags[GPU_PLAN_TAG]) == {"tops": 4, "pants": 2, "hats": 1}
    assert "catalog unreadable" in request.tags[GPU_PLAN_NOTE_TAG]


def test_cron_can_be_overridden_by_the_deployment(settings, monkeypatch):
    monkeypatch.setenv(CRON_ENV, "* * * * *")
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    assert build_schedules(settings, job)[0].cron_schedule == "* * * * *"
