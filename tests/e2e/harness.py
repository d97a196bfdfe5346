"""Real Dagster processes for end-to-end tests: a small config, `dagster dev`, GraphQL.

Every process starts in its own process group and is stopped through that group by PID, so a
run worker it spawned cannot outlive the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import requests
import yaml

from image_search_assets.demo.synthetic import generate_catalog

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "e2e"
CATEGORIES = ("tops", "pants", "hats")
MIX = {"tops": 3, "pants": 2, "hats": 1}
TIMEZONE = "Asia/Tokyo"
# Every run goes through weighted GPU admission; tops 4 + pants 2 + hats 1 never wait for it.
GPU_POOL, GPU_BUDGET = "gpu-nvidia-tesla-t4", 7
LOCATION = "image_search"
REPOSITORY = "__repository__"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def today_in_zone() -> date:
    """Today in the platform's zone: partitions exist up to the day before it."""
    return datetime.now(ZoneInfo(TIMEZONE)).date()


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 1.0) -> T:
    """Polls `probe` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def write_platform(root: Path, start: date, days: int, **extra: Any) -> Path:
    """A three-category catalog of `days` days from `start` and the config that reads it;
    `extra` adds or replaces top-level sections. Every day is ready at midnight, so that
    yesterday is due whatever the hour the test runs."""
    catalog = generate_catalog(
        root / "catalog", CATEGORIES, start, days=days, image_size=48, mix=MIX, timezone=TIMEZONE
    )
    config = {
        "partitions": {"start_date": start.isoformat(), "timezone": TIMEZONE, "ready_at": "00:00"},
        "storage_root": str(root / "storage"),
        "catalog": str(catalog),
        "categories": [{"name": "tops", "gpus": 4}, {"name": "pants", "gpus": 2}, {"name": "hats"}],
        "models": {
            "device": "cpu",
            "detector": {
                "arch": "fasterrcnn_mobilenet_v3_large_320_fpn",
                "weights": "random",
                "input_size": 160,
                "batch_size": 4,
            },
            "embedder": {"arch": "resnet18", "weights": "random", "input_size": 64},
        },
        "index": {"n_trees": 8, "recall_sample": 50},
        **extra,
    }
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_instance(home: Path) -> Path:
    """The demo's SQLite DAGSTER_HOME (weighted GPU pools, run monitoring) with queued runs
    dequeued every second and a generous code-server start; its GPU pool holds GPU_BUDGET."""
    import dagster as dg

    from image_search_assets.cli import instance_config

    home.mkdir(parents=True, exist_ok=True)
    config = {
        **instance_config(home),
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        # Two shared CPU cores importing torch: the default start timeout is too tight.
        "code_servers": {"local_startup_timeout": 300},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(GPU_POOL, GPU_BUDGET)
    return home


def group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group, read from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


class Service:
    """One command in its own session (process group), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the leader, then SIGKILL to whatever is left of its group."""
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        if self.proc.poll() is None:
            # The leader alone: `dagster dev` then shuts its children down in order (seconds),
            # where SIGTERM to all of them at once leaves it waiting on dead pipes (30 s).
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        # Children (code server, run workers) may outlive the leader: kill what is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()
        wait_for(lambda: not group_alive(pgid), 30, f"{self.name}'s process group to exit")


def run_command(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """Runs a command to completion in its own process group; the group dies on a timeout."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing it started may outlive it
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def platform_env(config: Path, **extra: str) -> dict[str, str]:
    """This environment without IMAGE_SEARCH_* overrides, pointed at `config` and this tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_SEARCH_")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, "IMAGE_SEARCH_CONFIG": str(config), "PYTHONPATH": pythonpath, **extra}


class DagsterDev:
    """`dagster dev` (webserver + daemon + one shared code server) on 127.0.0.1."""

    def __init__(
        self,
        home: Path,
        config: Path,
        extra_env: dict[str, str] | None = None,
        workspace: Path = REPO / "workspace.yaml",
    ) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = platform_env(config, DAGSTER_HOME=str(home), **(extra_env or {}))
        argv = [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1"]
        argv += ["-p", str(self.port), "-w", str(workspace)]
        self.service = Service("dagster-dev", argv, env, home.parent / "process-logs")

    def __enter__(self) -> DagsterDev:
        try:
            wait_for(self._location_loaded, 300, "the code location to load in the webserver")
            wait_for(self._daemons_healthy, 180, "the daemon's heartbeats")
        except BaseException:
            print(self.service.log_tail())
            self.service.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            print(self.service.log_tail())
        self.service.stop()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def _location_loaded(self) -> bool:
        if self.service.proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited:\n{self.service.log_tail()}")
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
            )
        except requests.RequestException:
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise RuntimeError(f"code location failed to load: {loaded['message']}")
        return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)

    def _daemons_healthy(self) -> bool:
        data = self.graphql(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        )
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        wanted = {"SCHEDULER", "BACKFILL", "QUEUED_RUN_COORDINATOR"}
        return wanted <= {s["daemonType"] for s in statuses if s["healthy"]}

    def run_status(self, run_id: str) -> str:
        query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
        return self.graphql(query, id=run_id)["runOrError"]["status"]

    def wait_run(self, run_id: str, timeout: float = 300) -> str:
        done = {"SUCCESS", "FAILURE", "CANCELED"}
        status = wait_for(
            lambda: (s := self.run_status(run_id)) in done and s, timeout, f"run {run_id}"
        )
        return status


def days_from(start: date, n: int) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range(n)]
