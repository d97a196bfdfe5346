"""Sensors: alerts posted to the webhook in `alerts.webhook_url`, for failed runs and for
failed asset checks (a stale served day, a count that dropped) in runs that succeeded."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from image_search_assets.core.alerts import failure_payload, post_json
from image_search_assets.settings import AlertsConfig, Settings

if TYPE_CHECKING:
    # Type-only: dagster exports no name for what define_asset_job returns (this union).
    from dagster._core.definitions.target import ExecutableDefinition

PARTITION_TAG = "dagster/partition"


def _failed_steps(context: dg.RunFailureSensorContext) -> list[dict[str, str]]:
    steps = []
    for event in context.get_step_failure_events():
        # STEP_FAILURE events, so step_failure_data is their event_specific_data.
        error = event.step_failure_data.error if event.event_specific_data else None
        steps.append({"step": str(event.step_key), "error": error.message if error else ""})
    return steps


def failure_alert_sensor(alerts: AlertsConfig, job: "ExecutableDefinition") -> dg.SensorDefinition:
    """Posts each failed run of `job` to the webhook; without a URL it only records a skip."""

    @dg.run_failure_sensor(
        name="run_failure_alert",
        monitored_jobs=[job],
        # Running by default: a failure nobody hears about is the expensive kind.
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POSTs a JSON alert for every failed run to alerts.webhook_url.",
    )
    def run_failure_alert(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if not alerts.webhook_url:
            return dg.SkipReason(f"run {run.run_id} failed; alerts.webhook_url is not set")
        payload = failure_payload(
            job=run.job_name,
            run_id=run.run_id,
            partition=run.tags.get(PARTITION_TAG),
            failed_steps=_failed_steps(context),
            error=context.failure_event.message or "run failed",
            ui_url=alerts.ui_url,
        )
        status = post_json(alerts.webhook_url, payload, timeout_s=alerts.timeout_s)
        context.log.info(f"alerted run {run.run_id} failure: webhook answered {status}")
        return None

    return run_failure_alert


def _failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, str]]:
    """The run's check evaluations that failed with ERROR severity (a pin's WARN is known)."""
    failed = []
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.asset_check_evaluation_data if event else None
        if (
            evaluation
            and not evaluation.passed
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ):
            check = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            failed.append({"step": check, "error": evaluation.description or ""})
    return failed


def check_failure_alert_sensor(
    alerts: AlertsConfig, jobs: Sequence["ExecutableDefinition"]
) -> dg.SensorDefinition:
    """Posts the failed asset checks of each successful run of `jobs` (checks never fail a run)."""

    @dg.run_status_sensor(
        name="check_failure_alert",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=list(jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="POSTs a JSON alert for every failed asset check to alerts.webhook_url.",
    )
    def check_failure_alert(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        failed = _failed_checks(context.instance, run.run_id)
        if not failed:
            return dg.SkipReason(f"run {run.run_id}: no asset check failed")
        names = ", ".join(f["step"] for f in failed)
        if not alerts.webhook_url:
            return dg.SkipReason(f"run {run.run_id}: {names} failed; alerts.webhook_url is not set")
        payload = failure_payload(
            job=run.job_name,
            run_id=run.run_id,
            partition=run.tags.get(PARTITION_TAG),
            failed_steps=failed,
            error="; ".join(f"{f['step']}: {f['error']}" for f in failed),
            ui_url=alerts.ui_url,
        )
        payload["text"] = f"Asset check failed: {payload['error'][:300]} <{payload['ui_link']}>"
        status = post_json(alerts.webhook_url, payload, timeout_s=alerts.timeout_s)
        context.log.info(f"alerted {names} in run {run.run_id}: webhook answered {status}")
        return None

    return check_failure_alert


def build_sensors(
    settings: Settings, job: "ExecutableDefinition", *checked: "ExecutableDefinition"
) -> list[dg.SensorDefinition]:
    """The run-failure alert on `job`; the check-failure alert on it and the `checked` jobs."""
    return [
        failure_alert_sensor(settings.alerts, job),
        check_failure_alert_sensor(settings.alerts, [job, *checked]),
    ]
