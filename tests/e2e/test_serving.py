"""`image-search serve` as a real process on 127.0.0.1 while new days are materialised.

A loop of concurrent HTTP clients runs while the daily Dagster job materialises and publishes
the next day (tiny catalog, random small models) and then while a corrupt version is put in
CURRENT; every response must be whole (one version per answer) and none may fail. The same
runs with the storage root on the in-process GCS emulator.
"""

from __future__ import annotations

import threading

import pytest
import requests

from tests.e2e.harness import wait_for
from tests.e2e.service import (
    CATEGORIES,
    DAY1,
    DAY2,
    DailyPlatform,
    Server,
    served_products,
    storage_root,
    store_images,
    write_config,
)
from tests.serving.conftest import day_ids, publish_corrupt, publish_day

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["local", "gcs"])
def platform(request, tmp_path):
    """Indexes published directly (no models): for the error cases."""
    storage, root = storage_root(request, tmp_path)
    for category, n in zip(CATEGORIES, (60, 40), strict=True):
        ids = day_ids(category, DAY1, n)
        publish_day(storage, category, DAY1, ids)
        store_images(storage, category, DAY1, ids)
    config = write_config(tmp_path, root)
    server = Server(config, tmp_path / "cache", tmp_path / "logs", "--no-image-queries")
    yield storage, server
    server.service.stop()


@pytest.fixture(params=["local", "gcs"])
def daily(request, tmp_path):
    """Day one materialised through Dagster, and the service started over it."""
    _, root = storage_root(request, tmp_path)
    platform = DailyPlatform(tmp_path, root)
    platform.materialise(DAY1)
    server = Server(write_config(tmp_path, root), tmp_path / "cache", tmp_path / "logs")
    yield platform, server
    server.service.stop()
    platform.instance.dispose()


class LoadLoop:
    """Concurrent clients asking for served products; every response is checked whole."""

    def __init__(self, url: str, products: dict[str, list[str]], k: int, clients: int = 6) -> None:
        self.url, self.stop, self.products, self.k = url, threading.Event(), products, k
        self.ok, self.failures, self.versions = 0, [], {c: set() for c in CATEGORIES}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> LoadLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _run(self, seed: int) -> None:
        session, i = requests.Session(), seed
        while not self.stop.is_set():
            category = CATEGORIES[i % 2]
            pid = self.products[category][i % len(self.products[category])]
            i += 1
            try:
                r = session.get(f"{self.url}/v1/similar/{pid}", params={"k": self.k}, timeout=10)
                body = r.json()
                whole = (
                    r.status_code == 200
                    and body["query_category"] == category
                    and len(body["neighbours"]) == self.k
                    and {n["version"] for n in body["neighbours"]} == {body["versions"][category]}
                    and all(n["category"] == category for n in body["neighbours"])
                )
            except (requests.RequestException, ValueError, KeyError) as e:
                whole, body = False, repr(e)
            with self._lock:
                if whole:
                    self.ok += 1
                    self.versions[category].add(body["versions"][category])
                else:
                    self.failures.append((pid, body))


