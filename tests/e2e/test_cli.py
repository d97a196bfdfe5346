"""`image-search demo` and `query` as a person runs them: real processes, real output files."""

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from image_search_assets.core.contact_sheet import QUERY_COLOUR

from .harness import platform_env, run_command, today_in_zone, write_platform

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "image-search")


def test_demo_shows_progress_and_query_writes_a_page_and_a_contact_sheet(tmp_path):
    start = today_in_zone() - timedelta(days=2)
    config = write_platform(tmp_path, start, days=0)  # demo writes its own sample catalog
    env = platform_env(config, DAGSTER_HOME=str(tmp_path / "home"))

    demo = run_command([CLI, "demo", "--days", "1"], env, timeout=400)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert re.search(r"days: 100%.*1/1", demo.stderr)  # tqdm writes its bars to stderr
    assert re.search(rf"{start} steps: .*\d+/23", demo.stderr)  # 2 ingest + 3 x (3 + 4 checks)
    assert f"Report for {start}" in demo.stdout

    out = tmp_path / "query" / "page.html"
    k = 4
    query = run_command(
        [CLI, "query", "--product-id", "p00-tops-000", "-k", str(k), "--out", str(out)],
        env,
        timeout=200,
    )
    assert query.returncode == 0, query.stderr[-3000:]
    listed = re.findall(r"^\s+\d+\. (\S+)\s+(\S+)\s+distance ([\d.]+)$", query.stdout, re.M)
    assert len(listed) == k and all(category == "tops" for _, category, _ in listed)
    assert "p00-tops-000" not in [pid for pid, _, _ in listed]  # the query is not its neighbour
    assert [float(d) for *_, d in listed] == sorted(float(d) for *_, d in listed)
    assert all(pid in out.read_text() for pid, _, _ in listed)

    with Image.open(out.with_suffix(".png")) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (10 + (k + 1) * 170, 30 + 228 + 10)  # one row: query + k tiles
        assert sheet.convert("RGB").getpixel((10, 35)) == QUERY_COLOUR  # the query's red frame
