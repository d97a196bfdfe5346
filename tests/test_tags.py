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
from image_search_assets.k8s.compute_classes import COMPUTE_CLASS_LABEL
from image_search_assets.k8s.job_config import K8S_CONFIG_TAG, planned_step_override
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG, GPUS_TAG, gpu_pool, step_gpus

PLAN = {"tops": 2, "bags": 3}


def _pod_gpus(run_tags, step_tags) -> int:
    """The GPU limit of the step's pod: its own k8s config, with the run's override applied."""
    config = json.loads(step_tags[K8S_CONFIG_TAG])
    override = planned_step_override(run_tags, step_tags)
    resources = (override or config)["container_config"]["resources"]
    return int(resources["limits"].get("nvidia.com/gpu", 0))


def _class_gpus(run_tags, step_tags) -> int:
    """The GPU count of the ComputeClass the step's pod selects, override applied."""
    config = json.loads(step_tags[K8S_CONFIG_TAG])
    override = planned_step_override(run_tags, step_tags) or {}
    selector = {
        **config["pod_spec_config"]["node_selector"],
        **override.get("pod_spec_config", {}).get("node_selector", {}),
    }
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