def test_swaps_under_load_while_a_day_materialises_and_refuses_a_corrupt_version(daily):
    platform, server = daily
    storage, before = platform.storage, server.readyz()["categories"]
    day_one = served_products(server)
    assert all(len(day_one[c]) >= 5 for c in CATEGORIES), day_one
    with LoadLoop(server.url, day_one, k=3) as load:
        wait_for(lambda: load.ok >= 50, 60, "the load loop to get going", every=0.1)
        platform.materialise(DAY2)  # the daily job, publish included, while the clients run
        new = {c: platform.current(c) for c in CATEGORIES}
        assert all(new[c] != before[c]["version"] for c in CATEGORIES)
        wait_for(
            lambda: all(server.readyz()["categories"][c]["version"] == new[c] for c in CATEGORIES),
            60,
            "the service to swap to day two",
            every=0.1,
        )
        for category in CATEGORIES:  # the new day's products answer right after the swap
            fresh = sorted(set(served_products(server)[category]) - set(day_one[category]))
            assert fresh, f"no {category} products arrived on {DAY2}"
            r = requests.get(f"{server.url}/v1/similar/{fresh[0]}", params={"k": 3}, timeout=5)
            assert r.status_code == 200, r.text
            assert r.json()["versions"] == {category: new[category]}
        served_after_swap = load.ok
        bad = publish_corrupt(storage, "pants", "flip")
        wait_for(
            lambda: server.readyz()["categories"]["pants"]["failed_loads"] == 1,
            60,
            "the corrupt version to be refused",
            every=0.1,
        )
        ok_at_refusal = load.ok
        wait_for(lambda: load.ok >= ok_at_refusal + 50, 60, "more answers after the refusal", 0.1)
    print(f"{load.ok} whole answers, {served_after_swap} by the swap; versions {load.versions}")
    assert load.failures == [], load.failures[:5]
    assert load.ok > served_after_swap > 50
    for category in CATEGORIES:  # the corrupt one never served
        assert load.versions[category] == {before[category]["version"], new[category]}
    status = server.readyz()
    assert status["ready"] and status["categories"]["pants"]["version"] == new["pants"]
    assert bad in status["categories"]["pants"]["last_error"]

    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'image_search_index_swaps_total{category="tops"} 1.0' in metrics
    assert 'image_search_index_failed_loads_total{category="pants"} 1.0' in metrics
    assert f'image_search_index_info{{category="tops",day="{DAY2}",version="{new["tops"]}"}}' in (
        metrics
    )
    bucket = 'le="0.01",method="GET",route="/v1/similar/{product_id}",status="200"'
    assert f"image_search_request_seconds_bucket{{{bucket}}}" in metrics


@pytest.mark.parametrize("daily", ["local"], indirect=True)
def test_an_uploaded_image_is_embedded_and_answered_by_the_served_versions(daily):
    platform, server = daily
    versions = {c: v["version"] for c, v in server.readyz()["categories"].items()}
    pid = served_products(server)["tops"][2]
    photo = requests.get(f"{server.url}/v1/images/{pid}", timeout=5)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    r = requests.post(
        f"{server.url}/v1/similar",
        data={"k": 4},
        files={"image": ("q.jpg", photo.content)},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["versions"] == versions  # every category searched, each on its served version
    found = body["neighbours"]
    assert len(found) == 4 and [n["distance"] for n in found] == sorted(
        n["distance"] for n in found
    )
    assert all(n["version"] == versions[n["category"]] for n in found)
    # The same random-seeded embedder as the daily run: the product finds itself first.
    assert found[0]["product_id"] == pid and found[0]["distance"] < 1e-3, found


def test_clear_json_errors_never_stack_traces(platform):
    _, server = platform
    top = day_ids("tops", DAY1, 1)[0]
    cases = [
        ("get", "/v1/similar/no-such-product", {}, 404, "unknown_product"),
        ("get", f"/v1/similar/{top}?k=0", {}, 422, "invalid_parameter"),
        ("get", f"/v1/similar/{top}?k=abc", {}, 422, "invalid_parameter"),
        ("get", f"/v1/similar/{top}?category=shoes", {}, 400, "bad_request"),
        (
            "post",
            "/v1/similar",
            {"files": {"image": ("x.jpg", b"not an image")}},
            503,
            "image_queries_disabled",
        ),
        ("post", "/v1/similar", {}, 422, "invalid_parameter"),
    ]
    for method, path, kwargs, status, code in cases:
        r = getattr(requests, method)(f"{server.url}{path}", timeout=10, **kwargs)
        assert (r.status_code, r.json()["error"]) == (status, code), (path, r.text)
        assert "Traceback" not in r.text and r.json()["detail"]
    assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
    spec = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    assert {"/v1/similar/{product_id}", "/v1/similar", "/readyz"} <= set(spec["paths"])
    assert requests.get(f"{server.url}/docs", timeout=5).status_code == 200
