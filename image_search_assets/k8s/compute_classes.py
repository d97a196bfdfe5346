"""GKE ComputeClasses and the Kueue objects for the categories' GPU options (Dagster-free).

A category with an ordered list of GPU options (core/planning/gpu_options.py) asks GKE for
"the first of these it can get" through a custom ComputeClass: `spec.priorities` is the list,
one rule per option, and GKE moves to the next rule at once when a rule's VMs cannot be had
(a stock-out or a quota). A rule fixes the GPU count of its nodes, so there is one class per
option list and GPU count the day's plan may give a step (gpu_plan.GPU_COUNTS).

`python -m image_search_assets.k8s.compute_classes` writes k8s/gpu/compute-classes.yaml,
k8s/gpu/quotas.tsv (what k8s/gke-setup.sh checks) and k8s/kueue/queues.yaml from platform.yaml.
tests/k8s/test_gpu_options.py checks that the committed files are what it writes, and
validates them against the strict schemas of tests/k8s/crd_schemas.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from image_search_assets.core.planning.gpu_options import GpuOption, family
from image_search_assets.core.planning.gpu_plan import GPU_COUNTS
from image_search_assets.settings import Category, Settings, load_settings

COMPUTE_CLASS_API = "cloud.google.com/v1"
COMPUTE_CLASS_LABEL = "cloud.google.com/compute-class"
KUEUE_API = "kueue.x-k8s.io/v1beta1"
GPU_RESOURCE = "nvidia.com/gpu"
OPTIONS_ANNOTATION = "image-search/gpu-options"
NAMESPACE = "dagster"
QUEUE = "image-search"
# A flex-start node lives at most this long (GKE allows up to 7 days); a step takes hours.
FLEX_MAX_RUN_S = 86_400
# The VM that carries n GPUs of a type: GPU machines come in fixed shapes (G2 for L4; N1 with
# attached T4s). Each leaves room for n x job_config.PER_GPU (3.5 CPUs, 12 GiB) + daemonsets.
MACHINES = {
    "nvidia-tesla-t4": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-16"},
    "nvidia-l4": {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48"},
}
# The labels GKE puts on a node of each kind, which a Kueue ResourceFlavor selects.
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
SPOT_LABEL = "cloud.google.com/gke-spot"
FLEX_START_LABEL = "cloud.google.com/gke-flex-start"
# Kueue's current spelling (the old Borrow/Preempt values are deprecated).
NEXT_FLAVOR = "TryNextFlavor"


def class_name(options: Sequence[GpuOption], gpus: int) -> str:
    """gpu-x4-l4-spot.l4.t4.l4-flex: a label value, so at most 63 characters."""
    name = class_name_for_family(family(options), gpus)
    if len(name) > 63:
        raise ValueError(f"ComputeClass name {name!r} is over 63 characters: list fewer options")
    return name


def class_name_for_family(name: str, gpus: int) -> str:
    """The class of the option list named `name` (gpu_options.family) with `gpus` GPUs."""
    return f"gpu-x{gpus}-{name}"


def machine_type(option: GpuOption, gpus: int) -> str:
    try:
        return MACHINES[option.type][gpus]
    except KeyError:
        raise ValueError(
            f"no machine shape for {gpus} x {option.type}: known {sorted(MACHINES)} with 1, 2 "
            "or 4 GPUs (image_search_assets/k8s/compute_classes.py MACHINES)"
        ) from None


def priority(option: GpuOption, gpus: int) -> dict[str, Any]:
    """One rule of a class: the option's GPU, its machine, and how the VM is bought."""
    rule: dict[str, Any] = {
        "machineType": machine_type(option, gpus),
        "gpu": {"type": option.type, "count": gpus, "driverVersion": "default"},
    }
    if option.flex_start:
        rule["flexStart"] = {"enabled": True}
        rule["maxRunDurationSeconds"] = FLEX_MAX_RUN_S
    else:
        rule["spot"] = option.spot
    return rule


def compute_class(options: Sequence[GpuOption], gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": COMPUTE_CLASS_API,
        "kind": "ComputeClass",
        "metadata": {
            "name": class_name(options, gpus),
            "annotations": {OPTIONS_ANNOTATION: ", ".join(o.describe() for o in options)},
        },
        "spec": {
            "priorities": [priority(o, gpus) for o in options],
            # GKE creates the node pools each rule needs (GKE 1.33.3-gke.1136000 or later).
            "nodePoolAutoCreation": {"enabled": True},
            # Never move a running step to a better rule: it would lose the work since its last
            # chunk. The next step gets the better rule anyway.
            "activeMigration": {"optimizeRulePriority": False},
            # Set, because its default changed with GKE 1.33. ScaleUpAnyway would add a node
            # with no GPU, where a GPU step can never run.
            "whenUnsatisfiable": "DoNotScaleUp",
        },
    }


def option_lists(settings: Settings) -> list[tuple[GpuOption, ...]]:
    """The distinct option lists of the categories that have one, in config order."""
    return list(dict.fromkeys(c.gpu_options for c in settings.categories if c.gpu_options))


def class_counts(settings: Settings, options: tuple[GpuOption, ...]) -> list[int]:
    """Every GPU count a step of these options may ask for: the plan's and the config's."""
    hand_set = {c.gpus for c in settings.categories if c.gpu_options == options}
    return sorted(set(GPU_COUNTS) | hand_set)


