"""Each step's Kubernetes config, generated from the categories config (Dagster-free).

An asset's `op_tags` carry a `dagster-k8s/config` block that dagster-k8s merges into the step's
Job. A GPU step asks for the GPUs the run gives it (`nvidia.com/gpu` limit), tolerates the GPU
taint and gets CPU and memory in proportion to its GPUs: its op tags leave out all that the GPU
count decides, which the executor adds when it launches the step (`launch_config`). It lands
on GKE nodes with its category's accelerator (`gke-accelerator` node selector) or, for a
category with a list of GPU options, on the nodes of the ComputeClass for that list and GPU
count (`compute-class` node selector: GKE rejects a pod that sets both). CPU-only steps get
requests and no GPU.

Every step pod meets the Pod Security Standard "restricted" (docs/security.md): non-root,
no privilege escalation, no capabilities, the runtime's seccomp profile, a read-only root
filesystem, and no Kubernetes API token (a step decodes untrusted images; it never needs the
API). It runs as its own service account, which has no Role. The writable /tmp and HOME
emptyDirs and the deployment's env come from the run launcher's `runK8sConfig`
(k8s/helm/values.yaml), the base of every run and step pod. The image-fetching step's pod is
labelled so that its NetworkPolicy, alone among steps, lets it reach public image hosts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from image_search_assets.core.planning.gpu_options import family
from image_search_assets.k8s.compute_classes import (
    COMPUTE_CLASS_LABEL,
    GPU_RESOURCE,
    class_name_for_family,
)
from image_search_assets.settings import Category, Settings
from image_search_assets.tags import GPU_FAMILY_TAG, step_gpus

K8S_CONFIG_TAG = "dagster-k8s/config"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# The taint GKE puts on every GPU node; only pods that tolerate it are scheduled there.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The taint of a ComputeClass's nodes. Any class's: the node selector already pins the class,
# and one toleration serves every GPU count the day's plan may move a step to.
CLASS_TOLERATION = {"key": COMPUTE_CLASS_LABEL, "operator": "Exists", "effect": "NoSchedule"}
APP_UID = 1000  # the non-root user of k8s/Dockerfile
SHM_VOLUME = "dshm"
# Pods with this label may reach public image hosts (k8s/policy/network-policies.yaml); every
# other pod reaches Google APIs through their private range only.
EGRESS_LABEL = "image-search/egress"
IMAGE_HOSTS = "image-hosts"
# The Kubernetes service account of step pods (k8s/policy/rbac.yaml): no Role, no API token;
# Workload Identity maps it to the step's own Google service account.
STEP_SERVICE_ACCOUNT = "dagster-step"
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "run_as_non_root": True,
    "run_as_user": APP_UID,
    "run_as_group": APP_UID,
    "fs_group": APP_UID,
    "seccomp_profile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allow_privilege_escalation": False,
    "capabilities": {"drop": ["ALL"]},
    "read_only_root_filesystem": True,
    "run_as_non_root": True,
    "seccomp_profile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class StepSizing:
    """Requests of a CPU-only step, or of one GPU's share of a GPU step."""

    cpu_millis: int
    memory_gib: int
    ephemeral_gib: int
    shm_gib: int


# The default GPU node (k8s/gke-setup.sh) is an n1-standard-16 with 4 T4s: about 15.8 CPUs and
# 55 GiB allocatable, so four GPUs' worth (tops) must stay below that with room for daemonsets.
PER_GPU = StepSizing(cpu_millis=3500, memory_gib=12, ephemeral_gib=10, shm_gib=4)
CPU_STEP = StepSizing(cpu_millis=2000, memory_gib=8, ephemeral_gib=20, shm_gib=1)


def step_resources(gpus: int) -> dict[str, Any]:
    """Container resources of a step with `gpus` GPUs (0: a CPU-only step)."""
    size, n = (PER_GPU, gpus) if gpus else (CPU_STEP, 1)
    memory = f"{size.memory_gib * n}Gi"
    # Memory limit = request: a step that outgrows it is OOM-killed alone, not its neighbours.
    # No CPU limit: throttling a data loader only slows the GPUs down.
    resources: dict[str, Any] = {
        "requests": {
            "cpu": f"{size.cpu_millis * n}m",
            "memory": memory,
            "ephemeral-storage": f"{size.ephemeral_gib * n}Gi",
        },
        # An ephemeral-storage limit too: a step that fills /tmp is evicted, not the node.
        "limits": {"memory": memory, "ephemeral-storage": f"{size.ephemeral_gib * n}Gi"},
    }
    if gpus:
        resources["limits"][GPU_RESOURCE] = str(gpus)
    return resources


def _step_config(image_hosts: bool = False) -> dict[str, Any]:
    """What every step's pod has, whatever its size."""
    config: dict[str, Any] = {
        "container_config": {
            "volume_mounts": [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}],
            "security_context": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        },
        "pod_spec_config": {
            "security_context": copy.deepcopy(POD_SECURITY_CONTEXT),
            "service_account_name": STEP_SERVICE_ACCOUNT,
            "automount_service_account_token": False,
        },
    }
    if image_hosts:
        config["pod_template_spec_metadata"] = {"labels": {EGRESS_LABEL: IMAGE_HOSTS}}
    return config


