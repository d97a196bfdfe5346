"""The daily graph materialised over real partitions with small real resources."""

from dataclasses import replace

import dagster as dg
import numpy as np
import pytest
import torch

from image_search_assets.automation.schedules import latest_rates
from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.index.vectors import load_vectors
from image_search_assets.core.inference import engine
from image_search_assets.core.inference.engine import precision
from image_search_assets.core.layout import REMOVALS_ASSET, asset_value_key, removals_key
from image_search_assets.core.planning.gpu_plan import measured_throughput
from image_search_assets.core.records import day_report
from image_search_assets.definitions import DAILY_JOB, build_definitions
from resources import StorageResource

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


def run_day(settings, day, instance):
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)


def open_storage(settings):
    return StorageResource(root=settings.storage_root).open()


@pytest.fixture
def detector_calls(monkeypatch):
    """Records how many images each detector call sees (the models' real work)."""
    seen = []
    real = engine.detect_sharded

    def counting(load, blobs, devices, **options):
        seen.append(len(blobs))
        return real(load, blobs, devices, **options)

    monkeypatch.setattr(engine, "detect_sharded", counting)
    return seen


def test_consecutive_days_accumulate_without_rerunning_models(settings, detector_calls):
    store = open_storage(settings)
    counts = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for day in DAYS:
            detector_calls.clear()
            result = run_day(settings, day, instance)
            assert result.success
            report = day_report(store, day, settings.category_names)
            new_indexed = sum(c["indexed"] for c in report["categories"].values())
            # Only the day's own images went through the detector.
            assert sum(detector_calls) == new_indexed
            for cat, r in report["categories"].items():
                assert r["unaccounted"] == []
                counts[cat] = counts.get(cat, 0) + r["indexed"]
                assert r["index_count_to_date"] == counts[cat]
                assert load_current(store, cat).manifest["count"] == counts[cat]
        # Long steps log done/total and rate; the last run's lines:
        lines = [r.user_message for r in instance.all_logs(result.run_id)]
        tops = report["categories"]["tops"]["indexed"]
        assert f"tops detect: 0/{tops} images" in lines
        assert any(m.startswith(f"tops detect: {tops}/{tops} images (100%), ") for m in lines)
        assert any(m.startswith("tops embed: ") and " crops/s" in m for m in lines)
        assert any(m.startswith("fetch images: ") and "(100%)" in m for m in lines)
        detections = instance.get_latest_materialization_event(dg.AssetKey(["tops", "detections"]))
        metadata = detections.asset_materialization.metadata
        assert metadata["gpus"].value == 4  # no plan tag: the hand-set config
        assert metadata["device_count"].value == 1  # the CPU engine worker the devices name
        # What the engine did: its throughput, batch size and path, for each run.
        assert metadata["engine_images_per_second"].value > 0
        assert metadata["engine_batch_size"].value == settings.detector.batch_size
        engine_meta = metadata["engine"].value
        assert engine_meta["detect_path"] == "vectorised:ssd" and engine_meta["devices"] == ["cpu"]
        assert engine_meta["images"] == tops
        # The schedule's planner reads exactly these figures back, one per GPU step.
        rates = latest_rates(instance, settings.category_names)
        assert len(rates) == 2 * len(settings.category_names)
        assert all(r.images_per_second > 0 and r.devices == 1 for r in rates)
        # ...and each step's fixed cost: launch to output, less the engine's own seconds.
        for r in rates:
            assert r.fixed_seconds is not None and r.fixed_seconds >= 0
        model, source = measured_throughput(rates, settings.planning.model())
        assert "s overhead measured" in source and model.overhead_s < 300
    day1 = set(store.read_parquet(asset_value_key(["tops", "annoy_index"], DAYS[0]))["product_id"])
    day2 = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAYS[1]))
    emb2 = store.read_parquet(asset_value_key(["tops", "embeddings"], DAYS[1]))
    assert day1 <= set(day2["product_id"]) and not day1 & set(emb2["product_id"])
    assert day2["product_id"].is_unique


def test_missing_previous_partition_fails_clearly_and_is_not_retried(settings):
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAYS[0], instance).success
        result = run_day(settings, DAYS[2], instance)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    # Caught in detections, before any GPU work: nothing was detected or embedded.
    assert {e.step_key for e in failures} == {f"{c}__detections" for c in settings.category_names}
    message = failures[0].event_specific_data.error.message
    assert "2026-11-02 is missing" in message and "previous day" in message
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert not any(s.endswith(("__embeddings", "__annoy_index")) for s in started)
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    served = load_current(open_storage(settings), "tops")
    assert served.manifest["date"] == DAYS[0]  # day 1 still serves


