"""The persistent local Dagster instance the CLI runs on, and the commands that act on it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from image_search_assets.settings import Settings, load_settings

DEFAULT_DAGSTER_HOME = "var/dagster_home"
# The console shows warnings (quarantine, random weights); the full log is in the instance.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _storage(settings: Settings):
    from resources import StorageResource

    return StorageResource(root=settings.storage_root, gcp_project=settings.gcp_project).open()


def ensure_dagster_home(settings: Settings) -> Path:
    """A persistent DAGSTER_HOME (var/dagster_home unless set) that `dagster dev` can reuse.

    Its instance uses the weighted GPU pools, with each GPU type's budget set from the config
    on every call (the gpu_pool_limits sensor keeps it so under `dagster dev`).
    """
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(instance_config(home)))
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from image_search_assets.gpu_budget import apply_pool_limits, gpu_pool_limits

    with dg.DagsterInstance.get() as instance:
        # Every start, not only the first: a changed `gpus` reaches the existing instance.
        apply_pool_limits(instance, gpu_pool_limits(settings))
    return home


def instance_config(home: Path) -> dict:
    """A local instance: SQLite with weighted GPU pools and run monitoring freeing their slots."""
    return {
        "telemetry": {"enabled": False},
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(home / "history" / "runs")},
        },
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 60},
    }


def cmd_release_run(args: argparse.Namespace) -> int:
    ensure_dagster_home(load_settings())
    import dagster as dg

    from image_search_assets.automation.run_health import release_run

    with dg.DagsterInstance.get() as instance:
        print(release_run(instance, args.run_id, args.reason))
    return 0
