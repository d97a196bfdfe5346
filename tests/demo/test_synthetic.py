"""Tests for the synthetic catalog generator: determinism, mix, images, dates and bad rows."""

from __future__ import annotations

import csv
import random
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from PIL import Image

from image_search_assets.demo.synthetic import (
    BAD_KINDS,
    CATEGORIES,
    CSV_COLUMNS,
    DEFAULT_MIX,
    OTHER_PER_DAY,
    PALETTE,
    daily_mix,
    draw_product,
    generate_catalog,
    read_looks,
)

START = date(2026, 11, 1)
TOKYO = ZoneInfo("Asia/Tokyo")
SMALL = ("tops", "pants", "hats", "jumpsuits")  # jumpsuits: not a built-in silhouette


def _generate(out: Path, categories=SMALL, **kwargs) -> list[dict[str, str]]:
    kwargs = {"days": 2, "image_size": 64, **kwargs}
    csv_path = generate_catalog(out, categories, START, **kwargs)
    assert csv_path == out / "catalog.csv"
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def _day(product_id: str) -> int:
    return int(product_id.removeprefix("bad-").split("-")[0][1:])


def _is_good(row: dict[str, str]) -> bool:
    return not row["product_id"].startswith("bad-") and not row["image_url"].endswith("-dup.jpg")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = _generate(tmp_path / "a", CATEGORIES)
    _generate(tmp_path / "b", CATEGORIES)
    c = _generate(tmp_path / "c", CATEGORIES, seed=1)
    assert (tmp_path / "a/catalog.csv").read_bytes() == (tmp_path / "b/catalog.csv").read_bytes()
    files = sorted(p.name for p in (tmp_path / "a/images").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b/images").iterdir())
    for name in files:
        assert (tmp_path / "a/images" / name).read_bytes() == (
            tmp_path / "b/images" / name
        ).read_bytes()
    assert a != c


def test_daily_mix_and_counts_per_day(tmp_path):
    assert daily_mix(["tops", "pants", "hats"]) == {"tops": 8, "pants": 4, "hats": OTHER_PER_DAY}
    assert DEFAULT_MIX == {"tops": 8, "pants": 4}
    rows = _generate(tmp_path, include_bad=False)
    counts = Counter((_day(r["product_id"]), r["category"]) for r in rows)
    expected = daily_mix(SMALL)
    assert counts == {(d, c): n for d in range(2) for c, n in expected.items()}
    assert len({r["product_id"] for r in rows}) == len(rows)

    rows = _generate(tmp_path / "mix", mix={"tops": 1, "hats": 0}, days=1, include_bad=False)
    assert Counter(r["category"] for r in rows) == {"tops": 1, "pants": 4, "jumpsuits": 2}
    with pytest.raises(ValueError, match="shoes"):
        _generate(tmp_path / "typo", mix={"shoes": 3})


def test_every_good_image_decodes_at_the_requested_size(tmp_path):
    rows = _generate(tmp_path)
    good = [r for r in rows if _is_good(r)]
    assert len(good) == 2 * (sum(daily_mix(SMALL).values()) + 1)  # +1: the fine "edge" row
    for row in good:
        assert row["image_url"] == f"images/{row['product_id']}.jpg"
        assert row["colour"] in PALETTE
        with Image.open(tmp_path / row["image_url"]) as im:
            im.load()
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))


def test_added_at_falls_on_its_tokyo_day_in_every_form(tmp_path):
    rows = _generate(tmp_path)
    forms = set()
    for row in rows:
        if row["added_at"] == "not-a-date":
            continue
        stamp = datetime.fromisoformat(row["added_at"])
        forms.add("naive" if stamp.tzinfo is None else stamp.utcoffset())
        local = stamp.replace(tzinfo=TOKYO) if stamp.tzinfo is None else stamp.astimezone(TOKYO)
        assert local.date() == START + timedelta(days=_day(row["product_id"])), row
    assert forms == {"naive", timedelta(hours=9), timedelta(0)}
    # The edge row is fine only when bucketed by Tokyo date: its UTC date is the day before.
    edge = next(r for r in rows if r["product_id"] == "p00-tops-edge")
    assert edge["added_at"] == "2026-10-31T15:30:00+00:00"


