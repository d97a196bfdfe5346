"""A deterministic synthetic fashion catalog: the platform's embedded default data (Dagster-free).

Product pictures are drawn with PIL: one silhouette per category, filled with a coloured pattern
on a light background. `generate_catalog` writes `catalog.csv` plus `images/*.jpg`; with
`include_bad` it also writes the broken rows the platform must quarantine on its own.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from PIL import Image, ImageChops, ImageColor, ImageDraw, ImageFilter

from image_search_assets.demo.shapes import CATEGORIES as CATEGORIES
from image_search_assets.demo.shapes import PALETTE as PALETTE
from image_search_assets.demo.shapes import silhouette

DEFAULT_MIX = {"tops": 8, "pants": 4}
OTHER_PER_DAY = 2
UNKNOWN_CATEGORY = "spacesuits"
CSV_COLUMNS = ("product_id", "category", "image_url", "added_at", "colour", "pattern")
PATTERNS = ("solid", "stripes", "dots", "checks")
BAD_KINDS = (
    "unknown_category",
    "duplicate_id",
    "empty_url",
    "unparseable_added_at",
    "truncated_image",
    "not_an_image",
)
# How good rows spell added_at, cycled per day, so every accepted form is exercised.
_FORMS = ("offset", "offset", "offset", "naive", "offset", "utc", "offset")


@dataclass(frozen=True)
class SyntheticProduct:
    """One catalog row, as written to the CSV (image_relpath is the image_url column)."""

    product_id: str
    category: str
    colour: str
    pattern: str
    added_at: str
    image_relpath: str


def daily_mix(categories: Sequence[str]) -> dict[str, int]:
    """Products per day for each category: DEFAULT_MIX, else OTHER_PER_DAY."""
    return {c: DEFAULT_MIX.get(c, OTHER_PER_DAY) for c in categories}


def _pattern_fill(
    base: tuple[int, ...], pattern: str, rng: random.Random, size: int
) -> Image.Image:
    # The pattern covers the whole frame; the caller pastes it through the silhouette mask.
    img = Image.new("RGB", (size, size), base)
    light = 0.299 * base[0] + 0.587 * base[1] + 0.114 * base[2] > 140
    second = tuple(int(c * 0.45) if light else int(c + (255 - c) * 0.65) for c in base)
    period = max(4, int(size * rng.uniform(0.05, 0.12)))
    draw, half, vertical = ImageDraw.Draw(img), period // 2, rng.random() < 0.5
    for a in range(0, size, period):
        if pattern == "stripes":
            draw.rectangle((a, 0, a + half, size) if vertical else (0, a, size, a + half), second)
        for b in range(0, size, period):
            if pattern == "dots":
                q, r = half // 2, 3 * half // 2
                draw.ellipse((a + q, b + q, a + r, b + r), second)
            elif pattern == "checks" and (a + b) // period % 2:
                draw.rectangle((a, b, a + period - 1, b + period - 1), second)
    return img


def draw_product(
    category: str, colour: str, pattern: str, rng: random.Random, size: int = 256
) -> Image.Image:
    """An RGB size x size picture of one product; colour is a PALETTE name or any PIL colour."""
    return draw_product_with_box(category, colour, pattern, rng, size)[0]


def draw_product_with_box(
    category: str, colour: str, pattern: str, rng: random.Random, size: int = 256
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """`draw_product` plus the product's box (x1, y1, x2, y2), outline included: ground truth
    for training the demo detector."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    base = PALETTE.get(colour) or ImageColor.getrgb(colour)[:3]
    bg = tuple(rng.randint(205, 245) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    if rng.random() < 1 / 3:  # faint speckle, like paper or a studio backdrop
        draw, dark = ImageDraw.Draw(img), tuple(c - 14 for c in bg)
        for _ in range(size * size // 64):
            draw.point((rng.randrange(size), rng.randrange(size)), dark)
    box = max(8, int(size * rng.uniform(0.5, 0.9)))
    shape = silhouette(category, box)
    if rng.random() < 0.5:
        shape = shape.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mask = Image.new("L", (size, size), 0)
    mask.paste(shape, (rng.randint(0, size - box), rng.randint(0, size - box)))
    img.paste(_pattern_fill(base, pattern, rng, size), (0, 0), mask)
    # A darker outline keeps white and pale products visible on the light background.
    edge = ImageChops.subtract(mask.filter(ImageFilter.MaxFilter(3)), mask)
    img.paste(tuple(c // 2 for c in base), (0, 0, size, size), edge)
    return img, ImageChops.add(mask, edge).getbbox() or (0, 0, size, size)


def _collection(seed: int, category: str, looks: int) -> list[tuple[str, str]]:
    every = [(c, p) for c in PALETTE for p in PATTERNS]
    return random.Random(f"{seed}:collection:{category}").sample(every, min(looks, len(every)))


def read_looks(csv_path: str | Path) -> dict[str, tuple[str, str]]:
    """product id -> (colour, pattern) from a generated catalog.csv; a re-sent id keeps its
    first row's look (the one indexed: the platform quarantines the later duplicate)."""
    looks: dict[str, tuple[str, str]] = {}
    with Path(csv_path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            looks.setdefault(row["product_id"], (row["colour"], row["pattern"]))
    return looks


def generate_catalog(
    out_dir: str | Path,
    categories: Sequence[str],
    start_date: date,
    days: int = 4,
    *,
    seed: int = 0,
    image_size: int = 256,
    timezone: str = "Asia/Tokyo",
    include_bad: bool = True,
    mix: Mapping[str, int] | None = None,
    looks: int | None = None,
) -> Path:
    """Writes out_dir/catalog.csv and out_dir/images/*.jpg; returns the CSV path.

    `mix` overrides the per-day count of the categories it names (0 drops one). `looks` limits
    each category to that many colour x pattern looks (a season's collection, drawn per
    category from the seed), so that "similar items" exist to be found; each product is still
    drawn with its own size, position and background. None draws every look freely.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    counts = daily_mix(categories)
    for cat, n in (mix or {}).items():
        if cat not in counts:
            raise ValueError(f"mix names {cat!r}, which is not among the categories")
        counts[cat] = n
    zone, rows = ZoneInfo(timezone), []
    collections = {c: _collection(seed, c, looks) for c in counts} if looks else {}
    first_cat = categories[0] if categories else "tops"

    def add(pid, cat, day, form="offset", kind="jpeg", key=None, minute=None, name=None):
        # Each row's RNG is keyed by seed and id alone, so rows never depend on each other.
        rng = random.Random(f"{seed}:{key or pid}")
        colour, pattern = rng.choice(list(PALETTE)), rng.choice(PATTERNS)
        if cat in collections:
            colour, pattern = random.Random(f"{seed}:{key or pid}:look").choice(collections[cat])
        m = rng.randrange(30, 23 * 60 + 31, 5) if minute is None else minute
        local = datetime.combine(day, time(m // 60, m % 60), zone)
        added_at = {
            "offset": local.isoformat(),
            "naive": local.replace(tzinfo=None).isoformat(" "),
            "utc": local.astimezone(UTC).isoformat(),
        }.get(form, "not-a-date")
        url = "" if kind == "no_url" else f"images/{name or pid}.jpg"
        if kind == "text":
            (out / url).write_bytes(b"this is a text file, not a JPEG\n")
        elif url:
            buf = io.BytesIO()
            draw_product(cat, colour, pattern, rng, image_size).save(buf, "JPEG", quality=90)
            data = buf.getvalue()
            (out / url).write_bytes(data[:300] if kind == "truncated" else data)
        rows.append(SyntheticProduct(pid, cat, colour, pattern, added_at, url))

    for d in range(days):
        day = start_date + timedelta(days=d)
        good = [(c, f"p{d:02d}-{c}-{n:03d}") for c, k in counts.items() for n in range(k)]
        for i, (cat, pid) in enumerate(good):
            add(pid, cat, day, form=_FORMS[i % len(_FORMS)])
        if not include_bad:
            continue
        bad = f"bad-p{d:02d}"
        add(f"{bad}-unknown-category", UNKNOWN_CATEGORY, day)
        if good:  # same id as the day's first product, with a different picture
            cat, pid = good[0]
            add(pid, cat, day, key=f"{pid}:dup", name=f"{pid}-dup")
        add(f"{bad}-empty-url", first_cat, day, kind="no_url")
        if d == 0:  # a row with no date cannot belong to any day, so only day 0 carries it
            add(f"{bad}-unparseable-added-at", first_cat, day, form="bad")
        add(f"{bad}-truncated-image", first_cat, day, kind="truncated")
        add(f"{bad}-not-an-image", first_cat, day, kind="text")
        # Fine, but tricky: 00:30 local written in UTC lands on the previous UTC calendar day.
        add(f"p{d:02d}-{first_cat}-edge", first_cat, day, form="utc", minute=30)

    csv_path = out / "catalog.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer: csv.DictWriter[str] = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            fields = asdict(row)
            fields["image_url"] = fields.pop("image_relpath")
            writer.writerow(fields)
    return csv_path
