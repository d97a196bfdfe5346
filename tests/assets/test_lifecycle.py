"""A week of days on a SQLite instance: adds, re-sends, removals and re-adds, rollouts."""

import csv
from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.index.live_set import LIVE_COLUMNS
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.records import day_report, format_report
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.demo.synthetic import generate_catalog
from resources import StorageResource
from tests.conftest import START, small_settings

DAYS = [f"2026-11-0{i}" for i in range(1, 6)]
T = [f"p00-tops-00{i}" for i in range(7)]
H = ["p00-hats-000", "p00-hats-001"]
# (product_id, category, image, added_at, removed_at): one catalog, cut into days.
ROWS = [
    (T[0], "tops", T[0], "2026-11-01T10:00:00+09:00", ""),
    (T[1], "tops", T[1], "2026-11-01T10:00:00+09:00", "2026-11-03T09:00:00+09:00"),
    (T[2], "tops", T[2], "2026-11-01 10:00:00", "2026-11-05"),
    (H[0], "hats", H[0], "2026-11-01T10:00:00+09:00", "2026-11-03T01:00:00+00:00"),
    (T[3], "tops", T[3], "2026-11-02T10:00:00+09:00", ""),
    (T[0], "tops", T[6], "2026-11-02T11:00:00+09:00", ""),  # re-sent with a new image
    (T[1], "tops", T[1], "2026-11-04T10:00:00+09:00", ""),  # re-added after its removal
    (T[4], "tops", T[4], "2026-11-04T10:00:00+09:00", "2026-11-04T12:00:00+09:00"),
    (T[5], "tops", T[5], "2026-11-05T10:00:00+09:00", ""),
    (H[1], "hats", H[1], "2026-11-05T10:00:00+09:00", ""),
]
LIVE = {  # what each day's index must serve, exactly once each
    "tops": [
        {T[0], T[1], T[2]},
        {T[0], T[1], T[2], T[3]},
        {T[0], T[2], T[3]},
        {T[0], T[1], T[2], T[3]},
        {T[0], T[1], T[3], T[5]},
    ],
    "hats": [{H[0]}, {H[0]}, set(), set(), {H[1]}],
}


def write_catalog(out: Path, rows, mix: dict[str, int], name: str) -> Path:
    """A catalog of `rows` (product_id, category, image, added_at, removed_at) over drawn images."""
    generate_catalog(out, ["tops", "pants", "hats"], START, days=1, image_size=96, mix=mix)
    path = out / name
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["product_id", "category", "image_url", "added_at", "removed_at"])
        for pid, cat, image, added, removed in rows:
            writer.writerow([pid, cat, f"images/{image}.jpg", added, removed])
    return path


@pytest.fixture(scope="module")
def lifecycle_catalog(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lifecycle")
    return write_catalog(out, ROWS, {"tops": 7, "pants": 0, "hats": 2}, "lifecycle.csv")


def run_day(settings, day, instance):
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)


def served_ids(store, category):
    try:
        ids = load_current(store, category).ids
    except FileNotFoundError:
        return []
    return ids


def _checks(result) -> dict[str, bool]:
    return {
        f"{e.asset_key.path[0]}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


@pytest.mark.e2e  # minutes: a week of daily runs on each storage
@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_a_week_of_adds_resends_removals_and_readds_serves_the_live_set(
    tmp_path, lifecycle_catalog, backend, request
):
    settings = small_settings(str(tmp_path / "storage"), str(lifecycle_catalog))
    if backend == "gcs":
        bucket = request.getfixturevalue("gcs_bucket")
        settings = settings.with_overrides(storage_root=f"gs://{bucket}/p", gcp_project="test")
    store = StorageResource(root=settings.storage_root, gcp_project=settings.gcp_project).open()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        for n, day in enumerate(DAYS):
            result = run_day(settings, day, instance)
            assert result.success, day
            checks = _checks(result)
            assert len(checks) == 5 * len(settings.categories) and all(checks.values()), checks
            for cat, live in LIVE.items():
                ids = served_ids(store, cat)
                assert len(ids) == len(set(ids)) and set(ids) == live[n], (day, cat)
                value = store.read_parquet(asset_value_key([cat, "annoy_index"], day))
                assert list(value.columns) == list(LIVE_COLUMNS)  # ids only, no vectors
        report = day_report(store, "2026-11-03", settings.category_names)
        assert report["categories"]["tops"]["removed"] == 1
        assert report["categories"]["hats"]["removed"] == 1
        assert "removed" in format_report(report)
        # The same-day add-then-remove (T4) never reaches the index nor the day's new rows.
        day4 = day_report(store, "2026-11-04", settings.category_names)["categories"]["tops"]
        assert day4["new"] == 1 and day4["removed"] == 1 and day4["unaccounted"] == []
        # The re-sent product's vector comes from its later day's partition.
        value = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAYS[-1]))
        assert value.set_index("product_id").loc[T[0], "day"] == "2026-11-02"

        # Re-running a day changes nothing.
        before = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAYS[-1]))
        ids_before = served_ids(store, "tops")
        assert run_day(settings, DAYS[-1], instance).success
        after = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAYS[-1]))
        assert after.equals(before) and served_ids(store, "tops") == ids_before


def step_errors(result) -> dict[str, str]:
    return {
        e.step_key: e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    }


def started_steps(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


@pytest.mark.parametrize(
    "role, change, old, new",
    [
        ("embedder", {"arch": "resnet34"}, "resnet18", "resnet34"),
        ("detector", {"input_size": 192}, "160px", "192px"),
    ],
)
def test_a_model_change_fails_at_detections_before_gpu_work_and_the_old_index_serves(
    tmp_path, lifecycle_catalog, role, change, old, new
):
    settings = small_settings(str(tmp_path / "storage"), str(lifecycle_catalog))
    store = StorageResource(root=settings.storage_root).open()
    changed = settings.with_overrides(**{role: replace(getattr(settings, role), **change)})
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        assert run_day(settings, DAYS[0], instance).success
        assert store.list(f"work/{DAYS[0]}/tops/embeddings/")  # where a day's chunks go
        served = load_current(store, "tops").manifest
        result = run_day(changed, DAYS[1], instance)
    assert not result.success
    errors = step_errors(result)
    for c in ("tops", "hats"):
        message = errors[f"{c}__detections"]
        assert role in message and old in message and new in message
        assert f"image-search reindex --category {c}" in message
        # Failed before any GPU work: no chunk written, the embeddings step never started.
        assert store.list(f"work/{DAYS[1]}/{c}/") == []
        assert f"{c}__embeddings" not in started_steps(result)
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert load_current(store, "tops").manifest["version"] == served["version"]
    assert len(served["models"]["embedders"]) == 1 and len(served["models"]["detectors"]) == 1
    assert date.fromisoformat(served["date"]) == START
