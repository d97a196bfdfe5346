"""The similar-items HTTP service: FastAPI over an IndexReader.

FastAPI (on Starlette, served by uvicorn) gives typed parameters with validation, JSON errors
and OpenAPI docs (/docs, /openapi.json) from the signatures alone. Every 4xx and 5xx body is
`{"error": code, "detail": text}` (serving/errors.py, serving/handlers.py), the server's own
included.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from image_search_assets.core.storage import Storage
from image_search_assets.serving.errors import error_response as error
from image_search_assets.serving.handlers import add_error_handlers
from image_search_assets.serving.image_query import ImageQueries
from image_search_assets.serving.metrics import LatencyMiddleware, build_registry
from image_search_assets.serving.page import PAGE
from image_search_assets.serving.reader import IndexReader
from image_search_assets.serving.schema import MAX_K, SimilarOut, out

CheckCategory = Callable[[str | None], None]


def create_app(reader: IndexReader, storage: Storage, images: ImageQueries) -> FastAPI:
    app = FastAPI(
        title="image-search similar items",
        version="1",
        description="Nearest neighbours from each category's current verified Annoy index.",
    )
    registry, latency = build_registry(reader, images)
    app.add_middleware(LatencyMiddleware, histogram=latency)  # type: ignore[arg-type]
    add_error_handlers(app)
    check = partial(check_category, reader)
    app.include_router(product_routes(reader, check))
    images.route(app, check)
    app.include_router(catalogue_routes(reader, storage, check))
    app.include_router(status_routes(reader, images, registry))
    return app


def check_category(reader: IndexReader, category: str | None) -> None:
    if category is not None and category not in reader.categories:
        raise HTTPException(400, f"unknown category {category!r}; have {reader.categories}")


def product_routes(reader: IndexReader, check: CheckCategory) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/similar/{product_id}", response_model=SimilarOut)
    async def similar_to_product(
        product_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        category: str | None = None,
    ) -> SimilarOut:
        """Nearest other items of an indexed product, from its category's served version.

        Async on purpose: a query is ~0.1 ms of mmap reads, cheaper than a thread-pool hop.
        """
        check(category)
        return out(reader.similar_to_product(product_id, k, category))

    return router


def catalogue_routes(reader: IndexReader, storage: Storage, check: CheckCategory) -> APIRouter:
    """What the page shows beside the answers: product ids to pick from, product images."""
    router = APIRouter()

    @router.get("/v1/products")
    def products(
        category: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict[str, list[str]]:
        """A sample of served product ids per category (for the page's picker)."""
        check(category)
        with reader.hold(None if category is None else [category]) as held:
            return {c: v.ids.head(limit) for c, v in held.items()}

    @router.get("/v1/images/{product_id}", responses={200: {"content": {"image/jpeg": {}}}})
    def product_image(product_id: str) -> Response:
        """The stored image of a served product."""
        key = reader.image_key(product_id)
        if key is None or not storage.exists(key):
            return error(404, "no_image", f"no stored image for product {product_id!r}")
        headers = {"Cache-Control": "max-age=3600"}
        return Response(storage.read_bytes(key), media_type="image/jpeg", headers=headers)

    return router


def category_status(
    reader: IndexReader, images: ImageQueries, category: str, refused: dict[str, str]
) -> dict[str, Any]:
    state = reader.state(category)
    served = state.served
    return {
        "version": served.version if served else None,
        "day": served.day if served else None,
        "embedders": served.embedders() if served else [],
        "pin": state.pin,
        "image_queries": images.status(category, refused),
    }


def readiness(reader: IndexReader, images: ImageQueries) -> JSONResponse:
    refused = images.refusals()
    body = {}
    for category in reader.categories:
        state = reader.state(category)
        body[category] = {
            "version": state.served.version if state.served else None,
            "failed_loads": state.failed_loads,
            "last_error": state.last_error,
            "pin": state.pin,
            "image_queries": images.status(category, refused),
        }
    ready = reader.ready()
    return JSONResponse(
        {"ready": ready, "embedder": images.identity, "categories": body},
        status_code=200 if ready else 503,
    )


def status_routes(
    reader: IndexReader, images: ImageQueries, registry: CollectorRegistry
) -> APIRouter:
    """Liveness, readiness, what is served, metrics, and the page."""
    router = APIRouter()

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @router.get("/v1/versions")
    def versions() -> dict[str, Any]:
        """Each category's served version, its day and embedders, whether image queries are
        answered for it, and the `pin` of its pointer as written (null when none)."""
        refused = images.refusals()
        return {
            "categories": {
                c: category_status(reader, images, c, refused) for c in reader.categories
            }
        }

    @router.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only when every configured category serves a verified index. With image queries
        on, the models were loaded before the port opened; a category whose served version
        another embedder built is named under `image_queries` (product queries still answer)."""
        return readiness(reader, images)

    @router.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    return router
