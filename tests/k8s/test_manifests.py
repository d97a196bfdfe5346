"""Every Kubernetes manifest under k8s/: strict schema validation, and the Kueue objects'
agreement with the categories config, the GKE script and the platform retry policy.

Helm values are chart input, not Kubernetes objects, so k8s/helm/ is checked elsewhere
(test_deploy_config.py). GKE's ComputeClass and Kueue's kinds are CRDs that kubernetes-validate
has no schema for; they are validated against crd_schemas.py, as strictly.
"""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from crd_schemas import is_custom, validate_custom
from k8s_schemas import validate_strict

from image_search_assets.core.planning.retry import BackoffPolicy
from image_search_assets.k8s.compute_classes import GPU_RESOURCE, gpu_options_of
from image_search_assets.k8s.executor import DEFAULT_SCHEDULING_TIMEOUT_S
from image_search_assets.k8s.job_config import ACCELERATOR_LABEL, step_resources
from image_search_assets.settings import load_settings

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
HELM_VALUES = K8S_DIR / "helm"
KUEUE_API = "kueue.x-k8s.io/v1beta1"
SETTINGS = load_settings()


def manifest_files() -> list[Path]:
    files = sorted(p for p in K8S_DIR.rglob("*.y*ml") if HELM_VALUES not in p.parents)
    assert files, f"no manifests under {K8S_DIR}"
    return files


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[dict]:
    return [d for p in manifest_files() for d in documents(p)]


def kueue(kind: str) -> list[dict]:
    return [d for d in all_documents() if d["apiVersion"] == KUEUE_API and d["kind"] == kind]


def script_default(name: str) -> str:
    text = (K8S_DIR / "gke-setup.sh").read_text()
    return re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"', text, re.M).group(1)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_every_manifest_passes_strict_schema_validation(path):
    for doc in documents(path):
        if is_custom(doc):
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate_strict(doc)  # a CRD: kubernetes-validate has no schema for it
            validate_custom(doc)
        else:
            validate_strict(doc)


def test_strict_validation_rejects_an_unknown_field():
    # Guards the guard: strict mode must fail on a typo, or the test above proves nothing.
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(bad)


def test_kueue_has_one_gpu_flavor_per_option_each_quota_the_gpu_budget():
    gpu_flavors = {
        f["metadata"]["name"]: f["spec"]["nodeLabels"]
        for f in kueue("ResourceFlavor")
        if ACCELERATOR_LABEL in f.get("spec", {}).get("nodeLabels", {})
    }
    options = gpu_options_of(SETTINGS.categories)
    assert [labels[ACCELERATOR_LABEL] for labels in gpu_flavors.values()] == [
        o.type for o in options
    ]
    (queue,) = kueue("ClusterQueue")
    (gpu_group,) = [
        g for g in queue["spec"]["resourceGroups"] if GPU_RESOURCE in g["coveredResources"]
    ]
    quotas = {
        f["name"]: r["nominalQuota"]
        for f in gpu_group["flavors"]
        for r in f["resources"]
        if r["name"] == GPU_RESOURCE
    }
    assert list(quotas) == list(gpu_flavors)  # tried in the options' order
    assert set(quotas.values()) == {sum(c.gpus for c in SETTINGS.categories)} == {17}
    assert queue["spec"]["flavorFungibility"]["whenCanBorrow"] == "TryNextFlavor"


def test_kueue_covers_every_resource_a_step_requests():
    (queue,) = kueue("ClusterQueue")
    covered = {r for g in queue["spec"]["resourceGroups"] for r in g["coveredResources"]}
    requested = set(step_resources(4)["requests"]) | set(step_resources(4)["limits"])
    assert requested - {"memory"} <= covered and "memory" in covered
    flavors = {f["metadata"]["name"] for f in kueue("ResourceFlavor")}
    used = {f["name"] for g in queue["spec"]["resourceGroups"] for f in g["flavors"]}
    assert used == flavors
    (local,) = kueue("LocalQueue")
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]
    assert local["metadata"]["namespace"] == script_default("NAMESPACE")


def test_kueue_requeues_unready_pods_with_the_platform_backoff():
    (config_map,) = [
        d for d in all_documents() if d["kind"] == "ConfigMap" and "kueue" in d["metadata"]["name"]
    ]
    config = yaml.safe_load(config_map["data"]["controller_manager_config.yaml"])
    assert config["kind"] == "Configuration" and "batch/job" in config["integrations"]["frameworks"]
    assert config["manageJobsWithoutQueueName"] is False  # only step Jobs that ask for it
    ready = config["waitForPodsReady"]
    assert ready["enable"] is True
    policy = BackoffPolicy()
    requeue = ready["requeuingStrategy"]
    assert requeue["backoffBaseSeconds"] == policy.first_delay_s
    assert requeue["backoffMaxSeconds"] == policy.max_delay_s
    assert requeue["backoffLimitCount"] == policy.max_retries
    minutes = int(ready["timeout"].removesuffix("m"))
    assert minutes * 60 < DEFAULT_SCHEDULING_TIMEOUT_S  # Kueue requeues before the executor
