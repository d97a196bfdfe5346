"""A hostile catalog through a real day: dg.materialize of the daily job on a SQLite instance,
with the settings a GKE deployment gets (storage and catalog on the GCS emulator, so
`fetch.local_mode: auto` resolves to strict; gs:// images only under one allow-listed folder).

Each run is a fresh subprocess (this module's `__main__`), so its memory is its own. The peak
RSS of the ingest steps (new_products + product_images) is VmHWM, reset through
/proc/self/clear_refs once the imports are warm (ru_maxrss would carry the forking pytest
process's peak). A baseline run with only the good rows is measured the same way.

Bound: the hostile rows (eight 0.25 MB float TIFF bombs of 6000 x 6600, as many as the fetch
workers, and a 24 MB gs:// object over a 4 MB `fetch.max_bytes`) add under 64 MiB to that peak.
Measured on a 2-core x86 VM: 11 MiB over the imports for the baseline, 13 MiB with the hostile
rows (+2 MiB); with `fetch.max_decode_bytes` raised to 2 GB the bombs decode and add 3265 MiB.
Run with `-s` to print the figures.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageDraw

DAY = "2026-11-01"
CATEGORIES = ("tops", "pants")
MAX_BYTES = 4_000_000
MARGIN_MIB = 64
BOMBS = 8  # as many as the default fetch workers, all in flight at once
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _jpeg(seed: int) -> bytes:
    img = Image.new("RGB", (96, 96), (40 * seed % 256, 90, 200 - 30 * seed % 200))
    ImageDraw.Draw(img).rectangle((20, 16, 76, 84), fill=(250 - 20 * seed, 240, 30 * seed))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _hostile_rows(bucket: str) -> dict[str, tuple[str, str]]:
    """product id -> (image_url, expected quarantine reason)."""
    refused = {
        "passwd": "file:///etc/passwd",
        "environ": "/proc/self/environ",
        "sa-token": TOKEN,
        "relative": "../../etc/shadow",
        "other-bucket": "gs://another-bucket/x.jpg",
        "own-index": f"gs://{bucket}/platform/indexes/tops/CURRENT",
    }
    rows = {pid: (url, "scheme_not_allowed") for pid, url in refused.items()}
    rows["metadata"] = ("https://169.254.169.254/computeMetadata/v1/", "blocked_address")
    rows["oversized"] = (f"gs://{bucket}/images/huge.jpg", "too_large")
    for n in range(BOMBS):
        rows[f"tiff-bomb-{n}"] = (f"gs://{bucket}/images/bomb-{n}.tif", "decompression_bomb")
    return rows


def _stage(bucket_name: str, tmp: Path, hostile: bool) -> tuple[str, dict[str, str]]:
    """Uploads the images and the catalog; returns the catalog URI and the good rows' ids."""
    from google.cloud import storage

    from tests.core.ingest.test_images import float_tiff

    bucket = storage.Client(project="test").bucket(bucket_name)
    good = {f"good-{cat}-{n}": cat for cat in CATEGORIES for n in range(3)}
    rows = []
    for n, (pid, cat) in enumerate(good.items()):
        bucket.blob(f"images/{pid}.jpg").upload_from_string(_jpeg(n))
        rows.append((pid, cat, f"gs://{bucket_name}/images/{pid}.jpg"))
    if hostile:
        bomb = float_tiff(6000, 6600)
        for n in range(BOMBS):
            bucket.blob(f"images/bomb-{n}.tif").upload_from_string(bomb)
        bucket.blob("images/huge.jpg").upload_from_string(_jpeg(0) + b"\0" * 24_000_000)
        for pid, (url, _) in _hostile_rows(bucket_name).items():
            rows.append((pid, "tops", url))
    table = pd.DataFrame(rows, columns=pd.Index(["product_id", "category", "image_url"]))
    table["added_at"] = f"{DAY}T10:00:00"
    name = "catalog-hostile.csv" if hostile else "catalog-good.csv"
    bucket.blob(name).upload_from_string(table.to_csv(index=False))
    return f"gs://{bucket_name}/{name}", good


