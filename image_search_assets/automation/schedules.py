"""The daily schedule: one run per day, only on a successful previous day, sized on its items."""

import json
import os
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING

import dagster as dg

from image_search_assets.core.planning.daily_gate import (
    ActiveRun,
    count_per_category,
    day_gpu_plan,
    decide_daily_run,
    previous_day,
    target_day,
)
from image_search_assets.core.planning.gpu_options import gpu_model_key
from image_search_assets.core.planning.gpu_plan import StageRate, measured_throughput
from image_search_assets.settings import Settings
from image_search_assets.tags import GPU_PLAN_TAG
from resources import CatalogResource

if TYPE_CHECKING:
    # Type-only: dagster exports no name for what define_asset_job returns (this union).
    from dagster._core.definitions.target import ExecutableDefinition

SCHEDULE_NAME = "daily_index_schedule"
DEFAULT_CRON = "0 6 * * *"
# Deployment override of the cron (a minutely cron makes ticks observable in end-to-end tests).
CRON_ENV = "IMAGE_SEARCH_SCHEDULE_CRON"
GPU_PLAN_NOTE_TAG = "image_search/gpu_plan_note"
THROUGHPUT_TAG = "image_search/gpu_plan_throughput"  # the items/GPU-s the plan assumed, and why
GPU_STAGES = ("detections", "embeddings")
PARTITION_TAG = "dagster/partition"
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def index_key(category: str) -> dg.AssetKey:
    return dg.AssetKey([category, "annoy_index"])


def missing_index_partitions(
    instance: dg.DagsterInstance, categories: Sequence[str], day: date
) -> list[str]:
    """Categories whose annoy_index has no materialisation for `day`."""
    missing = []
    for category in categories:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(index_key(category), asset_partitions=[day.isoformat()]), limit=1
        )
        if not found.records:
            missing.append(category)
    return missing


def active_runs(instance: dg.DagsterInstance, days: Sequence[date]) -> list[ActiveRun]:
    """Queued or running runs of any of `days`, whichever job or backfill launched them."""
    runs = instance.get_runs(
        dg.RunsFilter(
            statuses=list(IN_PROGRESS), tags={PARTITION_TAG: [d.isoformat() for d in days]}
        )
    )
    return [ActiveRun(r.run_id, r.tags[PARTITION_TAG], r.status.value) for r in runs]


# A step's launch: its Job created by the run worker (k8s), or its start in process.
_LAUNCH_EVENTS = {dg.DagsterEventType.STEP_WORKER_STARTING, dg.DagsterEventType.STEP_START}


class _Launches:
    """Each run's step launches, read from its event log once however many steps ask."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.by_run: dict[str, list[tuple[str | None, float]]] = {}

    def last_before(self, run_id: str, step_key: str, before: float) -> float | None:
        """When the attempt of `step_key` that ended at `before` was launched; None if unknown.
        The last attempt's: a retried step is launched again, and its pod pays the cost again."""
        if run_id not in self.by_run:
            entries = self.instance.all_logs(run_id, of_type=_LAUNCH_EVENTS)
            self.by_run[run_id] = [(e.step_key, e.timestamp) for e in entries]
        times = [t for key, t in self.by_run[run_id] if key == step_key and t <= before]
        return max(times, default=None)


def _fixed_seconds(launches: _Launches, event, engine: object) -> float | None:
    """The step's wall time from launch to output less the engine's seconds (StageRate)."""
    if not isinstance(engine, dict) or not event.step_key:
        return None
    engine_s = engine.get("wall_seconds")
    launched = launches.last_before(event.run_id, event.step_key, event.timestamp)
    if launched is None or not isinstance(engine_s, int | float):
        return None
    return max(0.0, event.timestamp - launched - float(engine_s))


def _gpu_model(meta: Mapping[str, dg.MetadataValue]) -> str | None:
    """The GPU model a step ran on ("l4", "t4"), as its `gpu_model` metadata names it; None for
    a step on the CPU or one recorded before steps named their GPU."""
    name = str(meta["gpu_model"].value) if "gpu_model" in meta else ""
    return gpu_model_key(name) if name and name != "cpu" else None


def latest_rates(instance: dg.DagsterInstance, categories: Sequence[str]) -> list[StageRate]:
    """Each GPU step's engine images/s, device count, fixed seconds and GPU model, from its
    latest materialisation and its run's event log."""
    rates, launches = [], _Launches(instance)
    for category in categories:
        for stage in GPU_STAGES:
            event = instance.get_latest_materialization_event(dg.AssetKey([category, stage]))
            meta = (
                event.asset_materialization.metadata
                if event and event.asset_materialization
                else {}
            )
            if event is None or "engine_images_per_second" not in meta:
                continue  # never materialised, or every chunk was reused
            devices = str(meta["devices"].value) if "devices" in meta else ""
            per_second = meta["engine_images_per_second"].value
            if not isinstance(per_second, int | float):
                raise TypeError(
                    f"{category}/{stage} engine_images_per_second is {per_second!r}, not a number"
                )
            engine = meta["engine"].value if "engine" in meta else None
            rates.append(
                StageRate(
                    stage,
                    float(per_second),
                    len([d for d in devices.split(",") if d.strip()]) or 1,
                    _fixed_seconds(launches, event, engine),
                    _gpu_model(meta),
                )
            )
    return rates


def build_daily_schedule(
    settings: Settings, job: "ExecutableDefinition", cron: str
) -> dg.ScheduleDefinition:
    first = date.fromisoformat(settings.start_date)
    names = list(settings.category_names)
    hand_set = {c.name: c.gpus for c in settings.categories}

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=cron,
        execution_timezone=settings.timezone,
        description=(
            "Launches yesterday's partition (all categories) once the day before it has "
            "succeeded and no run of either is active; otherwise skips with the reason."
        ),
    )
    def daily_index_schedule(
        context: dg.ScheduleEvaluationContext, catalog: CatalogResource
    ) -> dg.RunRequest | dg.SkipReason:
        day = target_day(context.scheduled_execution_time, settings.tz)
        prev = previous_day(day, first)
        missing = [] if prev is None else missing_index_partitions(context.instance, names, prev)
        running = active_runs(context.instance, [d for d in (prev, day) if d is not None])
        decision = decide_daily_run(day, first, missing_previous=missing, active_runs=running)
        if not decision.launch:
            context.log.info(decision.reason)
            return dg.SkipReason(decision.reason)
        model, throughput = settings.planning.model(), "configured"
        if settings.planning.use_measured:
            model, throughput = measured_throughput(latest_rates(context.instance, names), model)
        plan = day_gpu_plan(
            hand_set,
            lambda: count_per_category(catalog.day(day, names).products, names),
            model,
            settings.planning.slack,
        )
        context.log.info(
            f"{decision.reason}; GPU plan {plan.gpus} on {throughput} {'; '.join(plan.notes)}"
        )
        tags = {
            GPU_PLAN_TAG: json.dumps(plan.gpus, sort_keys=True),
            THROUGHPUT_TAG: throughput[:200],
        }
        if plan.notes:
            tags[GPU_PLAN_NOTE_TAG] = "; ".join(plan.notes)[:200]
        return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat(), tags=tags)

    return daily_index_schedule


def build_schedules(settings: Settings, job: "ExecutableDefinition") -> list[dg.ScheduleDefinition]:
    cron = os.environ.get(CRON_ENV) or DEFAULT_CRON
    return [build_daily_schedule(settings, job, cron)]
