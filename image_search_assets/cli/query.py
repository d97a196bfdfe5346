"""Reading the published indexes: `image-search query` renders neighbours, `serve` answers HTTP.

Neither Dagster nor torch for a product query: the reader maps the published files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from image_search_assets.settings import Settings, load_settings


def cmd_query(args: argparse.Namespace) -> int:
    # Neither Dagster nor torch for a product query: the reader maps the published files.
    from dataclasses import replace

    from image_search_assets.core.index import query
    from image_search_assets.serving import IndexReader, NotReady, UnknownProduct
    from image_search_assets.serving.service import cache_dir, open_platform_storage

    settings = load_settings()
    storage = open_platform_storage(settings)
    reader = IndexReader(storage, settings.category_names, cache_dir=cache_dir())
    with reader.start(background=False) as served:
        try:
            answer, title, image = _query_answer(served, args, settings)
        except NotReady:
            raise SystemExit(
                "no index has been published yet: run `image-search demo` first"
            ) from None
        except UnknownProduct:
            raise SystemExit(f"product {args.product_id!r} is in no served index") from None
        results = [replace(n, image_key=served.image_key(n.product_id)) for n in answer.neighbours]
    for rank, n in enumerate(results, 1):
        print(f"{rank:>3}. {n.product_id:<28} {n.category:<10} distance {n.distance:.4f}")
    page = query.write_html(Path(args.out), title, image, results, storage)
    caption = f"query: {args.product_id or Path(args.image).name}"
    sheet = query.write_png(page.with_suffix(".png"), title, image, results, storage, caption)
    print(f"wrote {page} and {sheet}")
    return 0


def _query_answer(reader, args: argparse.Namespace, settings: Settings):
    """(answer, page title, query image bytes) of a product-id or an image-file query."""
    if args.product_id:
        category, _ = reader.vector_of(args.product_id)
        title = f"Neighbours of {args.product_id} ({category})"
        key = reader.image_key(args.product_id)
        image = reader.storage.read_bytes(key) if key and reader.storage.exists(key) else None
        if args.category in (None, category):
            return reader.similar_to_product(args.product_id, args.k), title, image
        _, vector = reader.vector_of(args.product_id)
        return reader.similar_to_vector(vector, args.k, [args.category]), title, image
    from image_search_assets.serving.embedder import embed_upload

    image = Path(args.image).read_bytes()
    vector = embed_upload(settings, image)
    categories = [args.category] if args.category else None
    return (
        reader.similar_to_vector(vector, args.k, categories),
        f"Neighbours of {args.image}",
        image,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from image_search_assets.serving.limits import from_args
    from image_search_assets.serving.service import cache_dir, serve

    serve(
        load_settings(),
        host=args.host,
        port=args.port,
        poll_interval_s=args.poll_interval,
        cache=cache_dir(args.cache_dir),
        limits=from_args(args),
    )
    return 0
