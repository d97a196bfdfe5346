"""`image-search query` through the reader: a real process, no torch for a product query."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from image_search_assets.core.storage import LocalStorage
from tests.e2e.harness import platform_env, run_command
from tests.e2e.service import CATEGORIES, DAY1, store_images, write_config
from tests.serving.conftest import day_ids, publish_day

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "image-search")
# A product query stays under a second by never importing these (pandas alone is ~0.5 s).
HEAVY = ("torch", "dagster", "pandas", "matplotlib")


def test_product_query_lists_neighbours_and_writes_the_sheet_without_heavy_imports(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    for category, n in zip(CATEGORIES, (30, 20), strict=True):
        ids = day_ids(category, DAY1, n)
        publish_day(storage, category, DAY1, ids)
        store_images(storage, category, DAY1, ids)
    env = platform_env(write_config(tmp_path, str(tmp_path / "storage")))
    out = tmp_path / "q" / "page.html"
    pid, k = day_ids("pants", DAY1, 5)[4], 4
    args = ["query", "--product-id", pid, "-k", str(k), "--out", str(out)]
    code = (
        f"import sys\nfrom image_search_assets.cli import main\nHEAVY = {HEAVY!r}\n"
        f"main({args!r})\n"
        "print('loaded:', sorted(m for m in HEAVY if m in sys.modules))\n"
    )
    run = run_command([sys.executable, "-c", code], env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    listed = re.findall(r"^\s+\d+\. (\S+)\s+(\S+)\s+distance ([\d.]+)$", run.stdout, re.M)
    assert len(listed) == k and {c for _, c, _ in listed} == {"pants"}
    assert pid not in [p for p, _, _ in listed]
    assert [float(d) for *_, d in listed] == sorted(float(d) for *_, d in listed)
    assert "loaded: []" in run.stdout
    page = out.read_text()
    assert all(p in page for p, _, _ in listed) and page.count("data:image/jpeg;base64,") == k + 1
    with Image.open(out.with_suffix(".png")) as sheet:
        assert sheet.format == "PNG"

    unknown = run_command([CLI, "query", "--product-id", "nobody", "--out", str(out)], env, 120)
    assert unknown.returncode != 0 and "in no served index" in unknown.stderr
