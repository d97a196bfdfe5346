"""The demo catalog's colours and silhouettes: one drawing per category, as data (Dagster-free).

A silhouette is a list of PIL drawing ops in a unit box, written one op per line:

    <ImageDraw method> <fill> <x,y> <x,y> ... [start end] [width=W | radius=R]

and a deeper-indented line continues the op above it. Fill 0 cuts a hole (necklines, buckle,
watch hands) so that the shapes read as objects rather than blobs. `width` (lines, arcs) and
`radius` (rounded rectangles) are fractions of the box; `start end` are an arc's or chord's
angles in degrees. Unknown categories (the platform config may name any) get a plain rounded
box.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

PALETTE = {
    "red": (200, 30, 40),
    "blue": (30, 70, 190),
    "green": (40, 140, 60),
    "yellow": (235, 200, 40),
    "black": (25, 25, 25),
    "white": (248, 248, 248),
    "pink": (240, 140, 180),
    "brown": (120, 75, 40),
}

_DRAWINGS = """
tops
  polygon 255 0.34,0.06 0.66,0.06 1,0.26 0.88,0.46 0.78,0.38 0.78,0.96 0.22,0.96 0.22,0.38
    0.12,0.46 0,0.26
  ellipse 0 0.4,-0.04 0.6,0.14
pants
  polygon 255 0.2,0.02 0.8,0.02 0.84,0.98 0.56,0.98 0.5,0.3 0.44,0.98 0.16,0.98
  line 0 0.2,0.1 0.8,0.1 width=0.015
skirts
  rectangle 255 0.33,0.08 0.67,0.16
  polygon 255 0.33,0.17 0.67,0.17 0.92,0.86 0.08,0.86
dresses
  polygon 255 0.36,0.02 0.42,0.02 0.44,0.14 0.56,0.14 0.58,0.02 0.64,0.02 0.66,0.3 0.58,0.44
    0.86,0.98 0.14,0.98 0.42,0.44 0.34,0.3
outerwear
  polygon 255 0.38,0.02 0.62,0.02 0.8,0.08 0.98,0.82 0.86,0.86 0.76,0.42 0.76,0.98 0.24,0.98
    0.24,0.42 0.14,0.86 0.02,0.82 0.2,0.08
  polygon 0 0.42,0.02 0.58,0.02 0.5,0.22
  line 0 0.5,0.22 0.5,0.98 width=0.012
shoes
  polygon 255 0.04,0.86 0.04,0.5 0.12,0.44 0.3,0.52 0.42,0.38 0.5,0.4 0.62,0.54 0.86,0.6 0.86,0.86
  chord 255 0.7,0.58 0.99,1.14 180 360
  line 0 0.04,0.78 0.96,0.78 width=0.015
bags
  arc 255 0.28,0.06 0.72,0.62 180 360 width=0.06
  rounded_rectangle 255 0.1,0.34 0.9,0.94 radius=0.08
hats
  chord 255 0.24,0.14 0.76,1.0 180 360
  ellipse 255 0.02,0.5 0.98,0.72
  line 0 0.25,0.49 0.75,0.49 width=0.015
scarves
  rectangle 255 0.28,0.04 0.72,0.2
  polygon 255 0.3,0.2 0.46,0.2 0.44,0.88 0.28,0.88
  polygon 255 0.54,0.2 0.7,0.2 0.66,0.76 0.5,0.76
  line 255 0.29,0.88 0.29,0.96 width=0.012
  line 255 0.33,0.88 0.33,0.96 width=0.012
  line 255 0.37,0.88 0.37,0.96 width=0.012
  line 255 0.41,0.88 0.41,0.96 width=0.012
  line 255 0.51,0.76 0.51,0.84 width=0.012
  line 255 0.55,0.76 0.55,0.84 width=0.012
  line 255 0.59,0.76 0.59,0.84 width=0.012
  line 255 0.63,0.76 0.63,0.84 width=0.012
socks
  rectangle 255 0.32,0.02 0.6,0.66
  rounded_rectangle 255 0.32,0.56 0.92,0.86 radius=0.14
  line 0 0.32,0.12 0.6,0.12 width=0.015
belts
  rectangle 255 0,0.43 1,0.57
  rectangle 255 0.12,0.34 0.3,0.66
  rectangle 0 0.16,0.39 0.26,0.61
  line 255 0.16,0.5 0.3,0.5 width=0.02
  ellipse 0 0.6,0.48 0.63,0.52
  ellipse 0 0.68,0.48 0.71,0.52
  ellipse 0 0.76,0.48 0.79,0.52
watches
  rectangle 255 0.38,0 0.62,1
  ellipse 255 0.24,0.26 0.76,0.74
  arc 0 0.29,0.31 0.71,0.69 0 360 width=0.015
  line 0 0.5,0.5 0.5,0.35 width=0.025
  line 0 0.5,0.5 0.62,0.5 width=0.025
glasses
  ellipse 255 0.04,0.34 0.44,0.68
  ellipse 255 0.56,0.34 0.96,0.68
  arc 255 0.4,0.38 0.6,0.58 200 340 width=0.03
  line 255 0.04,0.44 0,0.36 width=0.025
  line 255 0.96,0.44 1,0.36 width=0.025
"""
_GENERIC = "rounded_rectangle 255 0.1,0.1 0.9,0.9 radius=0.15"


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _op(line: str) -> tuple[str, int, list[tuple[float, float]], list[float], dict[str, float]]:
    method, fill, *rest = line.split()
    points = [tuple(_number(v) for v in t.split(",")) for t in rest if "," in t]
    named = {k: _number(v) for k, v in (t.split("=") for t in rest if "=" in t)}
    angles = [_number(t) for t in rest if "," not in t and "=" not in t]
    return method, int(fill), points, angles, named  # type: ignore[return-value]


def _drawings(text: str) -> dict[str, list[str]]:
    drawings: dict[str, list[str]] = {}
    for line in text.strip().splitlines():
        if line.startswith("    "):  # the op above, continued
            ops = drawings[next(reversed(drawings))]
            ops[-1] = f"{ops[-1]} {line.strip()}"
        elif line.startswith(" "):
            drawings[next(reversed(drawings))].append(line.strip())
        else:
            drawings[line.strip()] = []
    return drawings


SHAPES = _drawings(_DRAWINGS)
CATEGORIES = tuple(SHAPES)


def silhouette(category: str, box: int) -> Image.Image:
    """The category's silhouette as a box x box mask (255 inside)."""
    shape = Image.new("L", (box, box), 0)
    draw = ImageDraw.Draw(shape)
    for line in SHAPES.get(category, [_GENERIC]):
        method, fill, points, angles, named = _op(line)
        xy = [(x * box, y * box) for x, y in points]
        if "width" in named:
            getattr(draw, method)(xy, *angles, fill=fill, width=max(1, round(named["width"] * box)))
        elif "radius" in named:
            draw.rounded_rectangle(xy, radius=named["radius"] * box, fill=fill)
        else:
            getattr(draw, method)(xy, *angles, fill=fill)
    return shape
