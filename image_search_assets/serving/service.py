"""Wiring of the service from the platform config: storage, reader, app, uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from image_search_assets.core.storage import Storage, open_storage
from image_search_assets.serving.reader import IndexReader
from image_search_assets.settings import Settings

DEFAULT_CACHE_DIR = "var/serving-cache"


def open_platform_storage(settings: Settings) -> Storage:
    """The storage root of the config, without Dagster (the GCS client only when gs://)."""

    def gcs_client() -> Any:
        from google.cloud import storage as gcs

        return gcs.Client(project=settings.gcp_project)

    return open_storage(settings.storage_root, gcs_client)


def cache_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("IMAGE_SEARCH_SERVING_CACHE") or DEFAULT_CACHE_DIR)


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    poll_interval_s: float,
    cache: Path,
    log_level: str = "info",
) -> None:
    """Loads every category's CURRENT index, then serves until SIGTERM/SIGINT."""
    import uvicorn

    from image_search_assets.serving.app import create_app

    storage = open_platform_storage(settings)
    reader = IndexReader(
        storage, settings.category_names, cache_dir=cache, poll_interval_s=poll_interval_s
    )
    # Not ready yet is fine: /readyz says so, and the poll picks CURRENT up when it appears.
    reader.start()
    try:
        app = create_app(reader, storage, settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        reader.close()
