"""Uploaded query images to vectors, with the model that built the served versions.

The only torch user here, and only when image queries are enabled: the service loads the
models before it reports ready, and answers an image query for a category only while the
served version's manifest names this embedder (LoadedVersion.embedder_mismatch).
"""

from __future__ import annotations

import threading

import numpy as np

from image_search_assets.core.ingest.images import ItemRejected, decode_image
from image_search_assets.serving.budget import QueryBudget, query_cost
from image_search_assets.settings import Settings


class QueryEmbedder:
    """The configured detector and embedder, loaded once; one embedding at a time (torch
    already uses every core for one image)."""

    def __init__(self, settings: Settings, budget: QueryBudget) -> None:
        self.settings, self.budget = settings, budget
        self.identity: str | None = None  # set by load()
        self._lock = threading.Lock()

    def load(self) -> str:
        """Loads both models (torch, weights, a probe) and returns the embedder's identity."""
        from image_search_assets.core.index.live_set import identity_json

        _, embedder = _models(self.settings)
        self.identity = identity_json(embedder.identity)
        return self.identity

    def embed(self, data: bytes, wait_s: float) -> np.ndarray:
        """The unit vector of uploaded bytes: one decode, inside the shared budget.

        Raises ItemRejected (ingestion's reasons) or budget.Busy.
        """
        fetch = self.settings.fetch
        with self.budget.reserve_within(query_cost(data), wait_s):
            img = decode_image(
                data, max_pixels=fetch.max_pixels, max_decode_bytes=fetch.max_decode_bytes
            )
            with self._lock:
                return _embed(self.settings, img)


def embed_upload(settings: Settings, data: bytes) -> np.ndarray:
    """An image file's vector for `image-search query --image`: ingestion's guards, one decode."""
    if len(data) > settings.fetch.max_bytes:
        raise ItemRejected("too_large", f"{len(data)} bytes > {settings.fetch.max_bytes}")
    fetch = settings.fetch
    img = decode_image(data, max_pixels=fetch.max_pixels, max_decode_bytes=fetch.max_decode_bytes)
    return _embed(settings, img)


def _models(settings: Settings):
    """The configured (detector, embedder); torch is imported here, on first use."""
    from image_search_assets.core.inference.embed_file import query_models
    from image_search_assets.tags import random_detector_classes

    return query_models(
        settings.detector, settings.embedder, random_detector_classes(settings), settings.device
    )


def _embed(settings: Settings, img) -> np.ndarray:
    from image_search_assets.core.inference.embed_file import embed_image

    return embed_image(_models(settings), settings.detector, settings.embedder, img)
