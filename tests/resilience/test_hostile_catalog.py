"""A hostile catalog through the deployed fetch path: ImageFetchResource's policy (https and one
allow-listed gs:// folder, as on GKE) and fetch_images against the GCS emulator.

Every hostile row is quarantined with scheme_not_allowed or a size reason before anything is
read or decoded; the good rows are stored."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from google.cloud import storage
from PIL import Image

from image_search_assets.core.ingest.store_images import fetch_images
from image_search_assets.core.storage import LocalStorage
from image_search_assets.settings import parse_settings
from resources import ImageFetchResource
from tests.core.ingest.test_images import float_tiff

pytestmark = pytest.mark.usefixtures("connects")

MAX_BYTES = 2_000_000


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def deployed(gcs_bucket) -> ImageFetchResource:
    """The fetch settings a GKE deployment gets: storage on gs://, images under one folder."""
    raw = {
        "categories": [{"name": "tops"}],
        "storage_root": f"gs://{gcs_bucket}/platform",
        "fetch": {"max_bytes": MAX_BYTES, "gcs_prefixes": [f"{gcs_bucket}/images/"]},
    }
    cfg = parse_settings(raw).fetch
    assert not cfg.local_mode and cfg.allowed_schemes == ("https", "gs")
    return ImageFetchResource.from_config(cfg, gcp_project="test")


def test_hostile_rows_are_quarantined_and_good_rows_proceed(tmp_path, gcs_bucket, deployed):
    bucket = storage.Client(project="test").bucket(gcs_bucket)
    good = {"good-1": _jpeg((200, 30, 30)), "good-2": _jpeg((30, 200, 30))}
    for pid, data in good.items():
        bucket.blob(f"images/{pid}.jpg").upload_from_string(data)
    bucket.blob("images/bomb.tif").upload_from_string(float_tiff(6000, 6600))  # ~0.25 MB
    bucket.blob("images/huge.jpg").upload_from_string(_jpeg((1, 2, 3)) + b"\0" * MAX_BYTES)
    bucket.blob("indexes/tops/CURRENT").upload_from_string(b"not for catalog rows")
    rows = {
        "good-1": f"gs://{gcs_bucket}/images/good-1.jpg",
        "good-2": f"gs://{gcs_bucket}/images/good-2.jpg",
        "passwd": "file:///etc/passwd",
        "environ": "/proc/self/environ",
        "sa-token": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "relative": "../../etc/shadow",
        "other-bucket": "gs://another-bucket/x.jpg",
        "own-index": f"gs://{gcs_bucket}/indexes/tops/CURRENT",
        "plain-http": "http://127.0.0.1:9/a.jpg",
        "metadata": "https://169.254.169.254/computeMetadata/v1/",
        "tiff-bomb": f"gs://{gcs_bucket}/images/bomb.tif",
        "oversized": f"gs://{gcs_bucket}/images/huge.jpg",
    }
    products = pd.DataFrame(
        {"product_id": list(rows), "category": "tops", "image_url": list(rows.values())}
    )
    result = fetch_images(
        products,
        LocalStorage(tmp_path / "out"),
        "2026-11-01",
        policy=deployed.policy(),
        max_pixels=deployed.fetch.max_pixels,
        workers=deployed.fetch.workers,
        gcs_read=None,  # the policy's sized blob reads are the only gs:// path
    )
    reasons = dict(zip(result.quarantined["product_id"], result.quarantined["reason"], strict=True))
    refused = ("passwd", "environ", "sa-token", "relative", "other-bucket", "own-index")
    assert reasons == {
        **{pid: "scheme_not_allowed" for pid in (*refused, "plain-http")},
        "metadata": "blocked_address",  # https is allowed; the SSRF guard still stands
        "tiff-bomb": "decompression_bomb",
        "oversized": "too_large",
    }
    assert sorted(result.table["product_id"]) == sorted(good)
    details = result.quarantined.set_index("product_id")["detail"]
    # The same words for a file that exists on every pod and one that never does.
    assert details["passwd"] == details["sa-token"] == details["relative"]
    assert "F needs" in details["tiff-bomb"] and "over 512000000" in details["tiff-bomb"]
