"""A real day through the daily job against a fault-injecting image server on 127.0.0.1.

Blocked-address protection is on, with only 127.0.0.1 allowlisted. The day succeeds; every good
or merely odd image is indexed; every bad image or row is quarantined with the right reason;
nothing is unaccounted for; and a quarantined item re-sent on a later day is indexed then.
"""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import dagster as dg
import pytest

from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.records import day_report, format_report
from image_search_assets.settings import FetchConfig
from resources import StorageResource
from tests.resilience.corpus import ITEMS, MAX_BYTES, UNSERVED, FaultyImageServer
from tests.resilience.helpers import fast_settings, run_day, serve

DAY1, DAY2 = "2026-11-01", "2026-11-02"
CATEGORIES = ("tops", "pants", "hats")
RESENT = "bad-500-jpg"  # quarantined on day 1 (the server failed), re-sent on day 2 once it works


def pid_of(path: str) -> str:
    return path.strip("/").replace("/", "-").replace(".", "-")


def closed_port() -> int:
    with socket.socket() as probe:  # free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_catalog(path: Path, server) -> tuple[dict[str, str | None], dict[str, str]]:
    """Day 1's rows (and day 2's re-send); returns expected image and catalog-row verdicts."""
    urls = {pid_of(p): server.url(p) for p in ITEMS}
    urls |= {f"blocked-{i}": url for i, url in enumerate(UNSERVED)}
    urls["unreachable"] = f"http://127.0.0.1:{closed_port()}/a.jpg"
    images = {pid_of(p): reason for p, (_, reason) in ITEMS.items()}
    images |= {f"blocked-{i}": reason for i, reason in enumerate(UNSERVED.values())}
    images["unreachable"] = "unreachable"
    assert len(images) == len(urls) == len(ITEMS) + len(UNSERVED) + 1  # one row per case
    rows = [
        {"product_id": pid, "category": CATEGORIES[i % 3], "image_url": url, "added_at": DAY1}
        for i, (pid, url) in enumerate(urls.items())
    ]
    bad_rows = {
        "row-spacesuit": ("spacesuits", urls["ok-plain-1-jpg"], "unknown_category"),
        "ok-plain-1-jpg": ("tops", urls["ok-plain-2-jpg"], "duplicate_product_id"),
        "row-no-url": ("tops", "", "missing_image_url"),
        "row-no-category": ("", urls["ok-plain-3-jpg"], "missing_category"),
        "": ("pants", urls["ok-plain-3-jpg"], "missing_product_id"),
    }
    for pid, (category, url, _) in bad_rows.items():
        rows.append({"product_id": pid, "category": category, "image_url": url, "added_at": DAY1})
    resent = next(r for r in rows if r["product_id"] == RESENT)
    rows.append({**resent, "added_at": f"{DAY2}T09:30:00+09:00"})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["product_id", "category", "image_url", "added_at"])
        writer.writeheader()
        writer.writerows(rows)
    return images, {pid: reason for pid, (_, _, reason) in bad_rows.items()}


@pytest.fixture
def server():
    with serve(FaultyImageServer) as srv:
        srv.hits, srv.healed = {}, set()
        yield srv


def test_a_day_of_bad_inputs_quarantines_each_with_its_reason(tmp_path, server, connects):
    images, rows = write_catalog(tmp_path / "catalog.csv", server)
    fetch = FetchConfig(
        timeout_s=1.0,
        max_bytes=MAX_BYTES,
        max_pixels=4_000_000,
        workers=8,
        allow_private_hosts=("127.0.0.1",),
        local_mode=True,  # the server is plain http on 127.0.0.1
    )
    settings = fast_settings(str(tmp_path / "storage"), str(tmp_path / "catalog.csv"), fetch=fetch)
    store = StorageResource(root=settings.storage_root).open()
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY1, instance).success
    report = day_report(store, DAY1, CATEGORIES)

    assert {r["product_id"]: r["reason"] for r in report["catalog_quarantine"]} == rows
    items = [i for r in report["categories"].values() for i in r["quarantined_items"]]
    quarantined = {i["product_id"]: i["reason"] for i in items}
    assert quarantined == {pid: reason for pid, reason in images.items() if reason}
    good = {pid for pid, reason in images.items() if reason is None}
    for cat, r in report["categories"].items():
        assert r["unaccounted"] == [] and r["new"] == r["indexed"] + r["quarantined"]
        mine = {pid for i, pid in enumerate(images) if CATEGORIES[i % 3] == cat} & good
        assert set(load_current(store, cat).ids) == mine and r["indexed"] == len(mine)
    assert sum(r["new"] for r in report["categories"].values()) == len(images)
    assert "bad-404-jpg: http_404" in format_report(report)  # what `image-search report` prints

    # Bounded retries: the 500 three times, the flaky one recovered on its second try.
    assert server.hits["/bad/500.jpg"] == 3 and server.hits["/ok/flaky.jpg"] == 2
    assert set(connects) == {"127.0.0.1"}  # 169.254.169.254 and 10.20.30.40 never dialled
    (metadata,) = [i for i in items if i["product_id"] == "bad-to-metadata-jpg"]
    assert "169.254.169.254" in metadata["detail"]  # the redirect target was checked
    shown = store.read_parquet(asset_value_key(["product_images"], DAY1)).set_index("product_id")
    assert tuple(shown.loc["ok-exif-rotated-jpg", ["width", "height"]]) == (64, 40)  # upright

    # Day 2: the server works again and the quarantined product is re-sent: now it is indexed.
    server.healed.add("/bad/500.jpg")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_day(settings, DAY2, instance).success
    again = day_report(store, DAY2, CATEGORIES)
    category = CATEGORIES[list(images).index(RESENT) % 3]
    assert again["categories"][category]["indexed"] == 1
    assert again["categories"][category]["quarantined"] == 0
    served = load_current(store, category).ids
    assert served.count(RESENT) == 1 and len(served) == len(set(served))
