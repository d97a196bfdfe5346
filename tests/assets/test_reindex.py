"""A model rollout on a SQLite instance: fail fast, re-index (job, CLI), continue with one model,
on local and GCS (emulator) storage alike."""

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from image_search_assets import cli
from image_search_assets.assets.gpu_steps import model_params
from image_search_assets.assets.reindex import REINDEX_JOB, reindex_op_name
from image_search_assets.core import layout
from image_search_assets.core.index import live_set, reindex, retention
from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import LocalStorage
from image_search_assets.definitions import build_definitions
from image_search_assets.settings import DEFAULT_CONFIG, load_settings
from image_search_assets.tags import detector_class_ids, gpu_pool, random_detector_classes
from resources import ModelsResource, StorageResource
from tests.assets.test_lifecycle import run_day, served_ids, write_catalog
from tests.conftest import START

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
T = [f"p00-tops-00{i}" for i in range(5)]
H = ["p00-hats-000", "p00-hats-001"]
ROWS = [  # (product_id, category, image, added_at, removed_at)
    (T[0], "tops", T[0], "2026-11-01T10:00:00+09:00", ""),
    (T[1], "tops", T[1], "2026-11-01T10:00:00+09:00", "2026-11-03T09:00:00+09:00"),
    (H[0], "hats", H[0], "2026-11-01T10:00:00+09:00", ""),
    (T[2], "tops", T[2], "2026-11-02T10:00:00+09:00", ""),
    (T[0], "tops", T[4], "2026-11-02T11:00:00+09:00", ""),  # re-sent with a new image
    (T[3], "tops", T[3], "2026-11-03T10:00:00+09:00", ""),
    (H[1], "hats", H[1], "2026-11-03T10:00:00+09:00", ""),
]
LIVE = {  # what each day's index serves
    "tops": [{T[0], T[1]}, {T[0], T[1], T[2]}, {T[0], T[2], T[3]}],
    "hats": [{H[0]}, {H[0]}, {H[0], H[1]}],
}
OLD, NEW = "resnet18", "resnet34"


def write_rollout_catalog(tmp_path: Path) -> Path:
    mix = {"tops": 5, "pants": 0, "hats": 2}
    return write_catalog(tmp_path / "catalog", ROWS, mix, "rollout.csv")


def platform(
    tmp_path: Path, catalog: Path, root: str, embedder: str, detector_size: int = 160
) -> Path:
    """The shipped config, cut to three categories, tiny random models on the CPU."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["partitions"]["start_date"] = START.isoformat()
    config |= {"storage_root": root, "catalog": str(catalog)}
    if root.startswith("gs://"):  # the images stay local files: read them as the demo does
        config["gcp_project"] = "test"
        config.setdefault("fetch", {})["local_mode"] = True
    config["categories"] = [
        c for c in config["categories"] if c["name"] in ("tops", "pants", "hats")
    ]
    models = config["models"]
    models |= {"device": "cpu", "chunk_size": 1}
    models["detector"] |= {"weights": "random", "input_size": detector_size, "batch_size": 4}
    models["embedder"] = {"arch": embedder, "weights": "random", "input_size": 64}
    config["index"] |= {"n_trees": 4, "recall_sample": 20}
    path = tmp_path / f"platform-{embedder}-{detector_size}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def manifests(store, category: str) -> list[dict]:
    names = layout.version_names(store.list(layout.versions_prefix(category)), category)
    return [store.read_json(layout.manifest_key(category, v)) for v in sorted(names)]


def embedder_archs(manifest: dict) -> list[str]:
    return [json.loads(e)["arch"] for e in manifest["models"]["embedders"]]


def configured_models(settings) -> dict[str, list[str]]:
    """The `models` a manifest built with `settings`' models lists."""
    models = ModelsResource.from_settings(settings)
    detector = models.detector_replicas(len(settings.categories) + 1, 1).primary
    return {
        "embedders": [live_set.identity_json(models.embedder_identity())],
        "detectors": [live_set.identity_json(detector.identity)],
    }


def step_errors(result) -> dict[str, str]:
    return {
        e.step_key: e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    }


