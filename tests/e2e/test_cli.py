"""`image-search demo` and `query` as a person runs them: real processes, real output files."""

import csv
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from PIL import Image

from image_search_assets.core.index.contact_sheet import QUERY_COLOUR
from image_search_assets.demo.synthetic import read_looks
from image_search_assets.settings import DEFAULT_CONFIG
from tests.e2e.harness import platform_env, run_command, today_in_zone

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "image-search")


def packaged_platform(root: Path, start) -> Path:
    """The packaged platform.yaml (every category, the demo weights) pointed at `root`."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["partitions"]["start_date"] = start.isoformat()
    config["storage_root"] = str(root / "storage")
    config["catalog"] = str(root / "catalog" / "catalog.csv")
    config["models"]["device"] = "cpu"
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_demo_shows_progress_and_query_finds_look_alikes_with_the_demo_weights(tmp_path):
    start = today_in_zone() - timedelta(days=2)
    config = packaged_platform(tmp_path, start)
    env = platform_env(config, DAGSTER_HOME=str(tmp_path / "home"))

    demo = run_command([CLI, "demo", "--days", "2"], env, timeout=400)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert re.search(r"days: 100%.*2/2", demo.stderr)  # tqdm writes its bars to stderr
    assert re.search(rf"{start} steps: .*\d+/106", demo.stderr)  # 2 ingest + 13 x (3 + 5 checks)
    assert f"Report for {start + timedelta(days=1)}" in demo.stdout
    product = re.search(r"image-search query --product-id (\S+)", demo.stdout).group(1)

    out = tmp_path / "query" / "page.html"
    k = 4
    query = run_command(
        [CLI, "query", "--product-id", product, "-k", str(k), "--out", str(out)],
        env,
        timeout=200,
    )
    assert query.returncode == 0, query.stderr[-3000:]
    listed = re.findall(r"^\s+\d+\. (\S+)\s+(\S+)\s+distance ([\d.]+)$", query.stdout, re.M)
    assert len(listed) == k and all(category == "tops" for _, category, _ in listed)
    assert product not in [pid for pid, _, _ in listed]  # the query is not its neighbour
    assert [float(d) for *_, d in listed] == sorted(float(d) for *_, d in listed)
    assert all(pid in out.read_text() for pid, _, _ in listed)

    # Sensible neighbours: the demo suggests the top with the most look-alikes (same colour and
    # pattern, each drawn at its own size and place); the demo weights rank them first.
    catalog = tmp_path / "catalog" / "catalog.csv"
    with catalog.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "tops"]
    look = read_looks(catalog)
    indexed = {r["product_id"] for r in rows if not r["product_id"].startswith("bad-")}
    alike = sum(look[pid] == look[product] for pid in indexed - {product})
    hits = [look[pid] == look[product] for pid, _, _ in listed]
    print(f"query {product} {look[product]}: {alike} look-alikes, top-{k} hits {hits}")
    assert alike >= 3 and hits[: min(k, alike)] == [True] * min(k, alike)

    with Image.open(out.with_suffix(".png")) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (10 + (k + 1) * 170, 30 + 228 + 10)  # one row: query + k tiles
        assert sheet.convert("RGB").getpixel((10, 35)) == QUERY_COLOUR  # the query's red frame
