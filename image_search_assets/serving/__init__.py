"""The consumer side: a Dagster-free, torch-free reader of the published indexes, and its service.

`IndexReader` is the one thing a consumer imports; only the image path (`embedder`) loads torch.
"""

from image_search_assets.serving.reader import (
    Answer,
    IndexReader,
    Neighbour,
    NotReady,
    UnknownProduct,
)
from image_search_assets.serving.versions import LoadedVersion, VersionRefused

__all__ = [
    "Answer",
    "IndexReader",
    "LoadedVersion",
    "Neighbour",
    "NotReady",
    "UnknownProduct",
    "VersionRefused",
]