def interrupted_then_resumed(store, settings, category: str) -> None:
    """A re-index that dies mid-way commits nothing; the same scope resumes from its chunks."""
    target = reindex.plan(store, category)
    models = ModelsResource.from_settings(settings)
    detector = models.detector_replicas(random_detector_classes(settings), 1)
    inference = {
        "detector": detector,
        "embedder": models.embedder_replicas(1),
        "class_ids": detector_class_ids(settings.category(category), detector.primary.labels),
        "params": model_params(models),
        "chunk_size": 1,
    }
    options = {"metric": "angular", "n_trees": 4, "recall_sample": 20, "retention": 7}
    served = load_current(store, category).manifest["version"]
    live_key = asset_value_key([category, "annoy_index"], target.day)
    live_before = store.read_parquet(live_key)
    last = str(target.images["image_key"].iloc[-1])
    image = store.read_bytes(last)
    store.delete(last)  # the last chunk's image is unreadable: the run dies after the others
    # Local storage raises FileNotFoundError, GCS google's NotFound: both name the image.
    with pytest.raises(Exception, match=re.escape(last.rsplit("/", 1)[-1])):
        reindex.reindex(store, target, **inference, run_scope="s", index_options=options)
    assert load_current(store, category).manifest["version"] == served
    assert store.read_parquet(live_key).equals(live_before)
    store.write_bytes(last, image)
    done = reindex.reindex(store, target, **inference, run_scope="s", index_options=options)
    assert done.chunks_reused == len(target.images) - 1 and done.chunks_computed == 1 + len(
        target.images
    )
    assert done.manifest is not None
    assert done.manifest["models"] == configured_models(settings)


