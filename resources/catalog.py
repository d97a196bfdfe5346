"""Catalog source and image fetching resources."""

import functools
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from dagster_gcp import GCSResource

from image_search_assets.core.ingest.catalog import CatalogDay, read_catalog, select_day
from image_search_assets.core.ingest.fetch import FetchPolicy
from image_search_assets.core.ingest.images import MemoryBudget
from image_search_assets.core.ingest.url_rules import DEPLOYED_KINDS, UrlRules
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
    """Limits, allowed URL kinds and the private-address allowlist for fetching product images."""

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    workers: int = 8
    allow_private_hosts: list[str] = []
    schemes: list[str] = list(DEPLOYED_KINDS)  # settings.FetchConfig.allowed_schemes
    gcs_prefixes: list[str] = []
    max_decode_bytes: int = 512_000_000
    decode_memory_bytes: int = 2_000_000_000
    gcp_project: str | None = None  # for gs:// image rows (read with a size check first)

    @classmethod
    def from_config(cls, cfg: FetchConfig, gcp_project: str | None = None) -> "ImageFetchResource":
        return cls(
            timeout_s=cfg.timeout_s,
            max_bytes=cfg.max_bytes,
            max_pixels=cfg.max_pixels,
            workers=cfg.workers,
            allow_private_hosts=list(cfg.allow_private_hosts),
            schemes=list(cfg.allowed_schemes),
            gcs_prefixes=list(cfg.gcs_prefixes),
            max_decode_bytes=cfg.max_decode_bytes,
            decode_memory_bytes=cfg.decode_memory_bytes,
            gcp_project=gcp_project,
        )

    def policy(self) -> FetchPolicy:
        """One step's policy: its decode budget is shared by that step's fetch workers."""
        return FetchPolicy(
            timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            allow_private_hosts=tuple(self.allow_private_hosts),
            rules=UrlRules(tuple(self.schemes), tuple(self.gcs_prefixes)),
            gcs_blob=functools.partial(_blob, self.gcp_project),
            max_decode_bytes=self.max_decode_bytes,
            decode_budget=MemoryBudget(self.decode_memory_bytes),
        )


@functools.cache
def _gcs_client(project: str | None) -> Any:
    return GCSResource(project=project).get_client()


def _blob(project: str | None, bucket: str, name: str) -> Any:
    # The client is made on the first gs:// row, never at import or resource construction.
    return _gcs_client(project).bucket(bucket).blob(name)
