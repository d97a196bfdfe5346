"""The run-failure sensor posts a real failed run to a webhook served on 127.0.0.1."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import dagster as dg
import pytest

from image_search_assets.core.alerts import AlertDeliveryError
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.settings import AlertsConfig, load_settings
from tests.resilience.helpers import fast_settings, run_day, serve

DAY = "2026-11-01"
SECRET_PATH = "/hooks/T000/B000/s3cr3t"


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return  # keep test output quiet


@pytest.fixture
def webhook():
    with serve(Webhook) as server:
        server.received, server.status = [], 204
        yield server


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A real failed daily run: its catalog does not exist, so new_products fails at once."""
    tmp = tmp_path_factory.mktemp("failed")
    settings = fast_settings(str(tmp / "storage"), str(tmp / "missing.csv"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(settings, DAY, instance)
        assert not result.success
        yield settings, instance, result


def evaluate(failed_run, alerts: AlertsConfig):
    settings, instance, result = failed_run
    sensor = build_definitions(settings.with_overrides(alerts=alerts)).get_sensor_def(
        "run_failure_alert"
    )
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    return sensor(context)


def test_a_failed_run_is_posted_with_its_steps_error_and_link(failed_run, webhook):
    alerts = AlertsConfig(webhook_url=webhook.url(SECRET_PATH), ui_url="http://dagster.internal/")
    evaluate(failed_run, alerts)
    run_id = failed_run[2].run_id
    ((path, content_type, payload),) = webhook.received
    assert (path, content_type) == (SECRET_PATH, "application/json")
    assert payload["job"] == DAILY_JOB and payload["run_id"] == run_id
    assert payload["partition"] == DAY
    assert payload["ui_link"] == f"http://dagster.internal/runs/{run_id}"
    (step,) = payload["failed_steps"]
    assert step["step"] == "new_products" and "missing.csv does not exist" in step["error"]
    assert "Fix:" in step["error"]  # the permanent failure's message says what to do
    assert payload["error"] and f"{DAILY_JOB} for {DAY} failed in new_products" in payload["text"]


def test_without_a_webhook_url_the_sensor_posts_nothing(failed_run, webhook):
    result = evaluate(failed_run, AlertsConfig(webhook_url=None))
    assert isinstance(result, dg.SkipReason) and "webhook_url is not set" in result.skip_message
    assert webhook.received == []


def test_a_refused_alert_fails_the_tick_without_leaking_the_url(failed_run, webhook):
    webhook.status = 500
    with pytest.raises(AlertDeliveryError) as info:
        evaluate(failed_run, AlertsConfig(webhook_url=webhook.url(SECRET_PATH), timeout_s=5))
    assert "500" in str(info.value) and "s3cr3t" not in str(info.value)
    assert len(webhook.received) == 1


def test_the_webhook_url_comes_from_the_environment(monkeypatch):
    assert load_settings().alerts.webhook_url is None  # nothing in the packaged config
    monkeypatch.setenv("IMAGE_SEARCH_ALERT_WEBHOOK", "https://hooks.example/T1/B2/x")
    assert load_settings().alerts.webhook_url == "https://hooks.example/T1/B2/x"
