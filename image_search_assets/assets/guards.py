"""What a step asks before any work: was the run stopped, does another run publish this day,
is the previous day there (or being built), and is it of the configured models? The decisions
live in core (core/planning/publishers.py, core/index/live_set.py).
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd

from image_search_assets.core.index import live_set
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.planning.daily_gate import previous_day
from image_search_assets.core.planning.publishers import DayRun, blocking_run, day_before, refusal
from image_search_assets.settings import Settings
from resources import ModelsResource, StorageResource

PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
STOPPED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


def stop_requested(context: dg.AssetExecutionContext) -> str | None:
    """Why the run must stop (an operator terminated or deleted it), or None.

    Terminating a run sets CANCELING before the run worker is interrupted, and "mark as
    canceled" sets CANCELED: either way a person asked, whatever signal reached the step.
    """
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is None:
        return f"run {context.run.run_id} was deleted"
    if run.status in STOPPED:
        return f"run {context.run.run_id} was terminated ({run.status.value})"
    return None


def _day_runs(
    instance: dg.DagsterInstance, days: set[str], finished_of: str | None = None
) -> dict[str, DayRun]:
    """The unfinished runs of `days`, by id; index steps ended are read for `finished_of`'s."""
    found: dict[str, DayRun] = {}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        day = run.tags.get(PARTITION_TAG)
        if day not in days or not run.execution_plan_snapshot_id:
            continue
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        steps = frozenset(plan.step_keys_to_execute or (s.key for s in plan.steps))
        ended: frozenset[str] = frozenset()
        if day == finished_of:
            events = instance.get_records_for_run(run.run_id, of_type=STEP_ENDS).records
            ended = frozenset(str(e.event_log_entry.step_key) for e in events)
        found[run.run_id] = DayRun(
            run.run_id, day, run.status.value, record.create_timestamp.timestamp(), steps, ended
        )
    return found


def require_sole_publisher(context: dg.AssetExecutionContext) -> None:
    """Fails the step, with no retry, while another run publishes this day or its predecessor.

    Asked by every step before its work, so that it holds on every launcher and for runs that
    start mid-graph (a re-execution, one category's chain).
    """
    day = context.run.tags.get(PARTITION_TAG)
    if day is None:
        return  # not a daily run (the re-index job, a partition range)
    runs = _day_runs(context.instance, {day, day_before(day)}, finished_of=day_before(day))
    me = runs.pop(context.run.run_id, None)
    if me is None:
        return  # this run's record is gone: stop_requested says so
    blocked = blocking_run(me, runs.values())
    if blocked is not None:
        raise dg.Failure(description=refusal(me, *blocked), allow_retries=False)


def previous_day_in_progress(
    context: dg.AssetExecutionContext, category: str, previous: str
) -> str | None:
    """Which run or backfill is still to build `category`'s index of `previous`, if any.

    A backfill detects day N+1 beside day N's index; the day's index step waits for N's.
    """
    step = f"{category}__annoy_index"
    runs = _day_runs(context.instance, {previous}, finished_of=previous)
    for run in runs.values():
        if step in run.steps and step not in run.finished:
            return f"run {run.run_id}"
    backfill_id = context.run.tags.get(BACKFILL_TAG)
    backfill = context.instance.get_backfill(backfill_id) if backfill_id else None
    if backfill is not None and backfill.status.value == "REQUESTED":
        names = backfill.partition_names
        if names is None or previous in names:  # a range: the backfill orders its days itself
            return f"backfill {backfill_id}"
    return None


def previous_models(
    context: dg.AssetExecutionContext, settings: Settings, storage: StorageResource
) -> pd.DataFrame | None:
    """The model identities of the previous day's live set (None on the first day, or while a
    run or backfill still builds it). Fails with no retry, before any GPU work, when the
    previous day has no live set and nothing is building it: the index step would fail anyway,
    after every detection and embedding."""
    day, name = context.partition_key, context.assets_def.key.path[0]
    prev = previous_day(date.fromisoformat(day), date.fromisoformat(settings.start_date))
    if prev is None:
        return None
    before = live_set.stored_models(storage.open(), name, str(prev))
    if before is not None:
        return before
    building = previous_day_in_progress(context, name, str(prev))
    if building is not None:
        context.log.info(f"{name}: {prev} is still being built by {building}")
        return None
    raise dg.Failure(
        description=(
            f"{name}/annoy_index for {prev} is missing (the previous day this partition builds "
            f"on): materialise {name}/annoy_index for {prev} first, e.g. by backfilling that "
            "date. This day never runs on missing data; nothing was detected or embedded."
        ),
        metadata={"missing_partition": str(prev)},
        allow_retries=False,
    )


def require_configured_models(
    context: dg.AssetExecutionContext,
    models: ModelsResource,
    storage: StorageResource,
    detector: LoadedModel,
    before: pd.DataFrame | None,
) -> None:
    """Fails with no retry, before any GPU work, if the configured detector or embedder is not
    the one the previous day's index was built with (the annoy_index step checks again)."""
    if before is None or before.empty:
        return
    day, name = context.partition_key, context.assets_def.key.path[0]
    embedder = live_set.identity_json(models.embedder_identity(storage.read_gs))
    detected_by = live_set.identity_json(detector.identity)
    try:
        notes = live_set.check_configured(before, embedder, detected_by, category=name, day=day)
    except live_set.ModelChangeError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    for note in notes:
        context.log.warning(note)