def test_a_missing_removals_record_fails_the_index_step_clearly(settings):
    """The day's removals reach annoy_index as an input, stored where they always were."""
    store = open_storage(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAYS[0], instance).success
        assert asset_value_key([REMOVALS_ASSET], DAYS[0]) == removals_key(DAYS[0])
        store.delete(removals_key(DAYS[0]))
        result = (
            build_definitions(settings)
            .resolve_job_def(DAILY_JOB)
            .execute_in_process(
                partition_key=DAYS[0],
                instance=instance,
                raise_on_error=False,
                asset_selection=[dg.AssetKey(["tops", "annoy_index"])],
            )
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "tops__annoy_index"
    assert f"removals for {DAYS[0]} is missing" in failure.event_specific_data.error.message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def test_bad_rows_and_bad_images_are_quarantined_with_reasons(settings):
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAYS[0], instance).success
    report = day_report(open_storage(settings), DAYS[0], settings.category_names)
    rows = {r["reason"] for r in report["catalog_quarantine"]}
    assert rows == {
        "unknown_category",
        "duplicate_product_id",
        "missing_image_url",
        "unparseable_added_at",
    }
    bad_images = {
        i["product_id"]: i["reason"] for i in report["categories"]["tops"]["quarantined_items"]
    }
    assert set(bad_images) == {"bad-p00-truncated-image", "bad-p00-not-an-image"}
    assert all(r["unaccounted"] == [] for r in report["categories"].values())


def test_local_and_gcs_storage_give_identical_results(settings, gcs_bucket):
    gcs_settings = settings.with_overrides(
        storage_root=f"gs://{gcs_bucket}/platform", gcp_project="test"
    )
    with dg.DagsterInstance.ephemeral() as instance:
        for s in (settings, gcs_settings):
            for day in DAYS[:2]:
                assert run_day(s, day, instance).success
    local = StorageResource(root=settings.storage_root).open()
    remote = StorageResource(root=gcs_settings.storage_root, gcp_project="test").open()
    assert remote.uri("x").startswith(f"gs://{gcs_bucket}/platform/")
    for cat in settings.category_names:
        key = asset_value_key([cat, "annoy_index"], DAYS[1])
        a, b = local.read_parquet(key), remote.read_parquet(key)
        assert a.equals(b)  # the live sets: which stored rows are live
        np.testing.assert_allclose(
            load_vectors(local, cat, a), load_vectors(remote, cat, b), atol=1e-6
        )
        la, lb = load_current(local, cat), load_current(remote, cat)
        assert la.ids == lb.ids and la.manifest["count"] == lb.manifest["count"]
    reports = [day_report(s, DAYS[1], settings.category_names) for s in (local, remote)]
    assert reports[0] == reports[1]


def test_precision_and_compile_reach_the_engine_from_the_config(settings, monkeypatch):
    # An explicit precision holds on the CPU too. The engine runs eager here: compiling costs
    # ~1 min on this CPU and has its own test (tests/core/inference/engine/test_compile.py).
    configured = settings.with_overrides(
        detector=replace(settings.detector, precision="bf16", compile=True),
        embedder=replace(settings.embedder, precision="fp32"),
    )
    seen: dict[str, set] = {}
    for name in ("detect_sharded", "embed_sharded"):
        real = getattr(engine, name)

        def spy(*args, _real=real, _name=name, **options):
            seen.setdefault(_name, set()).add((options["amp"], options["compile"]))
            return _real(*args, **(options | {"compile": False}))

        monkeypatch.setattr(engine, name, spy)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(configured, DAYS[0], instance)
        assert result.success
        metadata = instance.get_latest_materialization_event(
            dg.AssetKey(["tops", "detections"])
        ).asset_materialization.metadata
    assert seen == {
        "detect_sharded": {(torch.bfloat16, True)},
        "embed_sharded": {(None, False)},
    }
    assert metadata["engine"].value["precision"] == "bfloat16"
    assert metadata["engine"].value["calibration"] == {}  # explicit: nothing calibrated
    assert metadata["engine_precision"].value == "bfloat16"


def test_a_calibrated_precision_reports_its_figures_in_the_metadata(settings):
    configured = settings.with_overrides(embedder=replace(settings.embedder, precision="calibrate"))
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(configured, DAYS[0], instance).success
        metadata = instance.get_latest_materialization_event(
            dg.AssetKey(["tops", "embeddings"])
        ).asset_materialization.metadata
    stats = metadata["engine"].value
    if not precision.cpu_has_bf16():  # nothing worth calibrating: fp32
        assert stats["calibration"] == {} and stats["precision"] == "fp32"
        return
    # The one CPU candidate is bf16; the demo embedder keeps cosine >= 0.9999 in it.
    assert set(stats["calibration"]) == {"bfloat16"}
    kept = stats["calibration"]["bfloat16"] >= 0.999
    assert stats["precision"] == ("bfloat16" if kept else "fp32")
    shown = metadata["engine_precision"].value  # what the UI shows at a glance
    score = stats["calibration"]["bfloat16"]
    assert shown == f"{stats['precision']} (calibrated against fp32: bfloat16 {score})"