def compute_classes(settings: Settings) -> list[dict[str, Any]]:
    return [
        compute_class(options, gpus)
        for options in option_lists(settings)
        for gpus in class_counts(settings, options)
    ]


def flavor_name(option: GpuOption) -> str:
    return option.slug.replace(".", "-")


def resource_flavor(option: GpuOption) -> dict[str, Any]:
    labels = {ACCELERATOR_LABEL: option.type}
    spec: dict[str, Any] = {"nodeLabels": labels}
    if option.spot:
        labels[SPOT_LABEL] = "true"
        # Spot nodes that GKE creates are tainted; Kueue adds this to the pods it admits here.
        spec["tolerations"] = [
            {"key": SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ]
    if option.flex_start:
        labels[FLEX_START_LABEL] = "true"
    return {
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": flavor_name(option)},
        "spec": spec,
    }


def gpu_options_of(categories: Sequence[Category]) -> list[GpuOption]:
    """Every option of every category, in the first order they appear in."""
    return list(
        dict.fromkeys(o for c in categories for o in (c.gpu_options or (GpuOption(c.gpu_type),)))
    )


def kueue_objects(settings: Settings) -> list[dict[str, Any]]:
    """ResourceFlavors (one per GPU option, plus `cpu`), the ClusterQueue and its LocalQueue.

    Each GPU flavor's quota is the whole GPU budget: Kueue tries the flavors in order and takes
    the next one when a flavor's quota is used up (flavorFungibility), charging each Job its
    real `nvidia.com/gpu` request. It falls back on quota, not on stock: waitForPodsReady
    (kueue-manager-config.yaml) evicts and requeues a Job whose pod no node took.
    """
    budget = sum(c.gpus for c in settings.categories)
    options = gpu_options_of(settings.categories)
    cpu = [
        {"name": "cpu", "nominalQuota": 120},
        {"name": "memory", "nominalQuota": "480Gi"},
        {"name": "ephemeral-storage", "nominalQuota": "1Ti"},
    ]
    queue = {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": QUEUE},
        "spec": {
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "flavorFungibility": {
                "whenCanBorrow": "TryNextFlavor",
                "whenCanPreempt": "TryNextFlavor",
            },
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "ephemeral-storage"],
                    "flavors": [{"name": "cpu", "resources": cpu}],
                },
                {
                    "coveredResources": [GPU_RESOURCE],
                    "flavors": [
                        {
                            "name": flavor_name(o),
                            "resources": [{"name": GPU_RESOURCE, "nominalQuota": budget}],
                        }
                        for o in options
                    ],
                },
            ],
        },
    }
    local = {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": QUEUE, "namespace": NAMESPACE},
        "spec": {"clusterQueue": QUEUE},
    }
    cpu_flavor = {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": "cpu"}}
    return [cpu_flavor, *(resource_flavor(o) for o in options), queue, local]


def quota_metric(option: GpuOption) -> str:
    """The regional Compute Engine quota an option's GPUs count against; spot and flex-start
    VMs both use the preemptible one."""
    metric = option.type.removeprefix("nvidia-").removeprefix("tesla-").upper().replace("-", "_")
    prefix = "PREEMPTIBLE_" if option.spot or option.flex_start else ""
    return f"{prefix}NVIDIA_{metric}_GPUS"


def quotas(settings: Settings) -> dict[str, int]:
    """{quota metric: GPUs needed}: any one option may have to carry the whole day's budget."""
    budget = sum(c.gpus for c in settings.categories)
    return {quota_metric(o): budget for o in gpu_options_of(settings.categories)}


HEADER = (
    "# Generated from image_search_assets/platform.yaml by\n"
    "#   python -m image_search_assets.k8s.compute_classes\n"
    "# Do not edit: change the GPU options in platform.yaml and run it again.\n"
)


def render(docs: Sequence[dict[str, Any]], note: str) -> str:
    body = yaml.safe_dump_all(docs, sort_keys=False, width=100)
    return HEADER + note + body


def write(settings: Settings, k8s_dir: Path) -> dict[Path, str]:
    """{path: text} of the generated manifests, written under `k8s_dir`."""
    files = {
        k8s_dir / "gpu" / "compute-classes.yaml": render(
            compute_classes(settings),
            "# One ComputeClass per GPU option list and GPU count; step pods select one with\n"
            f"# the node selector {COMPUTE_CLASS_LABEL} (k8s/README.md).\n",
        ),
        k8s_dir / "kueue" / "queues.yaml": render(
            kueue_objects(settings),
            "# Optional cluster-side GPU budget with Kueue instead of the Dagster pool\n"
            "# (k8s/README.md, docs/gpu-budget.md): one ResourceFlavor per GPU option.\n",
        ),
        k8s_dir / "gpu" / "quotas.tsv": "".join(f"{m}\t{n}\n" for m, n in quotas(settings).items()),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--k8s-dir", type=Path, default=Path(__file__).parents[2] / "k8s")
    args = parser.parse_args(argv)
    for path in write(load_settings(), args.k8s_dir):
        print(path)


if __name__ == "__main__":
    main()
