"""Wall time of the embedded demo's daily run (13 categories, sample catalog) on this machine.

Runs day 1 (cold: model load included) and day 2 (the steady daily run) through the real daily
job on a temporary SQLite instance, and prints per-stage step seconds from the event log and
the ratio of the day-2 wall time to the 60 s target.

    python benchmarks/demo_daily_run.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import dagster as dg
import torch

from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import ModelConfig, load_settings

TARGET_S = 60.0


def describe(model: ModelConfig) -> str:
    return f"{model.arch} @ {model.input_size}px ({model.weights} weights)"


def stage_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    starts, totals = {}, defaultdict(float)
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            stage = event.step_key.split("__")[-1]
            totals[stage] += record.timestamp - starts[event.step_key]
    return {k: round(v, 2) for k, v in sorted(totals.items())}


def timed_run(job, day: str, instance) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=day,
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    wall = time.perf_counter() - started
    assert result.success, f"{day} failed"
    return wall, stage_seconds(instance, result.run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = load_settings()
    start = date.fromisoformat(base.start_date)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = generate_catalog(Path(tmp) / "catalog", base.category_names, start, days=2)
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "home")
        Path(os.environ["DAGSTER_HOME"]).mkdir()
        (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").write_text(
            "telemetry: {enabled: false}"
        )
        settings = base.with_overrides(storage_root=str(Path(tmp) / "s"), catalog=str(catalog))
        job = build_definitions(settings).resolve_job_def(DAILY_JOB)
        with dg.DagsterInstance.get() as instance:
            cold, cold_stages = timed_run(job, start.isoformat(), instance)
            day2 = start.replace(day=start.day + 1).isoformat()
            warm, warm_stages = timed_run(job, day2, instance)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    result = {
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, {gpu}",
        "torch": torch.__version__,
        "detector": describe(base.detector),
        "embedder": describe(base.embedder),
        "categories": len(base.categories),
        "day1_cold_wall_s": round(cold, 2),
        "day2_wall_s": round(warm, 2),
        "day2_vs_target": round(warm / TARGET_S, 3),
        "day1_stage_step_seconds": cold_stages,
        "day2_stage_step_seconds": warm_stages,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
