"""Asset factories: the day's ingest, and one detect → embed → index chain per category."""

from image_search_assets.assets.category import category_assets
from image_search_assets.assets.ingest import ingest_assets

__all__ = ["category_assets", "ingest_assets"]
