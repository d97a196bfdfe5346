"""A PNG contact sheet: the query image beside its neighbours, each captioned (Dagster-free)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

TILE = 160
PAD = 10
CAPTION_LINES = 3
LINE_H = 16
TITLE_H = 30
QUERY_COLOUR = (200, 40, 40)
FRAME_COLOUR = (190, 190, 190)


@dataclass(frozen=True)
class Tile:
    image: bytes | None  # encoded image; None draws a "no image" placeholder
    lines: tuple[str, ...]  # caption, at most CAPTION_LINES lines
    highlight: bool = False


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bundled font: no system font needed, same output everywhere.
    return ImageFont.load_default(size=size)


def _thumbnail(data: bytes | None) -> Image.Image:
    canvas = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    if data is None:
        ImageDraw.Draw(canvas).text((PAD, TILE // 2 - 8), "no image", fill=(120, 120, 120))
        return canvas
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((TILE, TILE))
        canvas.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` cut with an ellipsis so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render(title: str, tiles: Sequence[Tile], columns: int = 5) -> Image.Image:
    """The tiles on a grid, `columns` wide, under a title line."""
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = TILE + PAD, TILE + CAPTION_LINES * LINE_H + 2 * PAD
    sheet = Image.new(
        "RGB", (PAD + columns * cell_w, TITLE_H + rows * cell_h + PAD), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 6), _fit(draw, title, _font(16), sheet.width - 2 * PAD), fill=0, font=_font(16))
    small = _font(12)
    for i, tile in enumerate(tiles):
        x = PAD + (i % columns) * cell_w
        y = TITLE_H + (i // columns) * cell_h
        sheet.paste(_thumbnail(tile.image), (x, y))
        colour, width = (QUERY_COLOUR, 4) if tile.highlight else (FRAME_COLOUR, 1)
        draw.rectangle((x - 1, y - 1, x + TILE, y + TILE), outline=colour, width=width)
        for n, line in enumerate(tile.lines[:CAPTION_LINES]):
            draw.text(
                (x, y + TILE + 4 + n * LINE_H),
                _fit(draw, line, small, TILE),
                fill=QUERY_COLOUR if tile.highlight and n == 0 else (30, 30, 30),
                font=small,
            )
    return sheet


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
