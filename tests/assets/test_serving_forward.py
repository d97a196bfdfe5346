"""Serving only moves forward, on real materialisations (SQLite instance, local storage).

Re-running an older day writes and verifies its version but leaves CURRENT on the newest day;
the chain's schedule then rebuilds the later days' indexes in order, without GPU steps, and
CURRENT moves to the rebuilt newest day. A step that fails before its final act leaves CURRENT
where it was.
"""

from datetime import datetime, time, timedelta

import dagster as dg
import pytest

from image_search_assets.automation.chain import CHAIN_ACTION_TAG
from image_search_assets.automation.schedules import SCHEDULE_NAME
from image_search_assets.core.index.current import read_pointer
from image_search_assets.core.layout import asset_value_key
from image_search_assets.definitions import DAILY_JOB, build_definitions, build_resources
from resources import StorageResource
from tests.assets.test_lifecycle import DAYS, LIVE, ROWS, run_day, served_ids, write_catalog
from tests.conftest import small_settings

pytestmark = pytest.mark.e2e  # minutes: five daily runs, then the rebuilds


@pytest.fixture(scope="module")
def lifecycle_catalog(tmp_path_factory):
    """test_lifecycle's week of adds, re-sends and removals."""
    out = tmp_path_factory.mktemp("forward")
    return write_catalog(out, ROWS, {"tops": 7, "pants": 0, "hats": 2}, "lifecycle.csv")


def tick(settings, instance, at: datetime):
    defs = build_definitions(settings)
    with dg.build_schedule_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=at,
        resources={"catalog": build_resources(settings)["catalog"]},
    ) as context:
        return defs.resolve_schedule_def(SCHEDULE_NAME).evaluate_tick(context)


def execute(settings, instance, request: dg.RunRequest):
    """Runs a schedule's request as the daemon would: its partition, selection and tags."""
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        tags=request.tags,
        instance=instance,
        raise_on_error=False,
    )


def index_metadata(result, category: str) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey([category, "annoy_index"])
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_re_run_of_an_older_day_keeps_serving_the_newest_and_the_chain_rebuilds(
    tmp_path, lifecycle_catalog
):
    settings = small_settings(str(tmp_path / "storage"), str(lifecycle_catalog))
    store = StorageResource(root=settings.storage_root).open()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        for day in DAYS:
            assert run_day(settings, day, instance).success, day
        newest = read_pointer(store, "tops")
        assert newest is not None and newest.date == DAYS[-1]

        # An operator re-runs day 3 (as from the UI, or a one-day backfill).
        rerun = run_day(settings, DAYS[2], instance)
        assert rerun.success
        meta = index_metadata(rerun, "tops")
        assert f"serves {DAYS[-1]}" in meta["current"] and meta["version"].startswith(DAYS[2])
        assert read_pointer(store, "tops").version == newest.version
        assert set(served_ids(store, "tops")) == LIVE["tops"][-1]  # not day 3's set

        # The chain rebuilds days 4 and 5, index only, in order; then it is idle.
        at = datetime.combine(datetime.fromisoformat(DAYS[-1]).date(), time(7), settings.tz)
        at += timedelta(days=1)
        for day in DAYS[3:]:
            (request,) = tick(settings, instance, at).run_requests
            assert request.partition_key == day and request.tags[CHAIN_ACTION_TAG] == "rebuild"
            assert {k.path[-1] for k in request.asset_selection} == {"annoy_index"}
            result = execute(settings, instance, request)
            assert result.success
            steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
            # Each category's index and its checks: no ingest, no GPU step.
            assert {f"{c}__annoy_index" for c in settings.category_names} <= steps
            assert all("__annoy_index" in step for step in steps), steps
            at += timedelta(minutes=5)
        assert not tick(settings, instance, at).run_requests

    rebuilt = read_pointer(store, "tops")
    assert rebuilt.date == DAYS[-1] and rebuilt.version != newest.version
    for category, live in LIVE.items():
        assert set(served_ids(store, category)) == live[-1], category


def test_a_step_that_fails_before_its_final_act_leaves_current_where_it_was(
    tmp_path, lifecycle_catalog
):
    settings = small_settings(str(tmp_path / "storage"), str(lifecycle_catalog))
    store = StorageResource(root=settings.storage_root).open()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        for day in DAYS[:2]:
            assert run_day(settings, day, instance).success, day
        served = read_pointer(store, "tops")
        # An older live set in the keep window, truncated: retention reads it on day 3.
        key = asset_value_key(["tops", "annoy_index"], DAYS[0])
        data = store.read_bytes(key)
        store.write_bytes(key, data[: len(data) // 2])
        result = run_day(settings, DAYS[2], instance)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert "tops__annoy_index" in failed
    assert read_pointer(store, "tops") == served  # nothing moved
