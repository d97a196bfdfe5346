"""The day's stages as plain functions over tables: fetch images, detect, embed.

Assets call these; nothing here knows about Dagster.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from . import inference
from .catalog import quarantine_frame
from .fetch import FetchPolicy, fetch_bytes, fetch_many
from .images import decode_image, to_jpeg_bytes
from .models import LoadedModel
from .storage import Storage

IMAGE_COLUMNS = ["product_id", "category", "image_url", "image_key", "width", "height", "sha256"]
BOX_COLUMNS = ["x1", "y1", "x2", "y2", "label", "score", "box_source", "candidates"]


@dataclass(frozen=True)
class StageResult:
    table: pd.DataFrame
    quarantined: pd.DataFrame
    seconds: float

    @property
    def items_per_second(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else 0.0


def image_key(day: str, product_id: str) -> str:
    return f"images/{day}/{quote(product_id, safe='')}.jpg"


def fetch_images(
    products: pd.DataFrame,
    storage: Storage,
    day: str,
    *,
    policy: FetchPolicy,
    max_pixels: int,
    workers: int,
    gcs_read: Callable[[str], bytes] | None = None,
) -> StageResult:
    """Fetches, decodes and stores each product's image as a normalised RGB JPEG.

    A failed image is quarantined with its reason; it never fails the day.
    """
    started = time.perf_counter()
    urls = dict(zip(products["product_id"], products["image_url"], strict=True))

    def fetch_one(pid: str) -> dict[str, object]:
        img = decode_image(fetch_bytes(urls[pid], policy, gcs_read=gcs_read), max_pixels=max_pixels)
        data = to_jpeg_bytes(img)
        key = image_key(day, pid)
        storage.write_bytes(key, data)
        return {
            "image_key": key,
            "width": img.width,
            "height": img.height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    good, rejected = fetch_many([(pid, pid) for pid in urls], fetch_one, workers=workers)
    rows = [
        {**row, **good[row["product_id"]]}
        for row in products[["product_id", "category", "image_url"]].to_dict("records")
        if row["product_id"] in good
    ]
    table = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    bad = [
        {
            "product_id": pid,
            "category": cat,
            "image_url": urls[pid],
            "stage": "image",
            "reason": rejected[pid].reason,
            "detail": rejected[pid].detail,
        }
        for pid, cat in zip(products["product_id"], products["category"], strict=True)
        if pid in rejected
    ]
    return StageResult(table, quarantine_frame(bad), time.perf_counter() - started)


def load_images(storage: Storage, keys: Sequence[str]) -> list[Image.Image]:
    images = []
    for key in keys:
        with Image.open(io.BytesIO(storage.read_bytes(key))) as img:
            images.append(img.convert("RGB"))
    return images


def detect_items(
    images: pd.DataFrame,
    storage: Storage,
    detector: LoadedModel,
    *,
    class_ids: Sequence[int],
    score_threshold: float,
    batch_size: int,
) -> StageResult:
    """One item per product image: its category's best box, or the full frame."""
    started = time.perf_counter()
    pictures = load_images(storage, images["image_key"].tolist())
    raw = inference.detect(detector, pictures, batch_size)
    rows = []
    for row, pic, det in zip(images.to_dict("records"), pictures, raw, strict=True):
        box = inference.choose_box(
            det, pic.width, pic.height, class_ids=class_ids, score_threshold=score_threshold
        )
        rows.append(
            {
                "product_id": row["product_id"],
                "image_key": row["image_key"],
                **{c: getattr(box, c) for c in BOX_COLUMNS},
            }
        )
    table = pd.DataFrame(rows, columns=["product_id", "image_key", *BOX_COLUMNS])
    return StageResult(table, quarantine_frame(), time.perf_counter() - started)


def embed_items(
    detections: pd.DataFrame,
    storage: Storage,
    embedder: LoadedModel,
    *,
    input_size: int,
    batch_size: int,
) -> StageResult:
    """Each detection cropped and embedded; `vector` holds the L2-normalised features."""
    started = time.perf_counter()
    pictures = load_images(storage, detections["image_key"].tolist())
    boxes = [
        inference.ChosenBox(**{c: row[c] for c in BOX_COLUMNS})
        for row in detections.to_dict("records")
    ]
    crops = [inference.crop(pic, box) for pic, box in zip(pictures, boxes, strict=True)]
    vectors = inference.embed(embedder, crops, input_size=input_size, batch_size=batch_size)
    table = detections[["product_id", "box_source", "score"]].copy()
    table["vector"] = list(vectors.astype(np.float32))
    return StageResult(
        table.reset_index(drop=True), quarantine_frame(), time.perf_counter() - started
    )


def vectors_of(table: pd.DataFrame) -> np.ndarray:
    """The `vector` column as an (n, d) float32 matrix."""
    if table.empty:
        return np.zeros((0, 0), np.float32)
    return np.stack(table["vector"].to_numpy()).astype(np.float32)
