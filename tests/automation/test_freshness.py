"""Freshness of the served day: the plain outcome, the check in real runs of its job, the alert."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from image_search_assets.automation.freshness import FRESHNESS_CHECK, FRESHNESS_JOB
from image_search_assets.core.index import pins
from image_search_assets.core.index.checks import freshness_outcome
from image_search_assets.core.storage import LocalStorage
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.settings import AlertsConfig, IndexConfig
from tests.conftest import small_settings
from tests.resilience.helpers import serve
from tests.resilience.test_alerts import Webhook
from tests.serving.conftest import day_ids, publish_day

TOKYO = ZoneInfo("Asia/Tokyo")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO)


def test_yesterday_is_fresh_and_the_day_before_goes_stale_after_the_allowance():
    fresh = freshness_outcome("2026-11-04", now=at("2026-11-05T23:00"), tz=TOKYO, max_lag_hours=30)
    assert fresh.passed and fresh.metadata["lag_hours"] == 23.0
    early = freshness_outcome("2026-11-03", now=at("2026-11-05T05:00"), tz=TOKYO, max_lag_hours=30)
    assert early.passed  # 29 h: the day's run still has an hour to publish yesterday
    late = freshness_outcome(
        "2026-11-03", now=at("2026-11-05T07:00"), tz=TOKYO, max_lag_hours=30, pin="pinned to v"
    )
    assert not late.passed and late.metadata["lag_hours"] == 31.0
    assert "yesterday 2026-11-04 is not served; pinned to v" in late.description
    # Counted in the partitions' zone: 22:00 UTC is already the next day in Tokyo.
    utc = datetime(2026, 11, 5, 22, 0, tzinfo=UTC)
    assert (
        "yesterday 2026-11-05"
        in freshness_outcome("2026-11-03", now=utc, tz=TOKYO, max_lag_hours=30).description
    )
    nothing = freshness_outcome(None, now=utc, tz=TOKYO, max_lag_hours=30)
    assert not nothing.passed and "nothing is served" in nothing.description


@pytest.fixture
def platform(tmp_path, sample_catalog):
    settings = small_settings(str(tmp_path / "storage"), str(sample_catalog))
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        yield settings, LocalStorage(tmp_path / "storage"), instance


def run_freshness(settings, instance):
    job = build_definitions(settings).resolve_job_def(FRESHNESS_JOB)
    result = job.execute_in_process(instance=instance)
    assert result.success  # a failed check is a signal, never a failed run
    return {e.asset_key.path[0]: e for e in result.get_asset_check_evaluations()}, result


def test_the_check_fails_while_the_chain_is_behind_and_passes_once_yesterday_is_served(platform):
    settings, store, instance = platform
    today = datetime.now(settings.tz).date()
    behind = (today - timedelta(days=3)).isoformat()
    for category in settings.category_names:
        publish_day(store, category, behind, day_ids(category, behind, 5))
    checks, _ = run_freshness(settings, instance)
    assert set(checks) == set(settings.category_names)
    tops = checks["tops"]
    assert tops.check_name == FRESHNESS_CHECK and not tops.passed
    assert tops.severity == dg.AssetCheckSeverity.ERROR
    assert f"serves {behind}" in (tops.description or "") and "30 h behind" in tops.description
    assert tops.metadata["served_day"].value == behind

    yesterday = (today - timedelta(days=1)).isoformat()
    publish_day(store, "tops", yesterday, day_ids("tops", yesterday, 6))
    checks, _ = run_freshness(settings, instance)
    assert checks["tops"].passed and not checks["pants"].passed

    # Pinned on purpose: still stale, but a warning that names the pin, not an error.
    pins.rollback(store, "pants", to_version=None, day=behind, reason="held", retention=7)
    relaxed = settings.with_overrides(index=IndexConfig(freshness_hours=24 * 365))
    assert run_freshness(relaxed, instance)[0]["hats"].passed
    checks, _ = run_freshness(settings, instance)
    assert checks["pants"].severity == dg.AssetCheckSeverity.WARN
    assert "pinned to" in (checks["pants"].description or "")
    assert checks["pants"].metadata["pin_reason"].value == "held"


def test_the_daily_job_leaves_freshness_out_and_the_alert_sensor_reports_it(platform):
    settings, store, instance = platform
    defs = build_definitions(settings)
    daily = defs.resolve_job_def(DAILY_JOB)
    assert not any(FRESHNESS_CHECK in node.name for node in daily.graph.node_defs)
    behind = (date.today() - timedelta(days=5)).isoformat()
    publish_day(store, "tops", behind, day_ids("tops", behind, 5))
    _, result = run_freshness(settings, instance)
    with serve(Webhook) as webhook:
        webhook.received, webhook.status = [], 204
        alerts = AlertsConfig(webhook_url=webhook.url("/hook"), ui_url="http://dagster.internal")
        sensor = build_definitions(settings.with_overrides(alerts=alerts)).get_sensor_def(
            "check_failure_alert"
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_success_event(),
        )
        sensor(context)
        ((_, _, payload),) = webhook.received
    assert payload["job"] == FRESHNESS_JOB and payload["run_id"] == result.run_id
    steps = {s["step"]: s["error"] for s in payload["failed_steps"]}
    # Every category is stale here (pants and hats never published): one alert names them all.
    assert set(steps) == {f"{c}/annoy_index:{FRESHNESS_CHECK}" for c in settings.category_names}
    assert f"serves {behind}" in steps[f"tops/annoy_index:{FRESHNESS_CHECK}"]
    assert payload["text"].startswith("Asset check failed: ")
