"""Image queries of `image-search serve` (real process, small random models): the served
version's embedder answers or the query is refused, and large photos stay in the budget.
"""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from image_search_assets.core.index.annoy_index import publish
from image_search_assets.core.storage import LocalStorage
from tests.e2e.harness import wait_for
from tests.e2e.service import CATEGORIES, DAY1, Server, write_config
from tests.serving.conftest import day_ids, publish_day

pytestmark = pytest.mark.e2e
DECODE_MEMORY = 2_000_000_000  # the service's default budget; a 6000x6000 photo needs ~1.73 GB
SLACK = 250_000_000  # allocator arenas and torch's per-thread buffers around the budget


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Versions from an embedder called "test": image queries refused until republished."""
    root = tmp_path_factory.mktemp("images")
    storage = LocalStorage(root / "storage")
    for category, n in zip(CATEGORIES, (30, 20), strict=True):
        publish_day(storage, category, DAY1, day_ids(category, DAY1, n))
    config = write_config(root, str(root / "storage"))
    server = Server(config, root / "cache", root / "logs", "--decode-wait", "2")
    server.storage = storage  # type: ignore[attr-defined]
    yield server
    server.service.stop()


def jpeg(side: int) -> bytes:
    """A smooth photo-like JPEG (~2 MB at 6000x6000), made from a small random image."""
    small = np.random.default_rng(side).integers(0, 255, (60, 60, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR).save(buf, "JPEG")
    return buf.getvalue()


def ask(server: Server, image: bytes, **form: str) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/similar", files={"image": ("q.jpg", image)}, data=form, timeout=120
    )


def answered_metric(server: Server, category: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    found = re.search(rf'image_search_image_queries_answered{{category="{category}"}} (\S+)', text)
    assert found, text[-2000:]
    return float(found.group(1))


def republish_with(server: Server, identity: str) -> dict[str, str]:
    """Both categories again, 512-d vectors recorded as made by `identity`."""
    versions = {}
    for category, n in zip(CATEGORIES, (30, 20), strict=True):
        vectors = np.random.default_rng(n).normal(size=(n, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        manifest = publish(
            server.storage,
            category,
            DAY1,
            day_ids(category, DAY1, n),
            vectors,  # type: ignore[attr-defined]
            metric="angular",
            n_trees=4,
            models={"embedders": [identity]},
            recall_sample=10,
        )
        versions[category] = manifest["version"]
    wait_for(
        lambda: all(
            requests.get(f"{server.url}/readyz", timeout=5).json()["categories"][c]["version"] == v
            for c, v in versions.items()
        ),
        30,
        "the service to serve the republished versions",
        every=0.2,
    )
    return versions


def test_another_models_versions_refuse_image_queries_until_this_models_are_served(server):
    ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 200  # product queries still answer: the pod stays ready
    identity = ready.json()["embedder"]
    assert '"arch": "resnet18"' in identity  # loaded before ready: the port opened after it
    for category in CATEGORIES:
        assert ready.json()["categories"][category]["image_queries"].startswith("refused: ")
        assert answered_metric(server, category) == 0.0
    r = ask(server, jpeg(64), k="3")
    assert r.status_code == 409 and r.json()["error"] == "model_mismatch", r.text
    assert "no recorded embedder" in r.json()["detail"] and identity in r.json()["detail"]

    versions = republish_with(server, identity)
    status = requests.get(f"{server.url}/v1/versions", timeout=5).json()["categories"]
    assert {c: s["image_queries"] for c, s in status.items()} == dict.fromkeys(
        CATEGORIES, "answered"
    )
    assert all(status[c]["embedders"] == [identity] for c in CATEGORIES)
    r = ask(server, jpeg(64), k="3", category="pants")
    assert r.status_code == 200, r.text
    assert r.json()["versions"] == {"pants": versions["pants"]} and len(r.json()["neighbours"]) == 3
    assert answered_metric(server, "tops") == 1.0
    for data, code in (
        (b"not an image", "bad_image:not_an_image"),
        (b"\xff\xd8\xff\xe0trunc", "bad_image:truncated"),
    ):
        r = ask(server, data)
        assert (r.status_code, r.json()["error"]) == (422, code), r.text


def rss_bytes(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def test_eight_concurrent_6000px_photos_stay_in_the_budget_each_a_200_or_a_clean_503(server):
    identity = requests.get(f"{server.url}/readyz", timeout=5).json()["embedder"]
    status = requests.get(f"{server.url}/v1/versions", timeout=5).json()["categories"]
    if any(s["image_queries"] != "answered" for s in status.values()):
        republish_with(server, identity)
    photo = jpeg(6000)
    pid = server.service.proc.pid
    before = rss_bytes(pid, "VmRSS")
    replies: list[requests.Response] = []
    threads = [
        threading.Thread(target=lambda: replies.append(ask(server, photo))) for _ in range(8)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, peak = time.monotonic() - started, rss_bytes(pid, "VmHWM")
    codes = sorted(r.status_code for r in replies)
    print(
        f"8 x 6000x6000 ({len(photo)} B): {codes} in {elapsed:.1f} s; "
        f"RSS {before / 1e9:.2f} GB before, peak {peak / 1e9:.2f} GB"
    )
    assert set(codes) <= {200, 503} and 200 in codes, [r.text[:200] for r in replies]
    for r in replies:
        if r.status_code == 503:
            assert r.json()["error"] == "busy" and int(r.headers["Retry-After"]) >= 1
    # Every image byte an image query holds comes from the budget, and the bodies beside it.
    assert peak - before < DECODE_MEMORY + 8 * len(photo) + SLACK
