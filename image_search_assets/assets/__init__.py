"""Asset factories: the day's ingest, and one detect → embed → index chain per category."""

from .category import category_assets
from .ingest import ingest_assets

__all__ = ["category_assets", "ingest_assets"]
