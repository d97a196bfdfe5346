"""Weighted GPU admission on real Dagster instances (SQLite; Postgres when available)."""

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest
import yaml

from image_search_assets.settings import load_settings
from image_search_assets.tags import GPUS_TAG, gpu_pool
from tests.gpu_budget.jobs import STREAM_STEPS, gpu_steps

# The pool the steps of gpu_steps are in: the shipped GPU option list's.
POOL = gpu_pool(load_settings().category("tops"))
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def wait_for(probe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def write_home(home: Path, storage: dict) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, **storage}))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 4)
    return home


def sqlite_storage(home: Path) -> dict:
    return {
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(home / "history")},
        }
    }


def postgres_storage(url: str) -> dict:
    db = {"postgres_url": url}
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": db,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": db,
        },
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedPostgresEventLogStorage",
            "config": db,
        },
    }


@pytest.fixture
def sqlite_home(tmp_path) -> Path:
    return write_home(tmp_path / "home", sqlite_storage(tmp_path / "home"))


@pytest.fixture
def sqlite_instance(sqlite_home):
    with dg.DagsterInstance.from_config(str(sqlite_home)) as instance:
        yield instance


def gpu_intervals(instance, run_ids):
    """(start, end, gpus, step) of every step, from the recorded STEP_START/STEP_SUCCESS."""
    needs = {c.name: c.gpus for c in load_settings().categories}
    spans = defaultdict(dict)
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
                spans[(run_id, event.step_key)][event.event_type_value] = record.timestamp
    return sorted(
        (s["STEP_START"], s["STEP_SUCCESS"], needs[step.split("__")[0]], step)
        for (_, step), s in spans.items()
    )


def peak_gpus(intervals) -> int:
    edges = sorted(
        [(s, g) for s, _, g, _ in intervals] + [(e, -g) for _, e, g, _ in intervals],
        key=lambda x: (x[0], x[1]),
    )  # at equal times, ends before starts
    peak = level = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


def run(instance):
    return dg.execute_job(dg.reconstructable(gpu_steps), instance=instance)


def test_budget_of_four_runs_tops_alone_then_pants_with_one_gpu_steps(sqlite_instance):
    result = run(sqlite_instance)
    assert result.success
    intervals = gpu_intervals(sqlite_instance, [result.run_id])
    assert len(intervals) == 13
    assert peak_gpus(intervals) <= 4
    tops = next(i for i in intervals if i[3].startswith("tops"))
    pants = next(i for i in intervals if i[3].startswith("pants"))
    overlapping_tops = [i for i in intervals if i is not tops and i[0] < tops[1] and tops[0] < i[1]]
    assert overlapping_tops == []  # tops holds all 4 GPUs: it runs alone
    assert tops[0] == min(i[0] for i in intervals)  # and, being biggest, first
    with_pants = [i for i in intervals if i is not pants and i[0] < pants[1] and pants[0] < i[1]]
    assert with_pants and all(i[2] == 1 for i in with_pants)  # pants shares with 1-GPU steps
    assert peak_gpus(intervals) == 4  # and the budget is used, not left idle
    # Every slot is back once the run is over.
    info = sqlite_instance.event_log_storage.get_concurrency_info(POOL)
    assert info.slot_count == 4 and info.active_slot_count == 0


@pytest.mark.e2e  # 13 real step processes; the budget test above keeps the job in the fast tier
def test_waiting_consumes_no_retry_and_says_why(sqlite_instance):
    result = run(sqlite_instance)
    assert result.success
    events = [r.dagster_event for r in sqlite_instance.all_logs(result.run_id) if r.dagster_event]
    assert not [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    waits = [
        e.message
        for e in events
        if e.event_type_value == "ENGINE_EVENT" and "waiting: needs" in (e.message or "")
    ]
    assert any("needs 2 GPU(s)" in w and "of 4 free" in w for w in waits)


def start_run(home: Path, job: str = "gpu_steps") -> tuple[subprocess.Popen, Path]:
    """A separate run process, as production run workers are."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    log = home / f"{job}-{len(list(home.glob('*.log')))}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gpu_budget.run_job", job],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    return proc, log


def finish(started: tuple[subprocess.Popen, Path]) -> str:
    """Waits for a run process; its run id."""
    proc, log = started
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, log.read_text()[-3000:]
    return out.strip().splitlines()[-1]


def run_concurrently(home: Path, runs: int = 2) -> list[str]:
    return [finish(p) for p in [start_run(home) for _ in range(runs)]]


@pytest.mark.e2e  # real run processes side by side
def test_budget_holds_across_two_concurrent_runs_on_sqlite(sqlite_home):
    run_ids = run_concurrently(sqlite_home)
    with dg.DagsterInstance.from_config(str(sqlite_home)) as instance:
        intervals = gpu_intervals(instance, run_ids)
    assert len(intervals) == 26 and peak_gpus(intervals) <= 4


def test_budget_holds_across_two_concurrent_runs_on_postgres(tmp_path, postgres_url):
    home = write_home(tmp_path / "pg_home", postgres_storage(postgres_url))
    run_ids = run_concurrently(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "WeightedPostgresEventLogStorage"
        intervals = gpu_intervals(instance, run_ids)
        info = instance.event_log_storage.get_concurrency_info(POOL)
    assert len(intervals) == 26 and peak_gpus(intervals) <= 4
    assert info.slot_count == 4 and info.active_slot_count == 0


@pytest.mark.e2e  # real run processes side by side
def test_a_four_gpu_step_is_not_starved_by_a_stream_of_one_gpu_steps(sqlite_home):
    # Run A: 8 one-GPU steps of 10 s on a budget of 4, so 4 run and 4 wait. Run B, a separate
    # process, then asks for 4 GPUs. Greedy admission would hand every freed GPU to A's waiting
    # steps and B would wait for all 8; the reservation makes A's waiters leave them to B.
    stream = start_run(sqlite_home, "one_gpu_stream")
    with dg.DagsterInstance.from_config(str(sqlite_home)) as instance:
        storage = instance.event_log_storage
        wait_for(lambda: storage.get_concurrency_info(POOL).active_slot_count == 4, 120)
        big = start_run(sqlite_home, "one_four_gpu_step")
        run_ids = [finish(stream), finish(big)]
        intervals = gpu_intervals(instance, run_ids)
    assert len(intervals) == STREAM_STEPS + 1 and peak_gpus(intervals) <= 4
    tops = next(i for i in intervals if i[2] == 4)
    ones = [i for i in intervals if i[2] == 1]
    first_wave = [i for i in ones if i[0] < tops[0]]
    assert len(first_wave) == 4  # only the steps already running when it arrived
    assert all(i[0] >= tops[1] for i in ones if i not in first_wave)  # the rest waited for it


def test_gpu_tags_carry_the_weights():
    job = gpu_steps
    tops = job.graph.node_named("tops__detections")
    assert tops.definition.tags[GPUS_TAG] == "4" and tops.definition.pool == POOL
