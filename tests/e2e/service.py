"""A served platform for the serving tests: its config, what a day leaves, the service process.

The service runs as a real `image-search serve` process on 127.0.0.1 over a local directory or
a bucket on the in-process GCS emulator; `DailyPlatform` materialises days through Dagster.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import requests
import yaml
from PIL import Image

from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import GCSStorage, LocalStorage, Storage
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.serving.reader import image_key
from resources import StorageResource
from tests.conftest import START, small_settings
from tests.e2e.harness import Service, free_port, platform_env, wait_for

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
    def __init__(self, config: Path, cache: Path, log_dir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--poll-interval", "0.2", "--cache-dir", str(cache), *args]
        self.service = Service("serve", argv, platform_env(config, **env), log_dir)
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


def storage_root(request, tmp_path) -> tuple[Storage, str]:
    """A local directory, or a bucket on the in-process GCS emulator: (storage, root URI)."""
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
    return storage, root


class DailyPlatform:
    """Two categories of a tiny synthetic catalog, materialised day by day by the daily job."""

    def __init__(self, tmp_path: Path, root: str) -> None:
        catalog = generate_catalog(
            tmp_path / "catalog",
            CATEGORIES,
            START,
            days=2,
            image_size=48,
            mix={"tops": 10, "pants": 8},
            include_bad=False,
        )
        base = small_settings(root, str(catalog))
        self.settings = base.with_overrides(
            categories=tuple(base.category(c) for c in CATEGORIES),
            gcp_project="test" if root.startswith("gs://") else None,
        )
        self.storage = StorageResource(root=root, gcp_project=self.settings.gcp_project).open()
        self.job = build_definitions(self.settings).resolve_job_def(DAILY_JOB)
        home = tmp_path / "dagster_home"
        home.mkdir()
        self.instance = dg.DagsterInstance.local_temp(str(home))  # SQLite storage

    def materialise(self, day: str) -> None:
        result = self.job.execute_in_process(partition_key=day, instance=self.instance)
        assert result.success

    def current(self, category: str) -> str:
        return self.storage.read_json(f"indexes/{category}/CURRENT.json")["version"]


def served_products(server: Server) -> dict[str, list[str]]:
    return requests.get(f"{server.url}/v1/products", params={"limit": 1000}, timeout=5).json()
