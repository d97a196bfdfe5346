"""One reader of the day's GPU plan: the asset, the pod's GPU limit and the pool claim agree.

The three callers are exercised on a real SQLite instance holding real runs of the daily job;
only the asset's execution context is a stand-in, because `planned_gpus` reads nothing of it
but the run's tags. The shipped config lists GPU options, so the pod also selects the
ComputeClass of its planned GPU count, and the pool is the option list's.
"""

import json
import re
from types import SimpleNamespace

import dagster as dg
import pytest

from image_search_assets.assets.gpu_steps import planned_gpus
from image_search_assets.definitions import DAILY_JOB, defs
from image_search_assets.k8s.compute_classes import COMPUTE_CLASS_LABEL, GPU_RESOURCE
from image_search_assets.k8s.job_config import K8S_CONFIG_TAG, launch_config
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG, GPUS_TAG, gpu_pool, step_gpus

PLAN = {"tops": 2, "bags": 3}


def _launched(run_tags, step_tags) -> dict:
    """The step's k8s config as its pod gets it: its op tags' with the launch's added."""
    config = json.loads(step_tags[K8S_CONFIG_TAG])
    added = launch_config(run_tags, step_tags) or {}
    for part, values in added.items():
        config[part] = {**config.get(part, {}), **values}
    return config


def _pod_gpus(run_tags, step_tags) -> int:
    """The GPU limit of the step's pod."""
    resources = _launched(run_tags, step_tags)["container_config"]["resources"]
    return int(resources["limits"].get(GPU_RESOURCE, 0))


def _class_gpus(run_tags, step_tags) -> int:
    """The GPU count of the ComputeClass the step's pod selects."""
    selector = _launched(run_tags, step_tags)["pod_spec_config"]["node_selector"]
    return int(re.fullmatch(r"gpu-x(\d+)-.+", selector[COMPUTE_CLASS_LABEL]).group(1))


@pytest.mark.parametrize("plan", [PLAN, None], ids=["planned", "unplanned"])
def test_asset_pod_and_pool_read_the_same_gpu_count(tmp_path, plan):
    overrides = {
        "event_log_storage": {
            "module": "image_search_assets.gpu_budget",
            "class": "WeightedSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path)},
        }
    }
    job = defs.resolve_job_def(DAILY_JOB)
    tags = {GPU_PLAN_TAG: json.dumps(plan)} if plan else {}
    settings = load_settings()
    with dg.instance_for_test(overrides=overrides) as instance:
        run = instance.create_run_for_job(job, tags=tags)
        snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        gpu_steps = {
            s.key: dict(s.tags or {}) for s in snapshot.steps if GPUS_TAG in (s.tags or {})
        }
        pools = {s.key: s.pool for s in snapshot.steps}
        assert len(gpu_steps) == 2 * len(settings.categories)
        for category in settings.categories:
            expected = (plan or {}).get(category.name, category.gpus)
            asset = planned_gpus(SimpleNamespace(run=run), category)  # type: ignore[arg-type]
            for stage in ("detections", "embeddings"):
                step_tags = gpu_steps[f"{category.name}__{stage}"]
                pool = instance.event_log_storage.gpu_need(run.run_id, f"{category.name}__{stage}")
                pod = _pod_gpus(run.tags, step_tags)
                assert (asset, pod, pool) == (expected,) * 3, (category.name, stage)
                assert step_gpus(run.tags, step_tags) == expected
                assert _class_gpus(run.tags, step_tags) == expected, (category.name, stage)
                assert pools[f"{category.name}__{stage}"] == gpu_pool(category)
    assert {gpu_pool(c) for c in settings.categories} == {"gpu-l4-spot.l4.t4.l4-flex"}


def test_a_step_without_gpu_tags_claims_one_slot():
    assert step_gpus({GPU_PLAN_TAG: json.dumps(PLAN)}, {}) == 1


def test_a_gpu_steps_size_is_decided_at_launch_only():
    """A GPU step's op tags carry no GPU count of their own (no resources, no class for a
    count): the launch adds them from step_gpus, so nothing baked at definition time is
    patched. A CPU step's op tags are whole; the launch adds nothing."""
    for stage in ("detections", "embeddings"):
        step_tags = defs.resolve_assets_def(dg.AssetKey(["tops", stage])).op.tags
        config = json.loads(step_tags[K8S_CONFIG_TAG])
        assert "resources" not in config["container_config"]
        assert "node_selector" not in config["pod_spec_config"]
        assert _pod_gpus({}, step_tags) == 4 and _class_gpus({}, step_tags) == 4
        assert _pod_gpus({GPU_PLAN_TAG: json.dumps({"tops": 1})}, step_tags) == 1
    index = defs.resolve_assets_def(dg.AssetKey(["tops", "annoy_index"])).op.tags
    assert "resources" in json.loads(index[K8S_CONFIG_TAG])["container_config"]
    assert launch_config({GPU_PLAN_TAG: json.dumps({"tops": 2})}, index) is None