def rollout(tmp_path: Path, monkeypatch, capsys, root: str, role: str) -> dict:
    """Days 1-2 on the old models, day 3 refused at detections, re-index, day 3 again.
    Returns what each category serves and records, to compare storage backends."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    catalog = write_rollout_catalog(tmp_path)
    old = platform(tmp_path, catalog, root, OLD)
    new = platform(tmp_path, catalog, root, *((NEW, 160) if role == "embedder" else (OLD, 192)))
    names = (OLD, NEW) if role == "embedder" else ("160px", "192px")
    settings_old, settings_new = load_settings(old), load_settings(new)
    monkeypatch.setenv("IMAGE_SEARCH_CONFIG", str(new))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    cli.ensure_dagster_home(settings_new)
    store = StorageResource(root=root, gcp_project=settings_new.gcp_project).open()
    with dg.DagsterInstance.get() as instance:
        for day in DAYS[:2]:
            assert run_day(settings_old, day, instance).success, day
        day2 = {c: load_current(store, c).manifest["version"] for c in LIVE}

        # Day 3 on the new model fails at detections, before any GPU work, with no retry.
        failed = run_day(settings_new, DAYS[2], instance)
        assert not failed.success
        errors = step_errors(failed)
        started = {e.step_key for e in failed.all_events if e.event_type_value == "STEP_START"}
        for c in LIVE:
            message = errors[f"{c}__detections"]
            assert role in message and all(n in message for n in names), message
            assert f"image-search reindex --category {c}" in message
            assert f"{c}__embeddings" not in started and store.list(f"work/{DAYS[2]}/{c}/") == []
            assert load_current(store, c).manifest["version"] == day2[c]
            assert set(served_ids(store, c)) == LIVE[c][1]
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in failed.all_events)

        interrupted_then_resumed(store, settings_new, "tops")

        # The job (as the UI launches it) re-indexes tops up to day 2, the last live set.
        job = build_definitions(settings_new).resolve_job_def(REINDEX_JOB)
        result = job.execute_in_process(
            instance=instance, op_selection=[reindex_op_name("tops")], raise_on_error=False
        )
        assert result.success, step_errors(result)
        (event,) = result.get_asset_materialization_events()
        assert event.asset_key == dg.AssetKey(["tops", "annoy_index"])
        assert event.partition == DAYS[1]

    # The CLI re-indexes hats.
    assert cli.main(["reindex", "--category", "hats"]) == 0
    assert "hats: 1 items to 2026-11-02" in capsys.readouterr().out

    want = configured_models(settings_new)
    assert want != configured_models(settings_old)
    for c in LIVE:
        current = load_current(store, c)
        assert current.manifest["version"] != day2[c] and current.manifest["models"] == want
        assert sorted(current.ids) == sorted(LIVE[c][1])
        live = store.read_parquet(asset_value_key([c, "annoy_index"], DAYS[1]))
        assert set(live["embedder"]) == set(want["embedders"])
        assert set(live["detector"]) == set(want["detectors"])

    # Day 3 now builds on the re-indexed live set and serves it exactly, with one model.
    with dg.DagsterInstance.get() as instance:
        again = run_day(settings_new, DAYS[2], instance)
    assert again.success, step_errors(again)
    assert all(e.passed for e in again.get_asset_check_evaluations())
    outcome = {}
    for c in LIVE:
        ids = served_ids(store, c)
        assert len(ids) == len(set(ids)) and set(ids) == LIVE[c][2]
        for m in manifests(store, c):
            assert len(m["models"]["embedders"]) == len(m["models"]["detectors"]) == 1, m
        current = load_current(store, c).manifest
        assert current["models"] == want
        live = store.read_parquet(asset_value_key([c, "annoy_index"], DAYS[2]))
        outcome[c] = {
            "served": sorted(ids),
            "models": current["models"],
            "count": current["count"],
            "live": live.sort_values("product_id").to_dict("records"),
        }
    return outcome


@pytest.mark.e2e  # minutes: days, a rollout and a re-index on both storages
def test_an_embedder_rollout_gives_identical_results_on_local_and_gcs_storage(
    tmp_path, monkeypatch, capsys, request
):
    local = rollout(tmp_path / "local", monkeypatch, capsys, str(tmp_path / "storage"), "embedder")
    bucket = request.getfixturevalue("gcs_bucket")
    gcs = rollout(tmp_path / "gcs", monkeypatch, capsys, f"gs://{bucket}/p", "embedder")
    assert gcs == local


@pytest.mark.e2e  # minutes: days, a rollout and a re-index
def test_a_detector_only_rollout_reindexes_too(tmp_path, monkeypatch, capsys):
    rollout(tmp_path, monkeypatch, capsys, str(tmp_path / "storage"), "detector")


def test_each_category_reindexes_on_its_gpu_pool_with_the_daily_gpu_tags():
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def(REINDEX_JOB)
    graph = defs.resolve_asset_graph()
    for category in load_settings().categories:
        op = job.graph.node_named(reindex_op_name(category.name)).definition
        detections = graph.get(dg.AssetKey([category.name, "detections"])).assets_def
        daily = detections.op
        assert op.pool == daily.pool == gpu_pool(category)
        assert dict(op.tags) == dict(daily.tags)
    with pytest.raises(SystemExit, match="unknown category 'jewelry'"):
        cli.main(["reindex", "--category", "jewelry"])


def test_retention_keeps_a_snapshot_while_a_kept_live_set_names_it(tmp_path):
    store = LocalStorage(tmp_path)
    snapshot = reindex.snapshot_name("2026-11-02", '{"arch": "resnet34"}')
    vectors = pd.DataFrame({"product_id": ["a"], "vector": [np.ones(4, np.float32)]})
    store.write_parquet(asset_value_key(["tops", "embeddings"], snapshot), vectors)
    for day, source in [("2026-11-02", snapshot), ("2026-11-03", snapshot), ("2026-11-20", "x")]:
        live = pd.DataFrame({"product_id": ["a"], "day": [source], "added_on": ["2026-11-01"]})
        store.write_parquet(
            asset_value_key(["tops", "annoy_index"], day), live.assign(embedder="e")
        )
    key = asset_value_key(["tops", "embeddings"], snapshot)
    retention.prune_category(store, "tops", "2026-11-05", keep_days=2)  # 11-03 names it
    assert store.exists(key)
    pruned = retention.prune_category(store, "tops", "2026-11-20", keep_days=2)
    assert not store.exists(key) and pruned.embeddings == [snapshot]
