"""The day's product images: fetched on threads, decoded, stored as normalised RGB JPEGs.

No torch here: the CPU fetch step imports this module and the fetching below it, nothing of
the GPU stages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

import pandas as pd

from image_search_assets.core.ingest.catalog import quarantine_frame
from image_search_assets.core.ingest.fetch import FetchPolicy, fetch_bytes
from image_search_assets.core.ingest.images import ItemRejected, decode_image, to_jpeg_bytes
from image_search_assets.core.layout import image_key
from image_search_assets.core.progress import Progress
from image_search_assets.core.storage import Storage

T = TypeVar("T")

IMAGE_COLUMNS = ["product_id", "category", "image_url", "image_key", "width", "height", "sha256"]


@dataclass(frozen=True)
class StoredImages:
    table: pd.DataFrame  # IMAGE_COLUMNS, one row per stored image
    quarantined: pd.DataFrame  # the products whose image was rejected, with the reason
    seconds: float

    @property
    def items_per_second(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else 0.0


def fetch_many(
    items: Sequence[tuple[str, str]], fetch_one: Callable[[str], T], workers: int = 8
) -> tuple[dict[str, T], dict[str, ItemRejected]]:
    """Runs fetch_one(uri) on threads -> (ok, rejected) by item id; other errors propagate."""
    if workers < 1 or len({item_id for item_id, _ in items}) != len(items):
        raise ValueError("fetch_many needs workers >= 1 and unique item ids")
    ok, rejected = dict[str, T](), dict[str, ItemRejected]()
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))))
    try:
        futures = {item_id: pool.submit(fetch_one, uri) for item_id, uri in items}
        for item_id, future in futures.items():
            try:
                ok[item_id] = future.result()
            except ItemRejected as exc:
                rejected[item_id] = exc
    finally:
        # After an unexpected error, don't keep fetching the rest of the day in the background.
        pool.shutdown(wait=True, cancel_futures=True)
    return ok, rejected


def fetch_images(
    products: pd.DataFrame,
    storage: Storage,
    day: str,
    *,
    policy: FetchPolicy,
    max_pixels: int,
    workers: int,
    gcs_read: Callable[[str], bytes] | None = None,
    progress: Progress | None = None,
) -> StoredImages:
    """Fetches, decodes and stores each product's image as a normalised RGB JPEG.

    A failed image is quarantined with its reason; it never fails the day.
    """
    started = time.perf_counter()
    urls = dict(zip(products["product_id"], products["image_url"], strict=True))

    def fetch_one(pid: str) -> dict[str, object]:
        try:
            return store_one(pid)
        finally:  # a rejected image counts as done too
            if progress is not None:
                progress.advance()

    def store_one(pid: str) -> dict[str, object]:
        img = decode_image(
            fetch_bytes(urls[pid], policy, gcs_read=gcs_read),
            max_pixels=max_pixels,
            max_decode_bytes=policy.max_decode_bytes,
            budget=policy.decode_budget,
        )
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
    if progress is not None:
        progress.finish()
    listed = cast(pd.DataFrame, products[["product_id", "category", "image_url"]])
    rows = [
        {**row, **good[row["product_id"]]}
        for row in listed.to_dict("records")
        if row["product_id"] in good
    ]
    table = pd.DataFrame(rows, columns=pd.Index(IMAGE_COLUMNS))
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
    return StoredImages(table, quarantine_frame(bad), time.perf_counter() - started)
