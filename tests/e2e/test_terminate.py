"""Operator actions on real processes: terminate through the GraphQL API is a stop (CANCELED, no
retry, nothing published) and re-execution completes; a SIGTERM'd step process (preemption) is
retried; two `dagster asset materialize` of one day at once publish once; and a fresh
DAGSTER_HOME under `dagster dev` gets its GPU budget from the sensor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.storage import open_storage
from image_search_assets.definitions import DAILY_JOB
from image_search_assets.settings import load_settings
from tests.e2e.harness import (
    CATEGORIES,
    GPU_BUDGET,
    GPU_POOL,
    LOCATION,
    REPO,
    REPOSITORY,
    DagsterDev,
    days_from,
    platform_env,
    today_in_zone,
    wait_for,
    write_instance,
    write_platform,
)

pytestmark = pytest.mark.e2e
LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""
TERMINATE = """
mutation($id: String!) {
  terminateRun(runId: $id) { __typename ... on PythonError { message } }
}"""
REEXECUTE = """
mutation($id: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $id, strategy: FROM_FAILURE}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}"""


def parked_workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace.yaml"
    module = {"module_name": "tests.e2e.parked_defs", "location_name": LOCATION}
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": module}]}))
    return path


def launch(dagster: DagsterDev, day: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": DAILY_JOB,
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    launched = dagster.graphql(LAUNCH, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def parked_pid(park: Path) -> int:
    """Parks the next detector call and waits for its process to get there."""
    (park / "park").touch()
    return int(
        wait_for(
            lambda: (park / "pid").exists() and (park / "pid").read_text(),
            400,
            "a detection step to park",
        )
    )


def unpark(park: Path) -> None:
    for name in ("pid", "parked"):
        (park / name).unlink(missing_ok=True)


def event_types(home: Path, run_id: str) -> list[tuple[str, str | None]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [
            (e.dagster_event_type.value, e.step_key)
            for e in instance.all_logs(run_id)
            if e.dagster_event_type
        ]


def served(store) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for category in CATEGORIES:
        try:
            out[category] = annoy.load_current(store, category).manifest["date"]
        except FileNotFoundError:
            out[category] = None
    return out


def test_terminate_stops_reexecution_completes_and_preemption_is_retried(tmp_path):
    start = today_in_zone() - timedelta(days=4)
    day1, day2 = days_from(start, 2)
    config = write_platform(tmp_path, start, days=2)
    home, park = write_instance(tmp_path / "home"), tmp_path / "park"
    park.mkdir()
    # As `dagster dev` finds a fresh DAGSTER_HOME: the weighted storage, no GPU budget.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(GPU_POOL, 0)
    store = open_storage(load_settings(config).storage_root)
    dev = DagsterDev(home, config, {"PARK_DIR": str(park)}, parked_workspace(tmp_path))
    with dev as dagster, dg.DagsterInstance.from_config(str(home)) as instance:
        slots = instance.event_log_storage
        wait_for(
            lambda: slots.get_concurrency_info(GPU_POOL).slot_count == GPU_BUDGET,
            180,
            "the gpu_pool_limits sensor to set the budget",
        )

        # 1. Terminate a run parked in tops' detection: a stop, not a retry.
        run_id = launch(dagster, day1)
        parked_pid(park)
        assert dagster.graphql(TERMINATE, id=run_id)["terminateRun"]["__typename"] == (
            "TerminateRunSuccess"
        )
        assert dagster.wait_run(run_id) == "CANCELED"
        unpark(park)
        kinds = event_types(home, run_id)
        assert not [k for k in kinds if k[0] == "STEP_UP_FOR_RETRY"], kinds
        assert not [k for k in kinds if k[0] == "STEP_START" and "annoy_index" in str(k[1])]
        assert served(store) == dict.fromkeys(CATEGORIES)

        # 2. Re-execution from failure completes, publishes and frees the GPU slots.
        rerun = dagster.graphql(REEXECUTE, id=run_id)["launchRunReexecution"]
        assert rerun["__typename"] == "LaunchRunSuccess", rerun
        assert dagster.wait_run(rerun["run"]["runId"]) == "SUCCESS"
        assert served(store) == dict.fromkeys(CATEGORIES, day1)
        wait_for(
            lambda: not slots.get_concurrency_info(GPU_POOL).claimed_slots,
            120,
            "the GPU slots to be free",
        )

        # 3. SIGTERM to the step's process, the run not terminated: a preemption, retried.
        run_id = launch(dagster, day2)
        os.kill(parked_pid(park), signal.SIGTERM)
        assert dagster.wait_run(run_id) == "SUCCESS"
        unpark(park)
        retries = [k for k in event_types(home, run_id) if k[0] == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 1 and retries[0][1].endswith("__detections")
        assert served(store) == dict.fromkeys(CATEGORIES, day2)


def test_two_cli_runs_of_one_day_at_once_publish_once(tmp_path):
    start = today_in_zone() - timedelta(days=3)
    (day,) = days_from(start, 1)
    config = write_platform(tmp_path, start, days=1)
    home, park = write_instance(tmp_path / "home"), tmp_path / "park"
    park.mkdir()
    (park / "park").touch()  # whichever run gets to detection first waits there
    env = platform_env(config, DAGSTER_HOME=str(home), PARK_DIR=str(park))
    argv = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "tests.e2e.parked_defs",
        "--select",
        "*",
        "--partition",
        day,
    ]
    procs = [
        subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        first_done = wait_for(
            lambda: next((p for p in procs if p.poll() is not None), None), 400, "a run to end"
        )
        wait_for(lambda: (park / "pid").exists(), 400, "the other run to park in detection")
        unpark(park)
        outputs = {p.pid: p.communicate(timeout=400)[0] for p in procs}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    loser = first_done
    (winner,) = (p for p in procs if p is not loser)
    assert winner.returncode == 0, outputs[winner.pid][-3000:]
    assert loser.returncode != 0
    assert "Another run is publishing" in outputs[loser.pid], outputs[loser.pid][-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (won,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    assert f"run {won.run_id} of {day}" in outputs[loser.pid]
    store = open_storage(load_settings(config).storage_root)
    for category in CATEGORIES:
        assert len({k.split("/")[3] for k in store.list(f"indexes/{category}/versions")}) == 1
