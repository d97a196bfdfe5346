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

DEFAULT_MIX = {"tops": 8, "pants": 4}
OTHER_PER_DAY = 2
UNKNOWN_CATEGORY = "spacesuits"
CSV_COLUMNS = ("product_id", "category", "image_url", "added_at", "colour", "pattern")
PATTERNS = ("solid", "stripes", "dots", "checks")
# fmt: off
PALETTE = {
    "red": (200, 30, 40), "blue": (30, 70, 190), "green": (40, 140, 60), "yellow": (235, 200, 40),
    "black": (25, 25, 25), "white": (248, 248, 248), "pink": (240, 140, 180),
    "brown": (120, 75, 40),
}
BAD_KINDS = ("unknown_category", "duplicate_id", "empty_url", "unparseable_added_at",
             "truncated_image", "not_an_image")

# Silhouettes as drawing ops in a unit box: (ImageDraw method, fill, (x0, y0, x1, y1, ...),
# *extra), the last extra of lines and arcs being their width. Fill 0 cuts a hole (necklines,
# buckle, watch hands) so that the shapes read as objects rather than blobs.
_SHAPES: dict[str, list[tuple]] = {
    "tops": [("polygon", 255, (0.34, 0.06, 0.66, 0.06, 1, 0.26, 0.88, 0.46, 0.78, 0.38, 0.78,
                               0.96, 0.22, 0.96, 0.22, 0.38, 0.12, 0.46, 0, 0.26)),
             ("ellipse", 0, (0.4, -0.04, 0.6, 0.14))],
    "pants": [("polygon", 255, (0.2, 0.02, 0.8, 0.02, 0.84, 0.98, 0.56, 0.98, 0.5, 0.3, 0.44,
                                0.98, 0.16, 0.98)),
              ("line", 0, (0.2, 0.1, 0.8, 0.1), 0.015)],
    "skirts": [("rectangle", 255, (0.33, 0.08, 0.67, 0.16)),
               ("polygon", 255, (0.33, 0.17, 0.67, 0.17, 0.92, 0.86, 0.08, 0.86))],
    "dresses": [("polygon", 255, (0.36, 0.02, 0.42, 0.02, 0.44, 0.14, 0.56, 0.14, 0.58, 0.02,
                                  0.64, 0.02, 0.66, 0.3, 0.58, 0.44, 0.86, 0.98, 0.14, 0.98,
                                  0.42, 0.44, 0.34, 0.3))],
    "outerwear": [("polygon", 255, (0.38, 0.02, 0.62, 0.02, 0.8, 0.08, 0.98, 0.82, 0.86, 0.86,
                                    0.76, 0.42, 0.76, 0.98, 0.24, 0.98, 0.24, 0.42, 0.14, 0.86,
                                    0.02, 0.82, 0.2, 0.08)),
                  ("polygon", 0, (0.42, 0.02, 0.58, 0.02, 0.5, 0.22)),
                  ("line", 0, (0.5, 0.22, 0.5, 0.98), 0.012)],
    "shoes": [("polygon", 255, (0.04, 0.86, 0.04, 0.5, 0.12, 0.44, 0.3, 0.52, 0.42, 0.38, 0.5,
                                0.4, 0.62, 0.54, 0.86, 0.6, 0.86, 0.86)),
              ("chord", 255, (0.7, 0.58, 0.99, 1.14), 180, 360),
              ("line", 0, (0.04, 0.78, 0.96, 0.78), 0.015)],
    "bags": [("arc", 255, (0.28, 0.06, 0.72, 0.62), 180, 360, 0.06),
             ("rounded_rectangle", 255, (0.1, 0.34, 0.9, 0.94), 0.08)],
    "hats": [("chord", 255, (0.24, 0.14, 0.76, 1.0), 180, 360),
             ("ellipse", 255, (0.02, 0.5, 0.98, 0.72)),
             ("line", 0, (0.25, 0.49, 0.75, 0.49), 0.015)],
    "scarves": [("rectangle", 255, (0.28, 0.04, 0.72, 0.2)),
                ("polygon", 255, (0.3, 0.2, 0.46, 0.2, 0.44, 0.88, 0.28, 0.88)),
                ("polygon", 255, (0.54, 0.2, 0.7, 0.2, 0.66, 0.76, 0.5, 0.76)),
                *[("line", 255, (x, 0.88, x, 0.96), 0.012) for x in (0.29, 0.33, 0.37, 0.41)],
                *[("line", 255, (x, 0.76, x, 0.84), 0.012) for x in (0.51, 0.55, 0.59, 0.63)]],
    "socks": [("rectangle", 255, (0.32, 0.02, 0.6, 0.66)),
              ("rounded_rectangle", 255, (0.32, 0.56, 0.92, 0.86), 0.14),
              ("line", 0, (0.32, 0.12, 0.6, 0.12), 0.015)],
    "belts": [("rectangle", 255, (0, 0.43, 1, 0.57)), ("rectangle", 255, (0.12, 0.34, 0.3, 0.66)),
              ("rectangle", 0, (0.16, 0.39, 0.26, 0.61)),
              ("line", 255, (0.16, 0.5, 0.3, 0.5), 0.02),
              *[("ellipse", 0, (x, 0.48, x + 0.03, 0.52)) for x in (0.6, 0.68, 0.76)]],
    "watches": [("rectangle", 255, (0.38, 0, 0.62, 1)), ("ellipse", 255, (0.24, 0.26, 0.76, 0.74)),
                ("arc", 0, (0.29, 0.31, 0.71, 0.69), 0, 360, 0.015),
                ("line", 0, (0.5, 0.5, 0.5, 0.35), 0.025),
                ("line", 0, (0.5, 0.5, 0.62, 0.5), 0.025)],
    "glasses": [("ellipse", 255, (0.04, 0.34, 0.44, 0.68)),
                ("ellipse", 255, (0.56, 0.34, 0.96, 0.68)),
                ("arc", 255, (0.4, 0.38, 0.6, 0.58), 200, 340, 0.03),
                ("line", 255, (0.04, 0.44, 0, 0.36), 0.025),
                ("line", 255, (0.96, 0.44, 1, 0.36), 0.025)],
}
# fmt: on
# Unknown categories (the platform config may name any) get a plain rounded box.
_GENERIC = [("rounded_rectangle", 255, (0.1, 0.1, 0.9, 0.9), 0.15)]
CATEGORIES = tuple(_SHAPES)
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


def _draw_ops(draw: ImageDraw.ImageDraw, ops: list[tuple], s: int) -> None:
    for op, fill, coords, *extra in ops:
        xy = [(x * s, y * s) for x, y in zip(coords[::2], coords[1::2], strict=True)]
        if op in ("line", "arc"):
            getattr(draw, op)(xy, *extra[:-1], fill=fill, width=max(1, round(extra[-1] * s)))
        elif op == "rounded_rectangle":
            draw.rounded_rectangle(xy, radius=extra[0] * s, fill=fill)
        else:
            getattr(draw, op)(xy, *extra, fill=fill)


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
    shape = Image.new("L", (box, box), 0)
    _draw_ops(ImageDraw.Draw(shape), _SHAPES.get(category, _GENERIC), box)
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
