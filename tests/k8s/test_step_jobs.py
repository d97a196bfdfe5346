"""Every asset's step Job, rendered by the k8s executor's own step handler from the real `defs`.

The handler (PendingAwareK8sStepHandler, a dagster-k8s K8sStepHandler) merges each step's
`dagster-k8s/config` op tags and calls `construct_dagster_k8s_job`; a fake BatchV1Api keeps
the V1Job it would have created. Each is checked against the categories config and validated
against the Kubernetes schemas in strict mode.
"""

import json

import pytest
from dagster._core.test_utils import instance_for_test
from k8s_fakes import write_kubeconfig
from k8s_harness import StepJobs, k8s_launcher_config
from k8s_schemas import as_manifest, validate_strict

from image_search_assets.k8s.compute_classes import (
    COMPUTE_CLASS_LABEL,
    GPU_RESOURCE,
    SPOT_LABEL,
    class_name,
)
from image_search_assets.k8s.job_config import (
    ACCELERATOR_LABEL,
    APP_UID,
    CLASS_TOLERATION,
    GPU_TOLERATION,
    PER_GPU,
)
from image_search_assets.k8s.step_handler import KUEUE_QUEUE_LABEL
from image_search_assets.settings import load_settings
from image_search_assets.tags import GPU_PLAN_TAG

