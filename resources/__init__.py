"""Typed Dagster resources: thin wrappers that construct the Dagster-free core objects."""

from .catalog import CatalogResource, ImageFetchResource
from .models import ModelsResource
from .storage import PREVIOUS_PARTITION, StorageIOManager, StorageResource

__all__ = [
    "PREVIOUS_PARTITION",
    "CatalogResource",
    "ImageFetchResource",
    "ModelsResource",
    "StorageIOManager",
    "StorageResource",
]
