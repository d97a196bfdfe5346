"""A neighbour in an answer, and neighbours rendered as an HTML page and a PNG contact sheet.

The neighbours themselves come from image_search_assets.serving.IndexReader (`image-search
query`, the service); nothing here imports torch or pandas.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from image_search_assets.core.index import contact_sheet
from image_search_assets.core.storage import Storage


@dataclass(frozen=True)
class Neighbour:
    """One found item: what it is, how far, and which version answered."""

    product_id: str
    category: str
    distance: float
    version: str
    image_key: str | None = None  # where its image is stored, once looked up (pages, sheets)


def _data_uri(data: bytes | None) -> str:
    return "" if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _stored_image(storage: Storage, n: Neighbour) -> bytes | None:
    return storage.read_bytes(n.image_key) if n.image_key and storage.exists(n.image_key) else None


def write_html(
    path: Path,
    title: str,
    query_image: bytes | None,
    results: Sequence[Neighbour],
    storage: Storage,
) -> Path:
    """A self-contained page: the query image and its neighbours with ids and distances."""
    cards = []
    for rank, n in enumerate(results, 1):
        data = _stored_image(storage, n)
        cards.append(
            f'<figure><img src="{_data_uri(data)}" alt="{html.escape(n.product_id)}">'
            f"<figcaption>#{rank} <b>{html.escape(n.product_id)}</b><br>"
            f"{html.escape(n.category)} · distance {n.distance:.4f}</figcaption></figure>"
        )
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:.5em;
width:180px;vertical-align:top}} img{{width:180px;height:180px;object-fit:contain;
background:#eee}} .query img{{outline:4px solid #c33}}</style>
<h1>{html.escape(title)}</h1>
<figure class="query"><img src="{_data_uri(query_image)}" alt="query">
<figcaption>query</figcaption></figure><hr>
{"".join(cards)}"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def write_png(
    path: Path,
    title: str,
    query_image: bytes | None,
    results: Sequence[Neighbour],
    storage: Storage,
    query_caption: str = "query",
) -> Path:
    """A contact sheet: the query (framed red), then each neighbour with id, category, distance."""
    tiles = [contact_sheet.Tile(query_image, (query_caption,), highlight=True)]
    tiles += [
        contact_sheet.Tile(
            _stored_image(storage, n),
            (f"#{rank} {n.product_id}", n.category, f"distance {n.distance:.4f}"),
        )
        for rank, n in enumerate(results, 1)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contact_sheet.png_bytes(contact_sheet.render(title, tiles)))
    return path
