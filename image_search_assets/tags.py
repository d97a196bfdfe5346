"""Tags generated from the categories config: what each asset asks of the cluster."""

from __future__ import annotations

from .settings import Category, Settings

GPUS_TAG = "image_search/gpus"
GPU_TYPE_TAG = "image_search/gpu_type"


def gpu_tags(category: Category) -> dict[str, str]:
    return {GPUS_TAG: str(category.gpus), GPU_TYPE_TAG: category.gpu_type}


def detector_class_ids(settings: Settings, category: Category) -> tuple[int, ...]:
    """Labels that count as `category`.

    Explicit `class_ids` win. Otherwise a detector trained on our categories (random or a
    checkpoint) uses label i+1 for the i-th category, and torchvision's DEFAULT (COCO) weights
    accept any label, because COCO has no fashion categories.
    """
    if category.class_ids:
        return category.class_ids
    if settings.detector.weights.upper() == "DEFAULT":
        return ()
    return (settings.category_names.index(category.name) + 1,)
