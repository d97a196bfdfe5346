"""Sensors: a run-failure alert posted to the webhook in `alerts.webhook_url`."""

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


def build_sensors(settings: Settings, job: "ExecutableDefinition") -> list[dg.SensorDefinition]:
    return [failure_alert_sensor(settings.alerts, job)]
