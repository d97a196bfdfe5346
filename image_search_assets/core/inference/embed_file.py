"""Embeds a query image the way the daily assets embed a product image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from image_search_assets.core.config import ModelConfig
from image_search_assets.core.inference import naive
from image_search_assets.core.inference.models import (
    LoadedModel,
    ModelSpec,
    load_detector,
    load_embedder,
)
from image_search_assets.core.ingest.images import decode_image


def query_models(
    d: ModelConfig, e: ModelConfig, num_classes: int, device: str
) -> tuple[LoadedModel, LoadedModel]:
    """The configured (detector, embedder), loaded once per process (the loaders cache).

    `num_classes` is the detector's head: the categories plus background.
    """
    # The same pins and opt-ins as the daily steps: a query never loads bytes a step would refuse.
    return (
        load_detector(ModelSpec.from_config(d, num_classes), device),
        load_embedder(ModelSpec.from_config(e), device),
    )


def embed_image(
    models: tuple[LoadedModel, LoadedModel], d: ModelConfig, e: ModelConfig, img: Image.Image
) -> np.ndarray:
    """Detects the main item of a decoded image, crops it and returns its unit vector."""
    detector, embedder = models
    det = naive.detect(detector, [img], 1)[0]
    box = naive.choose_box(
        det, img.width, img.height, class_ids=(), score_threshold=d.score_threshold
    )
    crop = naive.crop(img, box)
    return naive.embed(embedder, [crop], input_size=e.input_size, batch_size=1)[0]


def embed_image_file(
    d: ModelConfig, e: ModelConfig, num_classes: int, device: str, data: bytes
) -> np.ndarray:
    """embed_image() of encoded image bytes, with the configured models."""
    return embed_image(query_models(d, e, num_classes, device), d, e, decode_image(data))
