"""What the instance holds for the daily chain: each day's index state and the active runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

import dagster as dg

from image_search_assets.core.planning.daily_gate import ActiveRun, DayState, LastRun

PARTITION_TAG = "dagster/partition"
# Set on the chain's annoy_index-only runs, with why the day had become stale.
CHAIN_ACTION_TAG = "image_search/chain_action"
REBUILD_REASON_TAG = "image_search/rebuild_reason"
FAILURE_REASON_TAG = "dagster/failure_reason"
# Failure reasons of a run whose process died; none at all when a code server or the dead-run
# sensor marks it failed from outside. STEP_FAILURE, RUN_EXCEPTION and an initialisation
# failure are verdicts on code or data: relaunching would only fail again.
CRASH_REASONS = (None, "UNEXPECTED_TERMINATION", "RUN_WORKER_RESTART", "START_TIMEOUT", "UNKNOWN")
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def index_key(category: str) -> dg.AssetKey:
    return dg.AssetKey([category, "annoy_index"])


def active_runs(instance: dg.DagsterInstance) -> list[ActiveRun]:
    """Queued or running runs of any day, whichever job, backfill or command launched them."""
    runs = instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS)))
    return [
        ActiveRun(r.run_id, r.tags[PARTITION_TAG], r.status.value)
        for r in runs
        if PARTITION_TAG in r.tags
    ]


def _crashed(run: dg.DagsterRun) -> bool:
    """Failed with no step failing: the run's process died (Dagster names no step failure)."""
    reason = run.tags.get(FAILURE_REASON_TAG)
    return run.status == dg.DagsterRunStatus.FAILURE and reason in CRASH_REASONS


def _with_last_run(instance: dg.DagsterInstance, state: DayState) -> DayState:
    runs = instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: state.day.isoformat()}), limit=20)
    if not runs:
        return state
    run = runs[0]
    last = LastRun(
        run.run_id,
        run.status.value,
        rebuild=run.tags.get(CHAIN_ACTION_TAG) == "rebuild",
        crashed=_crashed(run),
    )
    return replace(state, last_run=last, crashes=sum(map(_crashed, runs)))


def _why_stale(instance: dg.DagsterInstance, category: str, prev: date) -> str:
    """Names the re-materialisation of the predecessor that made a day's index stale."""
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(index_key(category), asset_partitions=[prev.isoformat()]), limit=1
    ).records
    if not found:
        return f"{prev} changed"
    record = found[0]
    when = datetime.fromtimestamp(record.timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{prev} was re-materialised after it (run {record.run_id[:8]}, {when})"


def day_states(
    instance: dg.DagsterInstance, categories: Sequence[str], days: Sequence[date]
) -> list[DayState]:
    """Each day's missing and stale categories, from one storage-id query per category.

    Storage ids grow with every event, so a day's index is stale exactly when its latest
    materialisation is older than its predecessor's: the predecessor was re-run or backfilled
    after the day was built on it.
    """
    wanted = {d.isoformat() for d in days}
    latest = {
        c: instance.get_latest_storage_id_by_partition(
            index_key(c), dg.DagsterEventType.ASSET_MATERIALIZATION, wanted
        )
        for c in categories
    }
    states = []
    for i, day in enumerate(days):
        key, prev = day.isoformat(), (days[i - 1] if i else None)
        missing = tuple(c for c in categories if key not in latest[c])
        stale = {}
        if prev is not None:
            for c in categories:
                mine, theirs = latest[c].get(key), latest[c].get(prev.isoformat())
                if mine is not None and theirs is not None and mine < theirs:
                    stale[c] = _why_stale(instance, c, prev)
        states.append(DayState(day, missing, stale))
    # Only the chain's head waits on its last run's outcome: ask the run storage for that one.
    head = next((i for i, s in enumerate(states) if s.missing or s.stale), None)
    if head is not None:
        states[head] = _with_last_run(instance, states[head])
    return states
