"""Typed Dagster resources: thin wrappers that construct the Dagster-free core objects."""

from resources.catalog import CatalogResource, ImageFetchResource
from resources.models import ModelsResource
from resources.storage import PREVIOUS_PARTITION, StorageIOManager, StorageResource

__all__ = [
    "PREVIOUS_PARTITION",
    "CatalogResource",
    "ImageFetchResource",
    "ModelsResource",
    "StorageIOManager",
    "StorageResource",
]
