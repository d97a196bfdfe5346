"""The day's images stored on the CPU fetch step, which must not pay for torch."""

from __future__ import annotations

import io
import subprocess
import sys

import pandas as pd
from PIL import Image

from image_search_assets.core.ingest.fetch import FetchPolicy
from image_search_assets.core.ingest.store_images import IMAGE_COLUMNS, fetch_images
from image_search_assets.core.ingest.url_rules import LOCAL_KINDS, UrlRules
from image_search_assets.core.layout import image_key
from image_search_assets.core.storage import open_storage


def test_the_fetch_path_imports_no_torch():
    # The step that fetches images imports assets/ingest.py's core modules and nothing of the
    # GPU stages: torch costs it seconds and memory on every CPU pod.
    code = (
        "import image_search_assets.core.ingest.store_images, sys; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_images_are_stored_under_their_key_and_bad_ones_quarantined(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="PNG")
    (tmp_path / "red.png").write_bytes(buffer.getvalue())
    (tmp_path / "junk.png").write_bytes(b"not an image")
    products = pd.DataFrame(
        {
            "product_id": ["red 1", "junk", "missing"],
            "category": ["tops", "tops", "hats"],
            "image_url": [str(tmp_path / n) for n in ("red.png", "junk.png", "none.png")],
        }
    )
    storage = open_storage(str(tmp_path / "root"))
    policy = FetchPolicy(rules=UrlRules(LOCAL_KINDS))
    result = fetch_images(
        products, storage, "2026-11-01", policy=policy, max_pixels=10**6, workers=2
    )
    assert list(result.table.columns) == IMAGE_COLUMNS
    [row] = result.table.to_dict("records")
    assert row["image_key"] == image_key("2026-11-01", "red 1") == "images/2026-11-01/red%201.jpg"
    assert (row["width"], row["height"]) == (40, 30)
    assert storage.read_bytes(row["image_key"])[:3] == b"\xff\xd8\xff"  # stored as JPEG
    reasons = dict(zip(result.quarantined["product_id"], result.quarantined["reason"], strict=True))
    assert reasons == {"junk": "not_an_image", "missing": "file_not_found"}
