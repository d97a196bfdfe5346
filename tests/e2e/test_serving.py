"""`image-search serve` as a real process on 127.0.0.1 while new versions are published.

A loop of concurrent HTTP clients runs through a swap to a new day and through a corrupt
version; every response must be whole (one version per answer) and none may fail. The same
runs with the storage root on the in-process GCS emulator.
"""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml
from PIL import Image

from image_search_assets.core.records import asset_value_key
from image_search_assets.core.storage import GCSStorage, LocalStorage, Storage
from image_search_assets.serving.reader import image_key
from tests.e2e.browser import Browser, require_browser
from tests.e2e.harness import Service, free_port, platform_env, wait_for
from tests.serving.conftest import day_ids, publish_corrupt, publish_day

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "image-search")
DAY1, DAY2 = "2026-11-01", "2026-11-02"
CATEGORIES = ("tops", "pants")


def write_config(root: Path, storage_root: str) -> Path:
    config = {
        "partitions": {"start_date": DAY1, "timezone": "Asia/Tokyo"},
        "storage_root": storage_root,
        "catalog": str(root / "catalog.csv"),
        "categories": [{"name": "tops", "gpus": 4}, {"name": "pants", "gpus": 2}],
        "models": {
            "device": "cpu",
            "detector": {"arch": "ssdlite320_mobilenet_v3_large", "weights": "random"},
            "embedder": {"arch": "resnet18", "weights": "random", "input_size": 64},
        },
    }
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def store_images(storage: Storage, category: str, day: str, ids: list[str]) -> None:
    """What the daily assets leave beside an index: the items table and each product's JPEG."""
    for i, pid in enumerate(ids):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), ((40 * i) % 256, 120, 200 - (20 * i) % 200)).save(buf, "JPEG")
        storage.write_bytes(image_key(day, pid), buf.getvalue())
    table = pd.DataFrame({"product_id": ids, "added_on": day})
    storage.write_parquet(asset_value_key([category, "annoy_index"], day), table)


