"""Catalog contract: day bucketing in the configured zone, validation, quarantine reasons."""

from datetime import date
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from image_search_assets.core.ingest.catalog import (
    CatalogSchemaError,
    local_day,
    read_catalog,
    resolve_url,
    select_day,
)

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    "added_at,expected",
    [
        ("2026-11-02T00:30:00+09:00", date(2026, 11, 2)),
        ("2026-11-01T15:30:00+00:00", date(2026, 11, 2)),  # 00:30 in Tokyo
        ("2026-11-01T14:59:59Z", date(2026, 11, 1)),  # 23:59:59 in Tokyo
        ("2026-11-02 10:00:00", date(2026, 11, 2)),  # naive: taken in Tokyo
        ("2026-11-02", date(2026, 11, 2)),
        ("not-a-date", None),
    ],
)
def test_local_day_buckets_in_the_configured_zone(added_at, expected):
    assert local_day(added_at, TOKYO) == expected


def _catalog(rows):
    return pd.DataFrame(rows, columns=["product_id", "category", "image_url", "added_at"])


def test_select_day_quarantines_each_kind_of_bad_row_with_its_reason():
    rows = [
        ("p1", "tops", "a.jpg", "2026-11-02T09:00:00+09:00"),
        ("p2", "spacesuits", "b.jpg", "2026-11-02T09:00:00+09:00"),
        ("p1", "tops", "c.jpg", "2026-11-02T10:00:00+09:00"),
        ("p3", "pants", "", "2026-11-02T10:00:00+09:00"),
        ("", "pants", "d.jpg", "2026-11-02T10:00:00+09:00"),
        ("p4", "pants", "e.jpg", "yesterday"),
        ("p5", "pants", "f.jpg", "2026-11-03T09:00:00+09:00"),  # another day: not ours
        ("p6", "pants", "gs://bucket/g.jpg", "2026-11-01T16:00:00Z"),  # 01:00 Tokyo, Nov 2
    ]
    day = select_day(
        _catalog(rows),
        date(2026, 11, 2),
        tz=TOKYO,
        categories=["tops", "pants"],
        catalog_uri="/data/catalog.csv",
    )
    assert day.products["product_id"].tolist() == ["p1", "p6"]
    assert day.products["image_url"].tolist() == ["/data/a.jpg", "gs://bucket/g.jpg"]
    reasons = dict(zip(day.quarantined["reason"], day.quarantined["product_id"], strict=True))
    assert reasons == {
        "unknown_category": "p2",
        "duplicate_product_id": "p1",
        "missing_image_url": "p3",
        "missing_product_id": "",
        "unparseable_added_at": "p4",
    }
    assert set(day.quarantined["stage"]) == {"catalog"}


def test_read_catalog_rejects_a_schema_violation_as_a_whole(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("product_id,category,url\np1,tops,x.jpg\n")
    with pytest.raises(CatalogSchemaError, match="lacks required column"):
        read_catalog(str(path))


def test_read_catalog_names_a_missing_file(tmp_path):
    with pytest.raises(CatalogSchemaError, match="image-search demo"):
        read_catalog(str(tmp_path / "nope.csv"))


def test_read_catalog_parquet_and_csv_agree(tmp_path):
    frame = _catalog([("p1", "tops", "a.jpg", "2026-11-02")])
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    pd.testing.assert_frame_equal(
        read_catalog(str(tmp_path / "c.csv")), read_catalog(str(tmp_path / "c.parquet"))
    )


def test_resolve_url_is_relative_to_the_catalog():
    assert resolve_url("img/a.jpg", "gs://b/cat/catalog.csv") == "gs://b/cat/img/a.jpg"
    assert resolve_url("https://x/a.jpg", "/d/c.csv") == "https://x/a.jpg"
    assert resolve_url("img/a.jpg", "/d/c.csv") == "/d/img/a.jpg"


def _with_removals(rows):
    columns = ["product_id", "category", "image_url", "added_at", "removed_at"]
    return pd.DataFrame(rows, columns=columns)


def test_removed_at_is_bucketed_like_added_at_and_the_later_of_add_and_removal_wins():
    catalog = _with_removals(
        [
            ("a", "tops", "a.jpg", "2026-11-01", "2026-11-02T15:30:00+00:00"),  # 03 in Tokyo
            ("b", "tops", "b.jpg", "2026-11-01", "2026-11-03 08:00:00"),
            ("b", "tops", "b2.jpg", "2026-11-03T09:00:00+09:00", ""),  # re-added later that day
            ("c", "hats", "c.jpg", "2026-11-03T09:00:00+09:00", "2026-11-03T10:00:00+09:00"),
            ("d", "tops", "d.jpg", "2026-11-01", "2026-11-04"),
            ("e", "tops", "e.jpg", "2026-11-03", "soon"),
        ]
    )
    day = select_day(
        catalog, date(2026, 11, 3), tz=TOKYO, categories=["tops", "hats"], catalog_uri="/c.csv"
    )
    assert day.products["product_id"].tolist() == ["b"]
    assert sorted(day.removed["product_id"]) == ["a", "c"]
    assert day.removed.set_index("product_id").loc["c", "category"] == "hats"
    assert day.quarantined["reason"].tolist() == ["unparseable_removed_at"]
    later = select_day(
        catalog, date(2026, 11, 4), tz=TOKYO, categories=["tops", "hats"], catalog_uri="/c.csv"
    )
    assert later.products.empty and later.removed["product_id"].tolist() == ["d"]


def test_a_catalog_without_removed_at_removes_nothing():
    day = select_day(
        _catalog([("a", "tops", "a.jpg", "2026-11-01")]),
        date(2026, 11, 1),
        tz=TOKYO,
        categories=["tops"],
        catalog_uri="/c.csv",
    )
    assert day.products["product_id"].tolist() == ["a"] and day.removed.empty
    assert list(day.removed.columns) == ["product_id", "category", "removed_at"]