SETTINGS = load_settings()
GPU_STAGES = ("detections", "embeddings")
GPUS_PER_NODE = 4  # the largest GPU node of the classes: n1-standard-16 / g2-standard-48


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{step key: Job manifest} for all 41 assets of the daily job."""
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")

    with instance_for_test(overrides={"run_launcher": k8s_launcher_config(kubeconfig)}) as inst:
        jobs = StepJobs(inst, kubeconfig)
        yield {key: as_manifest(jobs.launch(key)) for key in jobs.step_keys}


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def container(job: dict) -> dict:
    (only,) = pod_spec(job)["containers"]
    return only


def test_every_asset_of_defs_has_a_step_job(rendered):
    expected = {"new_products", "product_images"} | {
        f"{c.name}__{stage}" for c in SETTINGS.categories for stage in (*GPU_STAGES, "annoy_index")
    }
    assets = {key for key in rendered if key in expected}
    assert assets == expected and len(assets) == 41
    # The rest are the asset checks' steps: they run as Jobs too, and never ask for a GPU.
    checks = set(rendered) - expected
    assert checks and all(key.split("__")[1].startswith("annoy_index_") for key in checks)
    for key in checks:
        assert GPU_RESOURCE not in container(rendered[key]).get("resources", {}).get("limits", {})


@pytest.mark.parametrize("category", SETTINGS.categories, ids=lambda c: c.name)
@pytest.mark.parametrize("stage", GPU_STAGES)
def test_gpu_steps_match_the_categories_config(rendered, category, stage):
    job = rendered[f"{category.name}__{stage}"]
    resources = container(job)["resources"]
    assert resources["limits"][GPU_RESOURCE] == str(category.gpus)
    assert GPU_RESOURCE not in resources["requests"]  # Kubernetes copies the limit
    # The shipped config lists GPU options: the pod selects their class for its GPU count and
    # nothing GKE refuses beside a class (gke-accelerator, gke-spot).
    assert category.gpu_options
    selector = {COMPUTE_CLASS_LABEL: class_name(category.gpu_options, category.gpus)}
    assert pod_spec(job)["nodeSelector"] == selector
    assert not {ACCELERATOR_LABEL, SPOT_LABEL} & set(pod_spec(job)["nodeSelector"])
    for toleration in (GPU_TOLERATION, CLASS_TOLERATION):
        assert toleration in pod_spec(job)["tolerations"]
    # CPU and memory scale with the GPUs, and a 4-GPU step still fits one GPU node.
    assert resources["requests"]["cpu"] == f"{PER_GPU.cpu_millis * category.gpus}m"
    assert resources["requests"]["memory"] == f"{PER_GPU.memory_gib * category.gpus}Gi"
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    assert "ephemeral-storage" in resources["requests"]
    assert category.gpus <= GPUS_PER_NODE


@pytest.mark.parametrize("step", ["new_products", "product_images", "tops__annoy_index"])
def test_cpu_only_steps_get_requests_and_no_gpu(rendered, step):
    job = rendered[step]
    resources = container(job)["resources"]
    assert GPU_RESOURCE not in {**resources["requests"], **resources.get("limits", {})}
    assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["requests"])
    assert "nodeSelector" not in pod_spec(job)
    assert "tolerations" not in pod_spec(job)


def test_gpu_budget_is_the_sum_of_category_gpus(rendered):
    detections = [rendered[f"{c.name}__detections"] for c in SETTINGS.categories]
    total = sum(int(container(j)["resources"]["limits"][GPU_RESOURCE]) for j in detections)
    assert total == sum(c.gpus for c in SETTINGS.categories) == 17
    assert container(rendered["tops__detections"])["resources"]["limits"][GPU_RESOURCE] == "4"
    assert container(rendered["pants__detections"])["resources"]["limits"][GPU_RESOURCE] == "2"


@pytest.mark.parametrize("step", ["new_products", "tops__detections", "hats__annoy_index"])
def test_every_step_has_shm_non_root_and_one_try_per_job(rendered, step):
    job = rendered[step]
    (shm,) = [v for v in pod_spec(job)["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(job)["volumeMounts"]
    pod_security = pod_spec(job)["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == APP_UID
    assert container(job)["securityContext"]["allowPrivilegeEscalation"] is False
    # Each retry must be a new Job: a Job that retried its own pod would dodge the timeout.
    assert job["spec"]["backoffLimit"] == 0
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_every_step_job_passes_strict_schema_validation(rendered):
    for key, job in rendered.items():
        assert job["kind"] == "Job", key
        validate_strict(job)


def test_a_retry_is_a_new_job_name(step_jobs):
    first = step_jobs.launch("tops__detections")
    retry = step_jobs.launch("tops__detections", attempts=2)
    assert retry.metadata.name == f"{first.metadata.name}-2"


def test_the_runs_gpu_plan_sets_the_pods_gpus(k8s_instance, kubeconfig):
    jobs = StepJobs(k8s_instance, kubeconfig, run_tags={GPU_PLAN_TAG: json.dumps({"tops": 2})})
    tops = as_manifest(jobs.launch("tops__detections"))
    assert container(tops)["resources"]["limits"][GPU_RESOURCE] == "2"
    assert container(tops)["resources"]["requests"]["memory"] == f"{2 * PER_GPU.memory_gib}Gi"
    assert [v["name"] for v in pod_spec(tops)["volumes"]].count("dshm") == 1
    validate_strict(tops)
    # A 2-GPU step moves to the 2-GPU class: a 4-GPU node's class would waste two GPUs.
    tops_class = class_name(SETTINGS.category("tops").gpu_options, 2)
    assert pod_spec(tops)["nodeSelector"] == {COMPUTE_CLASS_LABEL: tops_class}
    assert pod_spec(tops)["tolerations"].count(CLASS_TOLERATION) == 1
    pants = as_manifest(jobs.launch("pants__detections"))
    assert container(pants)["resources"]["limits"][GPU_RESOURCE] == "2"  # its own config


def test_step_jobs_join_the_kueue_queue_when_configured(k8s_instance, kubeconfig):
    jobs = StepJobs(k8s_instance, kubeconfig, kueue_queue_name="image-search")
    job = as_manifest(jobs.launch("hats__detections"))
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "image-search"
    # Kueue's ResourceFlavor sets the GPU selector at admission: the pod carries no class.
    assert COMPUTE_CLASS_LABEL not in pod_spec(job).get("nodeSelector", {})
    assert pod_spec(job)["tolerations"] == [GPU_TOLERATION]
    assert container(job)["resources"]["limits"][GPU_RESOURCE] == "1"
    validate_strict(job)