class Server:
    def __init__(self, config: Path, cache: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--poll-interval", "0.2", "--cache-dir", str(cache)]
        self.service = Service("serve", argv, platform_env(config), log_dir)
        try:
            wait_for(self._ready, 120, "the service to be ready", every=0.2)
        except BaseException:
            print(self.service.log_tail())
            self.service.stop()
            raise

    def _ready(self) -> bool:
        if self.service.proc.poll() is not None:
            raise RuntimeError(f"serve exited:\n{self.service.log_tail()}")
        try:
            return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def readyz(self) -> dict:
        return requests.get(f"{self.url}/readyz", timeout=5).json()


@pytest.fixture(params=["local", "gcs"])
def platform(request, tmp_path):
    if request.param == "local":
        storage: Storage = LocalStorage(tmp_path / "storage")
        root = str(tmp_path / "storage")
    else:
        from google.cloud import storage as gcs

        request.getfixturevalue("gcs_emulator")
        bucket = request.getfixturevalue("gcs_bucket")
        storage, root = (
            GCSStorage(gcs.Client(project="test"), bucket, "root"),
            f"gs://{bucket}/root",
        )
    for category, n in zip(CATEGORIES, (60, 40), strict=True):
        ids = day_ids(category, DAY1, n)
        publish_day(storage, category, DAY1, ids)
        store_images(storage, category, DAY1, ids)
    config = write_config(tmp_path, root)
    server = Server(config, tmp_path / "cache", tmp_path / "logs")
    yield storage, server
    server.service.stop()


class LoadLoop:
    """Concurrent clients asking for day-one products; every response is checked whole."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url, self.stop = url, threading.Event()
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
            pid = day_ids(category, DAY1, 40)[i % 40]
            i += 1
            try:
                r = session.get(f"{self.url}/v1/similar/{pid}", params={"k": 5}, timeout=10)
                body = r.json()
                whole = (
                    r.status_code == 200
                    and body["query_category"] == category
                    and len(body["neighbours"]) == 5
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


def test_swaps_under_load_without_a_failed_response_and_refuses_a_corrupt_version(platform):
    storage, server = platform
    before = server.readyz()["categories"]
    with LoadLoop(server.url) as load:
        wait_for(lambda: load.ok >= 50, 60, "the load loop to get going", every=0.1)
        new_ids = day_ids("tops", DAY2, 15)
        manifest = publish_day(storage, "tops", DAY2, day_ids("tops", DAY1, 60) + new_ids)

        def new_day_answers() -> bool:
            r = requests.get(f"{server.url}/v1/similar/{new_ids[3]}", params={"k": 3}, timeout=5)
            return r.status_code == 200 and r.json()["versions"]["tops"] == manifest["version"]

        wait_for(new_day_answers, 60, "the new day's products to answer", every=0.1)
        served_after_swap = load.ok
        bad = publish_corrupt(storage, "pants", "flip")
        wait_for(
            lambda: server.readyz()["categories"]["pants"]["failed_loads"] == 1,
            60, "the corrupt version to be refused", every=0.1,
        )  # fmt: skip
        ok_at_refusal = load.ok
        wait_for(lambda: load.ok >= ok_at_refusal + 50, 60, "more answers after the refusal", 0.1)
    assert load.failures == [], load.failures[:5]
    assert load.ok > served_after_swap > 50
    assert load.versions["tops"] == {before["tops"]["version"], manifest["version"]}
    assert load.versions["pants"] == {before["pants"]["version"]}  # the corrupt one never served
    status = server.readyz()
    assert (
        status["ready"] and status["categories"]["pants"]["version"] == before["pants"]["version"]
    )
    assert bad in status["categories"]["pants"]["last_error"]

    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'image_search_index_swaps_total{category="tops"} 1.0' in metrics
    assert 'image_search_index_failed_loads_total{category="pants"} 1.0' in metrics
    assert (
        f'image_search_index_info{{category="tops",day="{DAY2}",version="{manifest["version"]}"}}'
        in metrics
    )
    assert (
        'image_search_request_seconds_bucket{le="0.01",method="GET",route="/v1/similar/{product_id}",status="200"}'
        in metrics
    )


def test_clear_json_errors_never_stack_traces(platform):
    _, server = platform
    top = day_ids("tops", DAY1, 1)[0]
    cases = [
        ("get", "/v1/similar/no-such-product", {}, 404, "unknown_product"),
        ("get", f"/v1/similar/{top}?k=0", {}, 422, "invalid_parameter"),
        ("get", f"/v1/similar/{top}?k=abc", {}, 422, "invalid_parameter"),
        ("get", f"/v1/similar/{top}?category=shoes", {}, 400, "bad_request"),
        ("post", "/v1/similar", {"files": {"image": ("x.jpg", b"not an image")}}, 422,
         "bad_image:not_an_image"),
        ("post", "/v1/similar", {"files": {"image": ("x.jpg", b"\xff\xd8\xff\xe0trunc")}}, 422,
         "bad_image:truncated"),
        ("post", "/v1/similar", {}, 422, "invalid_parameter"),
    ]  # fmt: skip
    for method, path, kwargs, status, code in cases:
        r = getattr(requests, method)(f"{server.url}{path}", timeout=10, **kwargs)
        assert (r.status_code, r.json()["error"]) == (status, code), (path, r.text)
        assert "Traceback" not in r.text and r.json()["detail"]
    assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
    spec = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    assert {"/v1/similar/{product_id}", "/v1/similar", "/readyz"} <= set(spec["paths"])
    assert requests.get(f"{server.url}/docs", timeout=5).status_code == 200


def test_page_shows_a_products_neighbours_as_pictures(tmp_path):
    require_browser()
    storage = LocalStorage(tmp_path / "storage")
    for category, n in zip(CATEGORIES, (24, 12), strict=True):
        ids = day_ids(category, DAY1, n)
        publish_day(storage, category, DAY1, ids)
        store_images(storage, category, DAY1, ids)
    config = write_config(tmp_path, str(tmp_path / "storage"))
    server = Server(config, tmp_path / "cache", tmp_path / "logs")
    browser = Browser(tmp_path / "logs")
    try:
        from selenium.webdriver.common.by import By

        d = browser.driver
        d.get(server.url + "/")
        browser.until(lambda dr: dr.find_element(By.ID, "product").get_attribute("value"))
        field = d.find_element(By.ID, "product")
        field.clear()
        field.send_keys("tops-2026-11-01-005")
        browser.button("Show neighbours").click()
        loaded = (
            "return [...document.querySelectorAll('#results img, #query img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        browser.until(lambda dr: dr.execute_script(loaded) == 9)  # the query + k=8 neighbours
        captions = [f.text for f in d.find_elements(By.CSS_SELECTOR, "#results figcaption")]
        assert len(captions) == 8 and all("tops" in c and "distance" in c for c in captions)
        assert "tops-2026-11-01-005" not in " ".join(captions)
        assert "8 neighbours from tops" in d.find_element(By.ID, "status").text
        shot = tmp_path / "serving-page.png"
        d.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        field.clear()
        field.send_keys("nobody")
        browser.button("Show neighbours").click()
        browser.until(lambda dr: "in no served index" in dr.find_element(By.ID, "status").text)
    finally:
        browser.close()
        server.service.stop()
