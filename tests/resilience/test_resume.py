"""Resumable GPU steps: an embedding step SIGKILLed mid-way is retried by Dagster and resumes from
its finished chunks; every item is embedded exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from image_search_assets.core.inference.stages import embed_items, vectors_of
from image_search_assets.core.layout import asset_value_key, work_prefix
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import DEFAULT_CONFIG, load_settings
from resources import ModelsResource, StorageResource
from tests.conftest import START, small_settings
from tests.resilience.helpers import run_day

ROOT = Path(__file__).resolve().parents[2]
DAY = START.isoformat()
ITEMS, CHUNK, BLOCK_AT_CALL = 9, 2, 2  # 5 chunks; killed while computing the third

pytestmark = pytest.mark.timeout(300)


def write_config(tmp_path: Path, catalog: Path) -> Path:
    """platform.yaml cut to one category, tiny CPU models, 2-item chunks and a fast retry."""
    small = small_settings(str(tmp_path / "storage"), str(catalog))
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(
        categories=[{"name": "tops", "gpus": 4}],
        partitions={"start_date": DAY, "timezone": small.timezone},
        storage_root=small.storage_root,
        catalog=small.catalog,
        models={
            "device": "cpu",
            "chunk_size": CHUNK,
            "detector": asdict(small.detector),
            "embedder": asdict(small.embedder),
        },
        retry={"first_delay_s": 0.05, "max_delay_s": 0.2, "max_retries": 3, "deadline_s": 300},
    )
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before blocking: {proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.1)
    return path.read_text()


def chunk_mtimes(store, prefix: str) -> dict[str, int]:
    keys = [k for k in store.list(prefix) if k.endswith(".parquet")]
    return {k: Path(store.uri(k)).stat().st_mtime_ns for k in keys}


@pytest.mark.e2e  # a real run process, killed and resumed
def test_sigkilled_embedding_step_is_retried_and_resumes_exactly_once(tmp_path):
    catalog = generate_catalog(
        tmp_path / "catalog",
        ("tops",),
        START,
        days=1,
        image_size=64,
        mix={"tops": ITEMS},
        include_bad=False,
    )
    config = write_config(tmp_path, catalog)
    settings = load_settings(config)
    store = StorageResource(root=settings.storage_root).open()
    upstream = [["new_products"], ["removals"], ["product_images"], ["tops", "detections"]]
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY, instance, upstream).success
    detections = store.read_parquet(asset_value_key(["tops", "detections"], DAY))
    assert len(detections) == ITEMS

    home, crash = tmp_path / "home", tmp_path / "crash"
    home.mkdir(), crash.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    env = {
        **os.environ,
        "IMAGE_SEARCH_CONFIG": str(config),
        "IMAGE_SEARCH_EXECUTOR": "multiprocess",  # each step in a process of its own
        "DAGSTER_HOME": str(home),
        "CRASH_DIR": str(crash),
        "BLOCK_AT_CALL": str(BLOCK_AT_CALL),
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "tests.resilience.crash_job", DAY, "tops/embeddings"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    step_pid = int(wait_for(crash / "blocked", run))
    prefix = work_prefix(DAY, "tops", "embeddings")
    finished = chunk_mtimes(store, prefix)
    assert sorted(finished) == [f"{prefix}/chunk-0000{i}.parquet" for i in range(BLOCK_AT_CALL)]
    os.kill(step_pid, signal.SIGKILL)
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output[-3000:]

    # Dagster saw the crash and retried the step in a new process.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = output.strip().splitlines()[-1]
        kinds = [e.dagster_event_type for e in instance.all_logs(run_id) if e.dagster_event]
        (materialization,) = [
            e.asset_materialization
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        ]
    assert kinds.count(dg.DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert kinds.count(dg.DagsterEventType.STEP_SUCCESS) == 1
    chunks = -(-ITEMS // CHUNK)
    assert materialization.metadata["chunks_reused"].value == BLOCK_AT_CALL
    assert materialization.metadata["chunks_computed"].value == chunks - BLOCK_AT_CALL

    # The model saw every item exactly once across both attempts; finished chunks were kept.
    calls = [json.loads(line) for line in (crash / "calls.jsonl").read_text().splitlines()]
    by_pid: dict[int, int] = {}
    for call in calls:
        by_pid[call["pid"]] = by_pid.get(call["pid"], 0) + call["items"]
    assert by_pid.pop(step_pid) == BLOCK_AT_CALL * CHUNK
    (retry_items,) = by_pid.values()
    assert retry_items == ITEMS - BLOCK_AT_CALL * CHUNK
    after = chunk_mtimes(store, prefix)
    assert len(after) == chunks and all(after[k] == t for k, t in finished.items())

    # The output has every item once, with the vectors an uninterrupted run computes.
    table = store.read_parquet(asset_value_key(["tops", "embeddings"], DAY))
    assert table["product_id"].tolist() == detections["product_id"].tolist()
    models = ModelsResource.from_settings(settings)
    reference = embed_items(
        detections,
        store,
        models.loaded_embedder(),
        input_size=models.embedder.input_size,
        batch_size=models.embedder.batch_size,
        work_prefix="reference",
        chunk_size=ITEMS,
        run_scope="reference",
    )
    np.testing.assert_allclose(vectors_of(table), vectors_of(reference.table), atol=1e-5)
