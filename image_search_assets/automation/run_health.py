"""Runs whose process is gone: found, marked failed with the reason, their GPU slots freed.

A run killed outright (SIGKILL, the OOM killer, a closed terminal) stays STARTED: it would
hold its GPU slots and, since the chain runs one day at a time, every later day. Each local
executor records its process id when it starts (Dagster's engine event); a run whose process
no longer exists is dead. That is only knowable on the machine that ran it, so the check
applies where runs are launched on this machine (the default launcher, `dagster asset
materialize`, the demo). Under the K8sRunLauncher, Dagster's own run monitoring watches the
run worker's Job; for anything neither can see, the chain's skip reason names the run and
`image-search release-run RUN_ID`, which does the same as this sensor for one run.
"""

from __future__ import annotations

import dagster as dg

from image_search_assets.automation.chain import IN_PROGRESS
from image_search_assets.core.planning.run_liveness import process_gone

SENSOR_NAME = "dead_run_sensor"
# Launchers whose run workers live elsewhere: their pids mean nothing on this machine.
REMOTE_LAUNCHERS = ("K8sRunLauncher", "CeleryK8sRunLauncher", "EcsRunLauncher")


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process executing the run and when it said so; None before it starts."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = getattr(event, "event_specific_data", None)
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None:
            return int(str(pid.value)), record.timestamp
    return None


def launches_here(instance: dg.DagsterInstance) -> bool:
    return type(instance.run_launcher).__name__ not in REMOTE_LAUNCHERS


def dead_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, str]]:
    """In-progress runs whose executing process is gone from this machine, with the reason."""
    found: list[tuple[dg.DagsterRun, str]] = []
    for run in instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS))):
        process = run_process(instance, run.run_id)
        if process is None:
            continue  # queued, or not started executing yet
        pid, started = process
        if process_gone(pid, started):
            found.append((run, f"its process (pid {pid}) is gone: killed or crashed"))
    return found


def release_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> str:
    """Marks an unfinished run failed with `reason` and frees its GPU slots; says what it did."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id} in this instance")
    done = []
    if not run.is_finished:
        instance.report_run_failed(
            run, f"Marked failed: {reason}. Re-execute it from failure to finish the day."
        )
        done.append(f"marked run {run_id} ({run.tags.get('dagster/partition', '-')}) failed")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    done.append("freed its GPU slots")
    return f"{' and '.join(done)}: {reason}"


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks failed, and frees the GPU slots of, runs whose local process is gone, so that a "
        "killed run never holds the daily chain or the GPU budget."
    ),
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    if not launches_here(context.instance):
        return dg.SkipReason("runs are launched elsewhere: Dagster's run monitoring watches them")
    released = [
        release_run(context.instance, run.run_id, reason)
        for run, reason in dead_runs(context.instance)
    ]
    for line in released:
        context.log.warning(line)
    return dg.SkipReason("; ".join(released) or "no dead runs")
