"""An uploaded query image, through ingestion's guards, to a vector. The only torch user here."""

from __future__ import annotations

import threading

import numpy as np

from image_search_assets.core.ingest.images import ItemRejected, decode_image
from image_search_assets.settings import Settings

# One embedding at a time: torch already uses every core for one image.
_LOCK = threading.Lock()


def check_upload(settings: Settings, data: bytes) -> None:
    """Raises ItemRejected as ingestion would (size, then format, pixels and dimensions)."""
    if len(data) > settings.fetch.max_bytes:
        raise ItemRejected("too_large", f"{len(data)} bytes > {settings.fetch.max_bytes}")
    decode_image(data, max_pixels=settings.fetch.max_pixels)


def embed_upload(settings: Settings, data: bytes) -> np.ndarray:
    """The unit vector of an uploaded image, embedded as the daily assets embed products."""
    check_upload(settings, data)
    # Lazy: torch loads on the first image query, never for product or vector queries.
    from image_search_assets.core.inference.embed_file import embed_image_file

    with _LOCK:
        return embed_image_file(
            settings.detector,
            settings.embedder,
            len(settings.categories) + 1,
            settings.device,
            data,
        )