def sized_config(gpus: int, gpu_family: str | None = None) -> dict[str, Any]:
    """What a step's GPU count decides: its resources, its /dev/shm and, for a category with
    GPU options, the ComputeClass of its option list (`gpu_family`) for that count."""
    size, n = (PER_GPU, gpus) if gpus else (CPU_STEP, 1)
    # PyTorch data loaders share batches through /dev/shm; the container default is 64 MiB.
    shm = {
        "name": SHM_VOLUME,
        "empty_dir": {"medium": "Memory", "size_limit": f"{size.shm_gib * n}Gi"},
    }
    pod_spec: dict[str, Any] = {"volumes": [shm]}
    if gpus and gpu_family:
        pod_spec["node_selector"] = {COMPUTE_CLASS_LABEL: class_name_for_family(gpu_family, gpus)}
    return {"container_config": {"resources": step_resources(gpus)}, "pod_spec_config": pod_spec}


def cpu_step_config(image_hosts: bool = False) -> dict[str, Any]:
    """The whole `dagster-k8s/config` of a CPU-only step: no GPU count to wait for."""
    config, sized = _step_config(image_hosts), sized_config(0)
    for part in ("container_config", "pod_spec_config"):
        config[part].update(sized[part])
    return config


def gpu_step_config(gpu_type: str | None = None, *, gpu_family: str | None = None) -> dict:
    """A GPU step's `dagster-k8s/config`, less what its GPU count decides (`sized_config`,
    added at launch): it tolerates the GPU taint and selects its accelerator, or with GPU
    options its ComputeClass's taint too (the class itself depends on the count)."""
    config = _step_config()
    pod_spec = config["pod_spec_config"]
    if gpu_family:
        pod_spec["tolerations"] = [dict(GPU_TOLERATION), dict(CLASS_TOLERATION)]
    elif gpu_type:
        pod_spec["node_selector"] = {ACCELERATOR_LABEL: gpu_type}
        pod_spec["tolerations"] = [dict(GPU_TOLERATION)]
    else:
        raise ValueError("a GPU step needs a gpu_type or a gpu_family")
    return config


def k8s_op_tags(
    settings: Settings | None,
    category: Category | None,
    *,
    gpu: bool,
    image_hosts: bool = False,
) -> dict[str, dict[str, Any]]:
    """Op tags for an asset: a GPU step of `category` gets a GPU node, any other step none.

    With `models.device: cpu` (a cluster without GPUs) no step asks for a GPU. CPU-only steps
    need neither settings nor category: `k8s_op_tags(None, None, gpu=False)`.
    """
    if gpu and (settings is None or category is None):
        raise ValueError("a GPU step needs the settings and its category")
    if not gpu or settings is None or category is None or settings.device == "cpu":
        return {K8S_CONFIG_TAG: cpu_step_config(image_hosts)}
    if category.gpu_options:
        return {K8S_CONFIG_TAG: gpu_step_config(gpu_family=family(category.gpu_options))}
    return {K8S_CONFIG_TAG: gpu_step_config(category.gpu_type)}


def launch_config(run_tags: Mapping[str, str], step_tags: Mapping[str, str]) -> dict | None:
    """The k8s config the executor adds to this step's own op tags at launch, or None.

    A GPU step's GPU count is known only here (tags.step_gpus: the run's GPU plan, else the
    category's): its op tags leave out everything that count decides, and this adds it
    (`sized_config`), so the pod's GPU limit, the pool's claim and the asset's replicas read
    one number. A step whose op tags carry no k8s config (an asset check's step) gets a CPU
    step's whole config, so no pod leaves the platform without its security context and
    limits. A CPU step's op tags are already whole.
    """
    if K8S_CONFIG_TAG not in step_tags:
        return cpu_step_config()
    own = json.loads(step_tags[K8S_CONFIG_TAG])
    if "resources" in own.get("container_config", {}):
        return None
    gpus = step_gpus(run_tags, step_tags)
    if gpus < 1:
        raise ValueError(f"the GPU plan gives a GPU step {gpus} GPUs")
    return sized_config(gpus, step_tags.get(GPU_FAMILY_TAG))


def without_compute_class(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A pod spec config for Kueue: its ResourceFlavor sets the GPU node selector at admission
    (`gke-accelerator`, `gke-spot`), which GKE refuses beside a ComputeClass selector."""
    spec = copy.deepcopy(dict(pod_spec))
    selector = {k: v for k, v in spec.get("node_selector", {}).items() if k != COMPUTE_CLASS_LABEL}
    spec["node_selector"] = selector
    spec["tolerations"] = [t for t in spec.get("tolerations", []) if t != CLASS_TOLERATION]
    return spec
