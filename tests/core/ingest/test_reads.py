"""gs:// image objects in the GCS emulator: the size is read before the content, and the
download is bounded even if the object grows between the two requests."""

from __future__ import annotations

import pytest
from google.cloud import storage

from image_search_assets.core.ingest.fetch import FetchPolicy, fetch_bytes
from image_search_assets.core.ingest.images import ItemRejected
from image_search_assets.core.ingest.url_rules import UrlRules

MAX = 1000


class SpyBlob:
    """A real emulator Blob that records which requests were made (optionally a stale size)."""

    def __init__(self, blob, calls: list[str], stale_size: int | None = None):
        self._blob, self._calls, self._stale = blob, calls, stale_size

    def reload(self) -> None:
        self._calls.append("reload")
        self._blob.reload()

    @property
    def size(self) -> int | None:
        return self._stale if self._stale is not None else self._blob.size

    @property
    def generation(self) -> int | None:
        return self._blob.generation

    def download_as_bytes(self, **kwargs) -> bytes:
        self._calls.append("download")
        return self._blob.download_as_bytes(**kwargs)


@pytest.fixture
def bucket(gcs_bucket):
    b = storage.Client(project="test").bucket(gcs_bucket)
    b.blob("img/small.jpg").upload_from_string(b"j" * 10)
    b.blob("img/huge.jpg").upload_from_string(b"j" * (MAX * 50))
    return b


def _policy(bucket, calls: list[str], stale_size: int | None = None) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=MAX,
        retries=0,
        rules=UrlRules(gcs_prefixes=(f"{bucket.name}/img/",)),
        gcs_blob=lambda b, name: SpyBlob(bucket.blob(name), calls, stale_size),
    )


def test_small_object_is_read_after_its_size(bucket) -> None:
    calls: list[str] = []
    assert fetch_bytes(f"gs://{bucket.name}/img/small.jpg", _policy(bucket, calls)) == b"j" * 10
    assert calls == ["reload", "download"]


def test_oversized_object_is_refused_without_downloading(bucket) -> None:
    calls: list[str] = []
    with pytest.raises(ItemRejected) as info:
        fetch_bytes(f"gs://{bucket.name}/img/huge.jpg", _policy(bucket, calls))
    assert info.value.reason == "too_large" and calls == ["reload"]


def test_an_object_that_grew_after_the_size_check_is_still_bounded(bucket) -> None:
    calls: list[str] = []
    with pytest.raises(ItemRejected) as info:  # metadata said 10 bytes; the range stops at MAX+1
        fetch_bytes(f"gs://{bucket.name}/img/huge.jpg", _policy(bucket, calls, stale_size=10))
    assert info.value.reason == "too_large" and "1001 bytes" in info.value.detail


def test_missing_object_is_gcs_not_found(bucket) -> None:
    with pytest.raises(ItemRejected) as info:
        fetch_bytes(f"gs://{bucket.name}/img/nope.jpg", _policy(bucket, []))
    assert info.value.reason == "gcs_not_found"
