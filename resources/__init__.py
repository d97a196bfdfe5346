"""Typed Dagster resources: thin wrappers that construct the Dagster-free core objects."""

from resources.catalog import CatalogResource, ImageFetchResource
from resources.models import ModelsResource
from resources.storage import (
    PREVIOUS_PARTITION,
    STORED_BY_STEP,
    StorageIOManager,
    StorageResource,
)

__all__ = [
    "PREVIOUS_PARTITION",
    "STORED_BY_STEP",
    "CatalogResource",
    "ImageFetchResource",
    "ModelsResource",
    "StorageIOManager",
    "StorageResource",
]
