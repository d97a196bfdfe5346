"""Tags generated from the categories config: what each asset asks of the cluster."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from image_search_assets.core.planning.gpu_options import family
from image_search_assets.settings import Category, ConfigError, Settings

PRIORITY_TAG = "dagster/priority"
GPUS_TAG = "image_search/gpus"
GPU_TYPE_TAG = "image_search/gpu_type"  # with GPU options: the most preferred option's type
GPU_FAMILY_TAG = "image_search/gpu_options"  # the option list's name (gpu_options.family)
CATEGORY_TAG = "image_search/category"
# Run tag holding the day's GPU plan as JSON {category: gpus}; it overrides GPUS_TAG.
GPU_PLAN_TAG = "image_search/gpu_plan"
GPU_POOL_PREFIX = "gpu-"


def gpu_request(category: Category) -> str:
    """What a category's GPU steps ask for: its GPU type, or its option list's name (the
    ComputeClasses of k8s/compute_classes.py are named for it)."""
    return family(category.gpu_options) if category.gpu_options else category.gpu_type


def gpu_pool(category: Category) -> str:
    """The weighted pool of what the category's steps ask for; its limit is their GPU budget.

    `gpu-nvidia-tesla-t4` for a single type, `gpu-l4-spot.l4.t4.l4-flex` for an option list:
    every category with the same list shares one budget, whichever GPU a step lands on.
    """
    return f"{GPU_POOL_PREFIX}{gpu_request(category)}"


def gpu_tags(category: Category) -> dict[str, str]:
    # Bigger steps first (Dagster's step priority): the longest work starts earliest, as in the
    # reference case's schedule, and a 4-GPU step queues ahead of 1-GPU ones.
    tags = {
        GPUS_TAG: str(category.gpus),
        GPU_TYPE_TAG: category.gpu_type,
        CATEGORY_TAG: category.name,
        PRIORITY_TAG: str(category.gpus),
    }
    if category.gpu_options:  # the executor picks the class of the planned GPU count by it
        tags[GPU_FAMILY_TAG] = family(category.gpu_options)
    return tags


def step_gpus(run_tags: Mapping[str, str], step_tags: Mapping[str, str]) -> int:
    """GPUs a step gets in a run: the run's GPU plan for its category, else its GPU tag, else 1.

    The only reader of the plan. The weighted pool claims this many slots, the pod's GPU limit
    asks Kubernetes for this many, and the asset sizes its replicas by it: if any of the three
    read the plan differently, the pool's budget and the cluster's would drift apart.
    """
    plan = json.loads(run_tags.get(GPU_PLAN_TAG) or "{}")
    category = step_tags.get(CATEGORY_TAG)
    if category in plan:
        return int(plan[category])
    return int(step_tags.get(GPUS_TAG, 1))


def random_detector_classes(settings: Settings) -> int:
    """Classes of a random (untrained) detector's head: the categories plus background.

    A checkpoint's head is sized by its recorded labels, never by this.
    """
    return len(settings.categories) + 1


def label_key(name: str) -> str:
    """How a label's name compares with a category's: COCO's "teddy bear" is `teddy_bear`."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def detector_class_ids(category: Category, labels: Sequence[str] | None) -> tuple[int, ...]:
    """The detector labels that count as `category`; () means the best box of any label.

    `labels` are the detector's label names (label 0 is background), None for an unnamed
    (random) detector. Explicit `class_ids` win; otherwise labels match by name (the
    category's `labels`, else its own name), never by position, so the config's order and
    length never change which boxes a category gets.
    """
    if category.class_ids:
        if labels is not None:
            bad = [i for i in category.class_ids if not 0 < i < len(labels)]
            if bad:
                raise ConfigError(
                    f"category {category.name!r}: class_ids {bad} are not labels of the "
                    f"detector, whose labels are 1..{len(labels) - 1} (0 is background)"
                )
        return category.class_ids
    if labels is None:
        return ()
    wanted = {label_key(n) for n in category.labels or (category.name,)}
    return tuple(i for i, name in enumerate(labels) if i > 0 and label_key(name) in wanted)