def test_bad_rows_are_present_only_when_asked_for(tmp_path):
    rows = _generate(tmp_path)
    for d in range(2):
        day_rows = [r for r in rows if _day(r["product_id"]) == d]
        bad = {r["product_id"] for r in day_rows if r["product_id"].startswith("bad-")}
        kinds = set(BAD_KINDS) - {"duplicate_id"} - ({"unparseable_added_at"} if d else set())
        assert bad == {f"bad-p{d:02d}-{k.replace('_', '-')}" for k in kinds}
        ids = Counter(r["product_id"] for r in day_rows)
        assert [pid for pid, n in ids.items() if n > 1] == [f"p{d:02d}-tops-000"]
    by_id = {r["product_id"]: r for r in rows}
    assert by_id["bad-p00-unknown-category"]["category"] == "spacesuits"
    assert by_id["bad-p01-empty-url"]["image_url"] == ""
    assert by_id["bad-p00-unparseable-added-at"]["added_at"] == "not-a-date"
    for pid in [f"bad-p{d:02d}-{k}" for d in range(2) for k in ("truncated-image", "not-an-image")]:
        # PIL's UnidentifiedImageError is an OSError too.
        with pytest.raises(OSError), Image.open(tmp_path / by_id[pid]["image_url"]) as im:
            im.load()
    assert (tmp_path / by_id["bad-p00-truncated-image"]["image_url"]).stat().st_size == 300

    clean = _generate(tmp_path / "clean", include_bad=False)
    assert all(_is_good(r) and "edge" not in r["product_id"] for r in clean)
    assert "not-a-date" not in {r["added_at"] for r in clean}


def test_looks_limit_each_category_to_a_collection_and_change_nothing_else(tmp_path):
    free = _generate(tmp_path / "free", days=3, include_bad=False)
    limited = _generate(tmp_path / "looks", days=3, include_bad=False, looks=2)
    per_category: dict[str, set] = {}
    for row in limited:
        per_category.setdefault(row["category"], set()).add((row["colour"], row["pattern"]))
    assert set(per_category) == set(SMALL) and all(len(s) <= 2 for s in per_category.values())
    assert len(per_category["tops"]) == 2  # 24 tops over 2 looks: both appear

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("colour", "pattern")} for r in rows]

    assert strip(free) == strip(limited)  # same ids, dates and files: only the looks differ
    again = _generate(tmp_path / "again", days=3, include_bad=False, looks=2)
    assert again == limited


def test_read_looks_keeps_the_first_row_of_a_re_sent_id(tmp_path):
    rows = _generate(tmp_path, days=1, looks=2)
    looks = read_looks(tmp_path / "catalog.csv")
    first = next(r for r in rows if r["product_id"] == "p00-tops-000")  # the indexed one
    assert looks["p00-tops-000"] == (first["colour"], first["pattern"])
    assert set(looks) == {r["product_id"] for r in rows}


def test_colours_change_the_silhouette_not_the_geometry():
    def draw(colour: str) -> np.ndarray:
        return np.asarray(draw_product("tops", colour, "solid", random.Random(7), 128), float)

    red, blue = draw("red"), draw("blue")
    inside = np.abs(red - blue).sum(axis=2) > 60  # pixels that only the colour changed
    assert inside.mean() > 0.1
    mean_red, mean_blue = red[inside].mean(axis=0), blue[inside].mean(axis=0)
    assert mean_red[0] > mean_red[2] + 100 and mean_blue[2] > mean_blue[0] + 100
    assert np.abs(mean_red - np.array(PALETTE["red"])).max() < 20
    assert draw("navy").shape == (128, 128, 3)  # any PIL colour name works too


def test_unknown_category_falls_back_to_a_generic_silhouette():
    def draw(category: str) -> Image.Image:
        return draw_product(category, "green", "checks", random.Random(3), 96)

    assert draw("jumpsuits").mode == "RGB" and draw("jumpsuits").size == (96, 96)
    assert draw("jumpsuits").tobytes() == draw("spacesuits").tobytes()
    assert draw("jumpsuits").tobytes() != draw("tops").tobytes()
    with pytest.raises(ValueError, match="pattern"):
        draw_product("tops", "red", "paisley", random.Random(0))
