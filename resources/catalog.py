"""Catalog source and image fetching resources."""

from datetime import date
from zoneinfo import ZoneInfo

import dagster as dg

from image_search_assets.core.ingest.catalog import CatalogDay, read_catalog, select_day
from image_search_assets.core.ingest.fetch import FetchPolicy
from image_search_assets.settings import FetchConfig
from resources.storage import StorageResource


class CatalogResource(dg.ConfigurableResource):
    """The product catalog (CSV or Parquet, local or gs://) and the zone days are cut in."""

    uri: str
    timezone: str = "Asia/Tokyo"
    storage: dg.ResourceDependency[StorageResource]

    def day(self, day: date, categories: list[str]) -> CatalogDay:
        table = read_catalog(self.uri, self.storage.read_gs)
        return select_day(
            table, day, tz=ZoneInfo(self.timezone), categories=categories, catalog_uri=self.uri
        )


class ImageFetchResource(dg.ConfigurableResource):
    """Limits and the private-address allowlist for fetching product images."""

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    workers: int = 8
    allow_private_hosts: list[str] = []

    @classmethod
    def from_config(cls, cfg: FetchConfig) -> "ImageFetchResource":
        return cls(
            timeout_s=cfg.timeout_s,
            max_bytes=cfg.max_bytes,
            max_pixels=cfg.max_pixels,
            workers=cfg.workers,
            allow_private_hosts=list(cfg.allow_private_hosts),
        )

    def policy(self) -> FetchPolicy:
        return FetchPolicy(
            timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            allow_private_hosts=tuple(self.allow_private_hosts),
        )
