"""Runs whose process is SIGKILLed, with the real daemon and no action from the test after the
kill: the run ends FAILURE, its GPU slots are freed, and the chain launches the day again.

Two launchers: the UI's (dagster dev's code server notices its child died and marks the run
failed) and the CLI's `dagster asset materialize` (nothing notices: dead_run_sensor does).
"""

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from image_search_assets.automation.chain import CHAIN_ACTION_TAG
from image_search_assets.automation.run_health import run_process
from image_search_assets.automation.schedules import CRON_ENV, SCHEDULE_NAME
from tests.e2e.harness import (
    GPU_POOL,
    LOCATION,
    REPO,
    REPOSITORY,
    DagsterDev,
    platform_env,
    today_in_zone,
    wait_for,
    write_instance,
    write_platform,
)

pytestmark = pytest.mark.e2e

START = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) { __typename }
}"""
SELECTOR = {
    "repositoryLocationName": LOCATION,
    "repositoryName": REPOSITORY,
    "scheduleName": SCHEDULE_NAME,
}


def slots_held_by(instance: dg.DagsterInstance, run_id: str) -> int:
    info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
    return sum(1 for slot in info.claimed_slots if slot.run_id == run_id)


def runs_of(instance: dg.DagsterInstance, day: str) -> list[dg.DagsterRun]:
    """Runs of `day`, oldest first."""
    return list(reversed(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": day}))))


def kill_once_it_holds_gpu_slots(instance: dg.DagsterInstance, run_id: str) -> int:
    """SIGKILLs the run's process mid-way through a GPU step; returns its pid."""
    wait_for(lambda: slots_held_by(instance, run_id), 300, "the run to hold GPU slots", 0.2)
    pid, _ = wait_for(lambda: run_process(instance, run_id), 30, "the run's process id", 0.2)
    os.kill(pid, signal.SIGKILL)
    return pid


def relaunched_and_succeeded(dagster: DagsterDev, inst, day: str, dead: str) -> dg.DagsterRun:
    """Waits for the chain's next run of `day` after `dead` and for it to succeed."""

    def relaunch() -> dg.DagsterRun | None:
        later = [r for r in runs_of(inst, day) if r.run_id != dead]
        return later[-1] if later else None

    run = wait_for(relaunch, 240, "the chain to launch the day again", every=2)
    assert run.tags[CHAIN_ACTION_TAG] == "launch"
    assert dagster.wait_run(run.run_id, timeout=300) == "SUCCESS"
    return run


def test_a_sigkilled_ui_run_frees_its_slots_and_the_chain_relaunches_the_day(tmp_path):
    day = str(today_in_zone() - timedelta(days=1))
    config = write_platform(tmp_path, today_in_zone() - timedelta(days=1), days=1)
    home = write_instance(tmp_path / "home")
    env = {CRON_ENV: "* * * * *"}
    with (
        DagsterDev(home, config, env) as dagster,
        dg.DagsterInstance.from_config(str(home)) as inst,
    ):
        dagster.graphql(START, selector=SELECTOR)
        first = wait_for(lambda: runs_of(inst, day), 150, "the chain to launch the day")[0]
        kill_once_it_holds_gpu_slots(inst, first.run_id)

        assert dagster.wait_run(first.run_id, timeout=120) == "FAILURE"
        wait_for(lambda: slots_held_by(inst, first.run_id) == 0, 180, "its GPU slots", every=2)
        relaunched_and_succeeded(dagster, inst, day, first.run_id)


def test_a_sigkilled_cli_run_is_marked_failed_and_the_chain_relaunches_the_day(tmp_path):
    day = str(today_in_zone() - timedelta(days=1))
    config = write_platform(tmp_path, today_in_zone() - timedelta(days=1), days=1)
    home = write_instance(tmp_path / "home")
    env = {CRON_ENV: "* * * * *"}
    with (
        DagsterDev(home, config, env) as dagster,
        dg.DagsterInstance.from_config(str(home)) as inst,
    ):
        # An operator's run from a shell, before the chain's first tick.
        dagster_cli = str(Path(sys.executable).parent / "dagster")
        argv = [dagster_cli, "asset", "materialize", "-m", "image_search_assets.definitions"]
        argv += ["--select", "*", "--partition", day]
        cli = subprocess.Popen(
            argv,
            cwd=REPO,
            env=platform_env(config, DAGSTER_HOME=str(home)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            run = wait_for(lambda: runs_of(inst, day), 120, "the CLI's run")[0]
            pid = kill_once_it_holds_gpu_slots(inst, run.run_id)
        finally:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
        assert inst.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        dagster.graphql(START, selector=SELECTOR)

        assert dagster.wait_run(run.run_id, timeout=180) == "FAILURE"
        assert slots_held_by(inst, run.run_id) == 0
        failure = inst.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert f"its process (pid {pid}) is gone" in (failure.dagster_event.message or "")
        relaunched_and_succeeded(dagster, inst, day, run.run_id)
