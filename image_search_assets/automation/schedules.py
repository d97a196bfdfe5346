"""The daily chain's schedule: the earliest day not yet indexed, in order, sized on its items."""

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import dagster as dg

from image_search_assets.automation.chain import (
    CHAIN_ACTION_TAG,
    REBUILD_REASON_TAG,
    active_runs,
    day_states,
    index_key,
)
from image_search_assets.core.planning.daily_gate import (
    Action,
    ChainDecision,
    DayState,
    chain_days,
    count_per_category,
    day_gpu_plan,
    decide_next,
    last_ready_day,
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
# How often the chain is evaluated: a day held back by a late predecessor starts within one
# interval of it succeeding. Each day becomes ready at `partitions.ready_at` the next morning.
DEFAULT_CRON = "*/5 * * * *"
# Deployment override of the cron (a minutely cron makes ticks observable in end-to-end tests).
CRON_ENV = "IMAGE_SEARCH_SCHEDULE_CRON"
GPU_PLAN_NOTE_TAG = "image_search/gpu_plan_note"
THROUGHPUT_TAG = "image_search/gpu_plan_throughput"  # the items/GPU-s the plan assumed, and why
GPU_STAGES = ("detections", "embeddings")
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
                    device_count(meta),
                    _fixed_seconds(launches, event, engine),
                    _gpu_model(meta),
                )
            )
    return rates


def device_count(meta: Mapping[str, dg.MetadataValue]) -> int:
    """The devices a GPU step ran on: `device_count`, or on materialisations written before it
    was recorded, the entries of the `devices` display string ("cuda:0, cuda:1")."""
    count = meta["device_count"].value if "device_count" in meta else None
    if isinstance(count, int):
        return count
    devices = str(meta["devices"].value) if "devices" in meta else ""
    return len([d for d in devices.split(",") if d.strip()]) or 1


def _plan_tags(
    context: dg.ScheduleEvaluationContext, settings: Settings, catalog: CatalogResource, day: date
) -> dict[str, str]:
    """The day's GPU plan as run tags, sized on its items and the measured throughput."""
    names = list(settings.category_names)
    model, throughput = settings.planning.model(), "configured"
    if settings.planning.use_measured:
        model, throughput = measured_throughput(latest_rates(context.instance, names), model)
    plan = day_gpu_plan(
        {c.name: c.gpus for c in settings.categories},
        lambda: count_per_category(catalog.day(day, names).products, names),
        model,
        settings.planning.slack,
    )
    context.log.info(f"GPU plan {plan.gpus} on {throughput} {'; '.join(plan.notes)}")
    tags = {GPU_PLAN_TAG: json.dumps(plan.gpus, sort_keys=True), THROUGHPUT_TAG: throughput[:200]}
    if plan.notes:
        tags[GPU_PLAN_NOTE_TAG] = "; ".join(plan.notes)[:200]
    return tags


def _run_key(decision: ChainDecision, state: DayState) -> str:
    """One launch per chain state: the same state never launches twice, even if the daemon
    resumes a tick, while a day whose run was deleted or re-run gets a new key."""
    after = state.last_run.run_id if state.last_run else "none"
    return f"{decision.day}/{decision.action.value}/{after}"


def build_daily_schedule(
    settings: Settings, job: "ExecutableDefinition", cron: str
) -> dg.ScheduleDefinition:
    first = date.fromisoformat(settings.start_date)
    names = list(settings.category_names)

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=cron,
        execution_timezone=settings.timezone,
        description=(
            "The daily chain: each tick launches the earliest day, from the first partition "
            "through the last ready day, that is not indexed (or whose index is stale), one run "
            "at a time; a failed day holds the later ones and the reason says so."
        ),
    )
    def daily_index_schedule(
        context: dg.ScheduleEvaluationContext, catalog: CatalogResource
    ) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        last = last_ready_day(now, settings.tz, settings.ready_at)
        days = chain_days(first, last) if last >= first else []
        states = day_states(context.instance, names, days)
        decision = decide_next(states, active_runs(context.instance), first_day=first)
        context.log.info(decision.reason)
        if not decision.launch or decision.day is None:
            return dg.SkipReason(decision.reason)
        state = next(s for s in states if s.day == decision.day)
        day = decision.day.isoformat()
        if decision.action is Action.REBUILD:
            return dg.RunRequest(
                run_key=_run_key(decision, state),
                partition_key=day,
                asset_selection=[index_key(c) for c in decision.categories],
                tags={CHAIN_ACTION_TAG: "rebuild", REBUILD_REASON_TAG: decision.reason[:250]},
            )
        return dg.RunRequest(
            run_key=_run_key(decision, state),
            partition_key=day,
            tags={
                CHAIN_ACTION_TAG: "launch",
                **_plan_tags(context, settings, catalog, decision.day),
            },
        )

    return daily_index_schedule


def build_schedules(settings: Settings, job: "ExecutableDefinition") -> list[dg.ScheduleDefinition]:
    cron = os.environ.get(CRON_ENV) or DEFAULT_CRON
    return [build_daily_schedule(settings, job, cron)]