def _run(spec: dict[str, str]) -> dict:
    """This module's __main__ in a fresh interpreter; returns what it printed."""
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "tests.resilience.test_hostile_run", json.dumps(spec)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.e2e  # real run processes: a baseline day and a hostile day
def test_a_hostile_day_quarantines_every_hostile_row_within_a_memory_bound(
    tmp_path, gcs_bucket
) -> None:
    from image_search_assets.core.index.annoy_index import load_current
    from image_search_assets.core.records import day_report
    from resources import StorageResource

    figures, good_rows = {}, {}
    for kind in ("baseline", "hostile"):
        catalog, good_rows[kind] = _stage(gcs_bucket, tmp_path, hostile=kind == "hostile")
        spec = {
            "root": f"gs://{gcs_bucket}/{kind}",
            "catalog": catalog,
            "bucket": gcs_bucket,
            "dir": str(tmp_path / kind),
        }
        figures[kind] = result = _run(spec)
        assert result["success"] and result["outside_loopback"] == [], result
    grown = figures["hostile"]["step_peak_mib"] - figures["baseline"]["step_peak_mib"]
    print(f"\ningest steps' peak RSS (MiB): {figures}; the hostile rows add {grown} MiB")
    assert grown < MARGIN_MIB

    for kind, good in good_rows.items():
        store = StorageResource(root=f"gs://{gcs_bucket}/{kind}", gcp_project="test").open()
        report = day_report(store, DAY, list(CATEGORIES))
        for cat in CATEGORIES:
            assert report["categories"][cat]["unaccounted"] == [], (kind, cat)
            served = set(load_current(store, cat).ids)
            assert served == {pid for pid, c in good.items() if c == cat}, (kind, cat)
        items = report["categories"]["tops"]["quarantined_items"]
        expected = _hostile_rows(gcs_bucket) if kind == "hostile" else {}
        assert {i["product_id"]: i["reason"] for i in items} == {
            pid: reason for pid, (_, reason) in expected.items()
        }
        assert report["categories"]["pants"]["quarantined"] == 0
        if kind == "hostile":  # the same words whether the file exists on a pod or not
            detail = {i["product_id"]: i["detail"] for i in items}
            assert detail["passwd"] == detail["sa-token"] == detail["environ"]
            # A relative path in a gs:// catalog resolves beside it: a gs:// row, still refused.
            assert detail["relative"] == detail["own-index"]


# The subprocess: one day of the daily job under a GKE-like config, with its memory measured.


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _guard_network() -> list[str]:
    """Records (and refuses) any connect outside 127.0.0.0/8, as tests/net_guard.py does."""
    seen: list[str] = []
    real = socket.socket.connect

    def connect(self, address):
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not host.startswith("127."):
            seen.append(host)
            raise OSError(f"test network guard: no connections to {host}")
        return real(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    return seen


def _main(spec: dict[str, str]) -> None:
    import dagster as dg

    from image_search_assets.settings import parse_settings
    from tests.resilience.helpers import fast_settings, run_day

    outside = _guard_network()
    raw = {
        "categories": [{"name": c} for c in CATEGORIES],
        "storage_root": spec["root"],
        "fetch": {"max_bytes": MAX_BYTES, "gcs_prefixes": [f"{spec['bucket']}/images/"]},
    }
    fetch = parse_settings(raw).fetch  # local_mode auto: strict, as storage is on gs://
    assert not fetch.local_mode and fetch.allowed_schemes == ("https", "gs"), fetch
    base = fast_settings(spec["root"], spec["catalog"])
    settings = base.with_overrides(
        categories=tuple(base.category(c) for c in CATEGORIES), gcp_project="test", fetch=fetch
    )
    ingest = [["new_products"], ["removals"], ["product_images"]]
    Path(spec["dir"]).mkdir(parents=True)
    with dg.DagsterInstance.local_temp(spec["dir"]) as instance:
        run_day(settings, DAY, instance, assets=ingest[:2])  # warm the imports
        before = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            reset = True
        except OSError:
            reset = False
        fetched = run_day(settings, DAY, instance, assets=ingest)
        step_peak = _status_kib("VmHWM")
        day = run_day(settings, DAY, instance)
    figures = {
        "success": fetched.success and day.success,
        "outside_loopback": outside,
        "vmhwm_reset": reset,
        "rss_before_mib": before // 1024,
        "step_peak_mib": (step_peak - before) // 1024,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
