"""Wiring of the service from the platform config: storage, reader, app, uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from image_search_assets.core.storage import Storage, open_storage
from image_search_assets.serving.limits import ServeLimits
from image_search_assets.serving.reader import IndexReader
from image_search_assets.settings import Settings

DEFAULT_CACHE_DIR = "var/serving-cache"
log = logging.getLogger(__name__)


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
    limits: ServeLimits,
    log_level: str = "info",
) -> None:
    """Loads every category's CURRENT index (and the models, with image queries on), then
    serves until SIGTERM/SIGINT within `limits` (serving/protocol.py)."""
    import uvicorn

    from image_search_assets.serving.app import create_app
    from image_search_assets.serving.budget import QueryBudget
    from image_search_assets.serving.embedder import QueryEmbedder
    from image_search_assets.serving.image_query import ImageQueries
    from image_search_assets.serving.protocol import guarded_protocol

    embedder = None
    if limits.image_queries:
        embedder = QueryEmbedder(settings, QueryBudget(limits.decode_memory_bytes))
        # Before the port opens: the first image query must not pay for torch and the weights,
        # and readiness must not be claimed by a process that cannot answer one.
        log.info("image queries embed with %s", embedder.load())
    storage = open_platform_storage(settings)
    reader = IndexReader(
        storage, settings.category_names, cache_dir=cache, poll_interval_s=poll_interval_s
    )
    # Not ready yet is fine: /readyz says so, and the poll picks CURRENT up when it appears.
    reader.start()
    try:
        images = ImageQueries(reader, limits, settings.fetch.max_bytes, embedder)
        uvicorn.run(
            create_app(reader, storage, images),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            http=guarded_protocol(limits),
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keep_alive_s,
            # Clients that read it stop reusing a connection before the server closes it.
            headers=[("keep-alive", f"timeout={limits.keep_alive_s - 1}")],
        )
    finally:
        reader.close()
