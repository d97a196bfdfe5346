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
from image_search_assets.core.ingest.url_rules import UrlRules
from image_search_assets.settings import FetchConfig
from resources.sections import as_config, section
from resources.storage import StorageResource


class CatalogResource(dg.ConfigurableResource):
    """The product catalog (CSV or Parquet, local or gs://) and the zone days are cut in."""

    uri: str
    timezone: str  # partitions.timezone
    storage: dg.ResourceDependency[StorageResource]

    def day(self, day: date, categories: list[str]) -> CatalogDay:
        table = read_catalog(self.uri, self.storage.read_gs)
        return select_day(
            table, day, tz=ZoneInfo(self.timezone), categories=categories, catalog_uri=self.uri
        )


class ImageFetchResource(dg.ConfigurableResource):
    """Limits, allowed URL kinds and the private-address allowlist for fetching product images.

    Built by `from_config`: platform.yaml's `fetch` section as its FetchConfig (sections.py).
    """

    fetch_config: dict[str, Any]  # a FetchConfig
    gcp_project: str | None  # for gs:// image rows (read with a size check first)

    @classmethod
    def from_config(cls, cfg: FetchConfig, gcp_project: str | None) -> "ImageFetchResource":
        return cls(fetch_config=as_config(cfg), gcp_project=gcp_project)

    @property
    def fetch(self) -> FetchConfig:
        return section(FetchConfig, self.fetch_config)

    def policy(self) -> FetchPolicy:
        """One step's policy: its decode budget is shared by that step's fetch workers."""
        cfg = self.fetch
        return FetchPolicy(
            timeout_s=cfg.timeout_s,
            max_bytes=cfg.max_bytes,
            allow_private_hosts=cfg.allow_private_hosts,
            rules=UrlRules(cfg.allowed_schemes, cfg.gcs_prefixes),
            gcs_blob=functools.partial(_blob, self.gcp_project),
            max_decode_bytes=cfg.max_decode_bytes,
            decode_budget=MemoryBudget(cfg.decode_memory_bytes),
        )


@functools.cache
def _gcs_client(project: str | None) -> Any:
    return GCSResource(project=project).get_client()


def _blob(project: str | None, bucket: str, name: str) -> Any:
    # The client is made on the first gs:// row, never at import or resource construction.
    return _gcs_client(project).bucket(bucket).blob(name)
