"""Embeds a query image the way the daily assets embed a product image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from image_search_assets.core.inference import naive
from image_search_assets.core.inference.models import (
    LoadedModel,
    ModelSpec,
    load_detector,
    load_embedder,
)
from image_search_assets.core.ingest.images import decode_image
from image_search_assets.settings import Settings


def query_models(settings: Settings) -> tuple[LoadedModel, LoadedModel]:
    """The configured (detector, embedder), loaded once per process (the loaders cache)."""
    d, e = settings.detector, settings.embedder
    # The same pins and opt-ins as the daily steps: a query never loads bytes a step would refuse.
    detector_spec = ModelSpec(
        d.arch, d.weights, d.input_size, len(settings.categories) + 1, d.sha256, d.allow_torchscript
    )
    embedder_spec = ModelSpec(
        e.arch, e.weights, e.input_size, sha256=e.sha256, allow_torchscript=e.allow_torchscript
    )
    return load_detector(detector_spec, settings.device), load_embedder(
        embedder_spec, settings.device
    )


def embed_image(settings: Settings, img: Image.Image) -> np.ndarray:
    """Detects the main item of a decoded image, crops it and returns its unit vector."""
    detector, embedder = query_models(settings)
    det = naive.detect(detector, [img], 1)[0]
    box = naive.choose_box(
        det, img.width, img.height, class_ids=(), score_threshold=settings.detector.score_threshold
    )
    crop = naive.crop(img, box)
    return naive.embed(embedder, [crop], input_size=settings.embedder.input_size, batch_size=1)[0]


def embed_image_file(settings: Settings, data: bytes) -> np.ndarray:
    """embed_image() of encoded image bytes."""
    return embed_image(settings, decode_image(data))
