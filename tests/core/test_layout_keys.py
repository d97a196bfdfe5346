"""Storage keys: spelled in core/layout.py alone, and parsed back to what built them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_search_assets.core import layout

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("image_search_assets", "resources", "benchmarks")
HOME = Path("image_search_assets/core/layout.py")
# Key fragments no module but core/layout.py may spell (in code, comments or docstrings).
SPELLED_ONCE = (
    "CURRENT.json",
    "versions/",
    "removals/",
    "indexes/",
    "quarantine/",
    "manifest.json",
    "ids.parquet",
    "partition_scheme.json",
)


def _sources() -> list[Path]:
    return [p.relative_to(ROOT) for d in SOURCES for p in sorted((ROOT / d).rglob("*.py"))]


@pytest.mark.parametrize("fragment", SPELLED_ONCE)
def test_only_the_layout_module_spells_a_storage_key(fragment):
    spelled = [p for p in _sources() if p != HOME and fragment in (ROOT / p).read_text()]
    assert not spelled, f"{fragment!r} is spelled outside core/layout.py: {spelled}"


@pytest.mark.parametrize("fragment", SPELLED_ONCE)
def test_each_fragment_is_really_spelled_where_it_is_allowed(fragment):
    """The rule is not vacuous: the fragment it looks for is the one the keys use."""
    assert fragment in (ROOT / HOME).read_text()


def test_the_layout_module_imports_the_standard_library_alone():
    import ast
    import sys

    tree = ast.parse((ROOT / HOME).read_text())
    imported = {
        (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {*sys.stdlib_module_names, "__future__"}, imported


def test_asset_values_and_their_partitions_round_trip():
    days = ("2026-11-02", "2026-11-01")
    keys = [layout.asset_value_key(["tops", "annoy_index"], d) for d in days]
    assert keys[1] == "assets/tops/annoy_index/2026-11-01.parquet"
    assert keys[0] == layout.live_set_key("tops", "2026-11-02")
    others = [
        layout.asset_value_key(["tops", "embeddings"], "2026-11-03"),  # another asset
        "assets/tops/annoy_index/2026-11-04.tmp",  # not a value
        "assets/tops/annoy_index/nested/2026-11-05.parquet",  # not one partition's value
    ]
    found = layout.partitions_in([*keys, *others], layout.live_set_path("tops"))
    assert found == ["2026-11-01", "2026-11-02"]


def test_image_keys_quote_the_product_id_into_one_segment():
    for pid in ("plain-1", "with space/and?slash", "ünï"):
        key = layout.image_key("2026-11-01", pid)
        assert key.startswith("images/2026-11-01/") and key.endswith(".jpg")
        assert key.count("/") == 2
    assert layout.image_key("2026-11-01", "a/b") == "images/2026-11-01/a%2Fb.jpg"


def test_work_keys_and_their_days():
    prefix = layout.work_prefix("2026-11-01", "tops", "embeddings")
    assert prefix == "work/2026-11-01/tops/embeddings"
    assert prefix.startswith(layout.work_category_prefix("2026-11-01", "tops") + "/")
    assert layout.chunk_key(prefix, "chunk-00003") == f"{prefix}/chunk-00003.parquet"
    assert layout.work_manifest_key(prefix) == f"{prefix}/manifest.json"
    keys = [layout.chunk_key(layout.work_prefix(d, "tops", "s"), "c") for d in ("b", "a", "b")]
    assert layout.work_days(keys) == ["a", "b"]


def test_versions_are_named_by_day_and_creation_and_found_again():
    created = datetime(2026, 11, 1, 12, 30, 5, 123456, tzinfo=UTC)
    version = layout.version_name("2026-11-01", created, "abc123")
    assert version == "2026-11-01.20261101T123005123456Z.abc123"
    assert layout.version_day(version) == "2026-11-01"
    assert layout.version_created(version) == created
    with pytest.raises((IndexError, ValueError)):
        layout.version_created("not-a-version")
    files = [layout.ann_key, layout.ids_key, layout.manifest_key]
    keys = [f("tops", version) for f in files] + [layout.pointer_key("tops")]
    assert keys[-1] == "indexes/tops/CURRENT.json"
    assert keys[2] == f"indexes/tops/versions/{version}/manifest.json"
    listed = [k for k in keys if k.startswith(layout.versions_prefix("tops"))]
    assert layout.version_names(listed, "tops") == {version}
    assert all(k.startswith(layout.category_prefix("tops") + "/") for k in keys)


def test_the_removals_asset_keeps_the_key_its_records_had_before():
    """Every day stored before removals were an asset stays readable by the IO manager."""
    key = layout.asset_value_key([layout.REMOVALS_ASSET], "2026-11-02")
    assert key == layout.removals_key("2026-11-02") == "removals/2026-11-02.parquet"
    listed = [key, layout.removals_key("2026-11-01"), "removals/notes.txt", "removals/x/y.parquet"]
    assert layout.removal_days(listed) == ["2026-11-01", "2026-11-02"]
