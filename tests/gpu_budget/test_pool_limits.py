"""The GPU pools' limits follow the config on an existing instance: through the CLI's start and
through the running-by-default sensor that `dagster dev` evaluates."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import yaml

from image_search_assets import cli
from image_search_assets.definitions import build_definitions
from image_search_assets.tags import gpu_pool
from tests.conftest import small_settings

# The one pool every category of the test config shares (named for its GPU option list).
POOL = gpu_pool(small_settings("storage", "catalog.csv").categories[0])


def with_gpus(settings, **gpus: int):
    categories = tuple(replace(c, gpus=gpus.get(c.name, c.gpus)) for c in settings.categories)
    return settings.with_overrides(categories=categories)


def slot_count(home) -> int:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.event_log_storage.get_concurrency_info(POOL).slot_count


def test_a_changed_gpus_reaches_an_existing_instance_on_the_next_cli_start(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    settings = small_settings(str(tmp_path / "storage"), str(tmp_path / "catalog.csv"))
    assert sum(c.gpus for c in settings.categories) == 7  # tops 4, pants 2, hats 1
    home = cli.ensure_dagster_home(settings)
    assert slot_count(home) == 7
    cli.ensure_dagster_home(with_gpus(settings, tops=2))
    assert slot_count(home) == 5


def test_the_sensor_sets_a_fresh_instances_limits_and_follows_a_change(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    # What `dagster dev` finds: the weighted storage, and no limit set yet.
    (home / "dagster.yaml").write_text(yaml.safe_dump(cli.instance_config(home)))
    settings = small_settings(str(tmp_path / "storage"), str(tmp_path / "catalog.csv"))
    assert slot_count(home) == 0
    for config, expected in ((settings, 7), (with_gpus(settings, pants=5), 10)):
        sensor = build_definitions(config).resolve_sensor_def("gpu_pool_limits")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        with dg.DagsterInstance.from_config(str(home)) as instance:
            result = sensor(dg.build_sensor_context(instance=instance))
        assert f"{POOL}={expected}" in str(result.skip_message)
        assert slot_count(home) == expected
