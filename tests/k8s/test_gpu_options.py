"""GPU options: the ComputeClasses and Kueue objects they generate, validated strictly, and a
single-type config that still renders exactly the step Jobs it rendered before options existed.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from crd_schemas import validate_custom
from single_type_render import KEPT, digest

from image_search_assets.core.planning.gpu_options import GpuOption, family
from image_search_assets.core.planning.gpu_plan import GPU_COUNTS
from image_search_assets.k8s import compute_classes as cc
from image_search_assets.k8s.job_config import (
    CLASS_TOLERATION,
    GPU_TOLERATION,
    without_compute_class,
)
from image_search_assets.settings import DEFAULT_CONFIG, ConfigError, load_settings, parse_settings
from image_search_assets.tags import gpu_pool

HERE = Path(__file__).parent
K8S_DIR = HERE.parents[1] / "k8s"
SETTINGS = load_settings()
SHIPPED = yaml.safe_load(DEFAULT_CONFIG.read_text())


def single_type_config() -> dict:
    """The shipped config as it was before GPU options: one GPU type for every category."""
    raw = copy.deepcopy(SHIPPED)
    raw.pop("default_gpu_options")
    raw["default_gpu_type"] = "nvidia-tesla-t4"
    return raw


def test_a_single_type_config_renders_the_jobs_it_rendered_before(tmp_path):
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(single_type_config()))
    env = {**os.environ, "IMAGE_SEARCH_CONFIG": str(path), "PYTHONPATH": os.getcwd()}
    script = [sys.executable, str(HERE / "single_type_render.py")]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300, check=True)
    rendered = json.loads(done.stdout)
    expected = json.loads((HERE / "single_type_jobs.json").read_text())
    for key in KEPT:  # whole Jobs first, so that a difference shows as a diff
        assert rendered[key] == expected["jobs"][key], key
    before = {key: digest(job) for key, job in rendered.items() if key in expected["sha256"]}
    assert before == expected["sha256"]
    # Steps added since the fixture was made are asset checks of the index: no GPU Job.
    added = set(rendered) - set(expected["sha256"])
    assert all("__annoy_index_" in key for key in added), sorted(added)


def test_a_single_type_config_keeps_its_pool_and_has_no_classes():
    settings = parse_settings(single_type_config())
    assert {gpu_pool(c) for c in settings.categories} == {"gpu-nvidia-tesla-t4"}
    assert all(not c.gpu_options for c in settings.categories)
    assert cc.compute_classes(settings) == []


def test_a_one_option_list_is_the_single_type_config():
    raw = single_type_config()
    raw.pop("default_gpu_type")
    raw["default_gpu_options"] = [{"type": "nvidia-tesla-t4"}]
    assert parse_settings(raw).categories == parse_settings(single_type_config()).categories


@pytest.mark.parametrize(
    "change, message",
    [
        ({"default_gpu_type": "nvidia-l4"}, "keep one"),
        ({"default_gpu_options": []}, "empty"),
        (
            {"default_gpu_options": [{"type": "nvidia-l4", "spot": True, "flex_start": True}]},
            "not both",
        ),
        ({"default_gpu_options": ["nvidia-l4", "nvidia-l4"]}, "twice"),
        ({"default_gpu_options": [{"type": "tesla-t4"}]}, "not a GKE accelerator"),
        ({"default_gpu_options": [{"type": "nvidia-l4", "zone": "a"}]}, "zone"),
        ({"default_gpu_options": [{"type": "nvidia-l4", "spot": "yes"}]}, "true or false"),
    ],
)
def test_bad_gpu_options_are_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings({**SHIPPED, **change})


def test_the_shipped_config_lists_options_with_t4_after_the_l4s():
    (options,) = cc.option_lists(SETTINGS)
    assert family(options) == "l4-spot.l4.t4.l4-flex"
    assert options[-1].flex_start and [o.type for o in options].index("nvidia-tesla-t4") == 2


def test_the_committed_manifests_are_what_the_generator_writes(tmp_path):
    written = cc.write(SETTINGS, tmp_path)
    for path, text in written.items():
        committed = K8S_DIR / path.relative_to(tmp_path)
        assert committed.read_text() == text, f"run python -m {cc.__name__} ({committed})"


def test_one_class_per_gpu_count_each_trying_the_options_in_order():
    classes = {c["metadata"]["name"]: c for c in cc.compute_classes(SETTINGS)}
    (options,) = cc.option_lists(SETTINGS)
    assert set(classes) == {cc.class_name(options, g) for g in GPU_COUNTS}
    for gpus in GPU_COUNTS:
        spec = classes[cc.class_name(options, gpus)]["spec"]
        rules = [(p["gpu"]["type"], p.get("spot"), "flexStart" in p) for p in spec["priorities"]]
        assert rules == [(o.type, None if o.flex_start else o.spot, o.flex_start) for o in options]
        assert {p["gpu"]["count"] for p in spec["priorities"]} == {gpus}
        assert spec["whenUnsatisfiable"] == "DoNotScaleUp"
        assert spec["activeMigration"] == {"optimizeRulePriority": False}


def generated() -> list[dict]:
    return [*cc.compute_classes(SETTINGS), *cc.kueue_objects(SETTINGS)]


@pytest.mark.parametrize("doc", generated(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_generated_object_validates_strictly(doc):
    validate_custom(doc)


def _planted(path: tuple, value) -> dict:
    doc = copy.deepcopy(cc.compute_classes(SETTINGS)[0])
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        _planted(("spec", "whenUnsatisfied"), "DoNotScaleUp"),  # misspelt field
        _planted(("spec", "priorities", 0, "gpu", "typ"), "nvidia-l4"),  # unknown field
        _planted(("spec", "priorities", 0, "spot"), "yes"),  # wrong type
        _planted(("spec", "whenUnsatisfiable"), "ScaleUp"),  # not an allowed value
        _planted(("spec", "priorities", 0, "gpu", "driverVersion"), "535"),
    ],
    ids=["misspelt", "unknown", "type", "enum", "driver"],
)
def test_the_schema_rejects_a_planted_wrong_field(doc):
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(doc)


def test_the_kueue_schema_rejects_the_deprecated_fungibility_spelling():
    queue = next(d for d in cc.kueue_objects(SETTINGS) if d["kind"] == "ClusterQueue")
    queue["spec"]["flavorFungibility"]["whenCanBorrow"] = "Borrow"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(queue)


def test_kueue_has_a_flavor_per_option_in_order_each_with_the_whole_budget():
    docs = cc.kueue_objects(SETTINGS)
    (options,) = cc.option_lists(SETTINGS)
    flavors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ResourceFlavor"}
    (queue,) = [d for d in docs if d["kind"] == "ClusterQueue"]
    groups = queue["spec"]["resourceGroups"]
    (gpu_group,) = [g for g in groups if "nvidia.com/gpu" in g["coveredResources"]]
    assert [f["name"] for f in gpu_group["flavors"]] == [cc.flavor_name(o) for o in options]
    budget = sum(c.gpus for c in SETTINGS.categories)
    assert all(f["resources"][0]["nominalQuota"] == budget for f in gpu_group["flavors"])
    spot = flavors["l4-spot"]["spec"]
    assert (
        spot["nodeLabels"][cc.SPOT_LABEL] == "true"
        and spot["tolerations"][0]["key"] == cc.SPOT_LABEL
    )
    assert queue["spec"]["flavorFungibility"] == {
        "whenCanBorrow": "TryNextFlavor",
        "whenCanPreempt": "TryNextFlavor",
    }


def test_under_kueue_a_pod_drops_its_class_and_keeps_the_gpu_toleration():
    spec = {
        "node_selector": {cc.COMPUTE_CLASS_LABEL: "gpu-x4-l4-spot.l4"},
        "tolerations": [dict(GPU_TOLERATION), dict(CLASS_TOLERATION)],
        "service_account_name": "dagster-step",
    }
    assert without_compute_class(spec) == {
        "node_selector": {},
        "tolerations": [GPU_TOLERATION],
        "service_account_name": "dagster-step",
    }


def test_quotas_cover_the_budget_per_option_with_spot_and_flex_on_the_preemptible_quota():
    assert cc.quotas(SETTINGS) == {
        "PREEMPTIBLE_NVIDIA_L4_GPUS": 17,
        "NVIDIA_L4_GPUS": 17,
        "NVIDIA_T4_GPUS": 17,
    }
    assert cc.quota_metric(GpuOption("nvidia-tesla-t4", spot=True)) == "PREEMPTIBLE_NVIDIA_T4_GPUS"
