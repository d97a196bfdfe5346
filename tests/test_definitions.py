"""`defs` loads from the real config, with every asset key, tag and job the config implies."""

import dagster as dg

from image_search_assets.definitions import DAILY_JOB, defs, select_executor
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_TYPE_TAG, GPUS_TAG


def test_defs_has_every_expected_asset_key():
    settings = load_settings()
    assert len(settings.categories) == 13
    assert sum(c.gpus for c in settings.categories) == 17
    ingest = {dg.AssetKey("new_products"), dg.AssetKey("removals"), dg.AssetKey("product_images")}
    expected = ingest | {
        dg.AssetKey([c.name, stage])
        for c in settings.categories
        for stage in ("detections", "embeddings", "annoy_index")
    }
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == expected
    # The day's removals reach every index as an input: the lineage shows it.
    for c in settings.categories:
        assert (
            dg.AssetKey("removals") in graph.get(dg.AssetKey([c.name, "annoy_index"])).parent_keys
        )


def test_gpu_tags_come_from_the_categories_config():
    settings = load_settings()
    graph = defs.resolve_asset_graph()
    for c in settings.categories:
        for stage in ("detections", "embeddings"):
            node = graph.get(dg.AssetKey([c.name, stage]))
            assert node.tags[GPUS_TAG] == str(c.gpus)
            assert node.tags[GPU_TYPE_TAG] == c.gpu_type
    assert graph.get(dg.AssetKey(["tops", "detections"])).tags[GPUS_TAG] == "4"
    assert graph.get(dg.AssetKey(["pants", "detections"])).tags[GPUS_TAG] == "2"
    assert GPUS_TAG not in graph.get(dg.AssetKey(["tops", "annoy_index"])).tags


def test_daily_job_is_partitioned_in_the_configured_zone():
    job = defs.resolve_job_def(DAILY_JOB)
    partitions = job.partitions_def
    assert partitions.timezone == "Asia/Tokyo"
    assert partitions.get_first_partition_key() == load_settings().start_date


def test_executor_is_chosen_by_deployment_config(monkeypatch):
    monkeypatch.setenv("IMAGE_SEARCH_EXECUTOR", "multiprocess")
    assert select_executor().name == "multiprocess"
    assert select_executor("in_process").name == "in_process"


def test_schedule_and_index_checks_are_defined():
    assert defs.resolve_schedule_def("daily_index_schedule").job_name == DAILY_JOB
    checks = list(defs.resolve_asset_graph().asset_check_keys)
    # Per category: recall, vectors, accounting, reach, served ids (daily) and freshness.
    assert len(checks) == 6 * len(load_settings().categories)
    assert defs.resolve_schedule_def("index_freshness_schedule").job_name == "index_freshness"


def test_every_job_is_defined():
    names = {job.name for job in defs.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert names == {DAILY_JOB, "reindex", "index_freshness", "rollback_index"}
    assert {s.name for s in defs.sensors or ()} >= {"run_failure_alert", "check_failure_alert"}


def test_gpu_pool_limits_sensor_runs_by_default():
    sensor = defs.resolve_sensor_def("gpu_pool_limits")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
