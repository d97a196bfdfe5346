"""A run process SIGKILLed right after CURRENT moved: publish last means the day's live set is
stored by then, so the state is whole; the dead run is found, released, and a re-run of the
day replaces the version without losing or doubling an item."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import dagster as dg
import pytest
import yaml

from image_search_assets.automation.run_health import dead_runs, release_run
from image_search_assets.core.index.current import read_pointer
from image_search_assets.core.layout import asset_value_key
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import load_settings
from resources import StorageResource
from tests.conftest import START
from tests.resilience.helpers import run_day
from tests.resilience.test_resume import ROOT, write_config

DAY1, DAY2 = START.isoformat(), (START + timedelta(days=1)).isoformat()

# A real run process, killed: the end-to-end tier.
pytestmark = [pytest.mark.timeout(600), pytest.mark.e2e]

# The run process of day 2, killed by the kernel the moment CURRENT has moved for tops.
CHILD = """
import os, signal, sys
import dagster as dg
from image_search_assets.core.index import current
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.settings import load_settings

real = current.advance
def advance_then_die(storage, category, **kwargs):
    moved = real(storage, category, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no event: as a lost node
    return moved
current.advance = advance_then_die
job = build_definitions(load_settings()).resolve_job_def(DAILY_JOB)
with dg.DagsterInstance.get() as instance:
    job.execute_in_process(partition_key=sys.argv[1], instance=instance)
"""


def test_a_run_killed_right_after_current_moved_is_released_and_its_day_re_run(tmp_path):
    catalog = generate_catalog(
        tmp_path / "catalog",
        ("tops",),
        START,
        days=2,
        image_size=64,
        mix={"tops": 3},
        include_bad=False,
    )
    config = write_config(tmp_path, catalog)
    settings = load_settings(config)
    store = StorageResource(root=settings.storage_root).open()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_day(settings, DAY1, instance).success

    env = {
        **os.environ,
        "IMAGE_SEARCH_CONFIG": str(config),
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(ROOT),
    }
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), DAY2],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr[-3000:]

    # Killed after its final act: CURRENT serves day 2 and the live set it builds on is stored.
    pointer = read_pointer(store, "tops")
    assert pointer is not None and pointer.date == DAY2
    live = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAY2))
    assert len(live) == pointer.count == 6

    with dg.DagsterInstance.from_config(str(home)) as instance:
        ((run, reason),) = dead_runs(instance)  # what dead_run_sensor finds, a minute later
        assert run.status == dg.DagsterRunStatus.STARTED and "is gone" in reason
        release_run(instance, run.run_id, reason)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        again = run_day(settings, DAY2, instance)
    assert again.success
    replaced = read_pointer(store, "tops")
    assert replaced is not None and replaced.date == DAY2 and replaced.version != pointer.version
    rerun = store.read_parquet(asset_value_key(["tops", "annoy_index"], DAY2))
    assert sorted(rerun["product_id"]) == sorted(live["product_id"])  # nothing lost or doubled
