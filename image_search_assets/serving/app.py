"""The similar-items HTTP service: FastAPI over an IndexReader.

FastAPI (on Starlette, served by uvicorn) gives typed parameters with validation, JSON errors
and OpenAPI docs (/docs, /openapi.json) from the signatures alone. Every 4xx and 5xx body is
`{"error": code, "detail": text}` (serving/errors.py), the server's own included.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from image_search_assets.core.storage import Storage
from image_search_assets.serving.errors import code_of
from image_search_assets.serving.errors import error_response as error
from image_search_assets.serving.image_query import ImageQueries
from image_search_assets.serving.metrics import build_registry
from image_search_assets.serving.page import PAGE
from image_search_assets.serving.reader import (
    IndexReader,
    ModelMismatch,
    NotReady,
    UnknownProduct,
)
from image_search_assets.serving.schema import MAX_K, SimilarOut, out

log = logging.getLogger(__name__)


class LatencyMiddleware:
    """Times every request into the histogram, labelled by route template (not raw path)."""

    def __init__(self, app: Any, histogram: Any) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = (scope["method"], route, str(status[0]))
            self.histogram.labels(*labels).observe(time.perf_counter() - started)


def create_app(reader: IndexReader, storage: Storage, images: ImageQueries) -> FastAPI:
    app = FastAPI(
        title="image-search similar items",
        version="1",
        description="Nearest neighbours from each category's current verified Annoy index.",
    )
    registry, latency = build_registry(reader, images)
    app.add_middleware(LatencyMiddleware, histogram=latency)  # type: ignore[arg-type]

    def check_category(category: str | None) -> None:
        if category is not None and category not in reader.categories:
            raise HTTPException(400, f"unknown category {category!r}; have {reader.categories}")

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        status, detail = getattr(exc, "status_code", 500), str(getattr(exc, "detail", exc))
        return error(status, code_of(status), detail, getattr(exc, "headers", None))

    app.add_exception_handler(HTTPException, http_error)
    # Unknown routes (404) and methods (405) come from Starlette's router as Starlette's own
    # HTTPException, which a handler by status code catches.
    for status in (404, 405):
        app.add_exception_handler(status, http_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error(422, "invalid_parameter", problems)

    @app.exception_handler(UnknownProduct)
    async def unknown(_: Request, exc: UnknownProduct) -> JSONResponse:
        return error(404, "unknown_product", f"product {exc.args[0]!r} is in no served index")

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return error(503, "not_ready", str(exc))

    @app.exception_handler(ModelMismatch)
    async def mismatch(_: Request, exc: ModelMismatch) -> JSONResponse:
        return error(409, "model_mismatch", f"image queries are refused for {exc}")

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)  # the trace stays in the log
        return error(500, "internal_error", "the service failed; see its log")

    @app.get("/v1/similar/{product_id}", response_model=SimilarOut)
    async def similar_to_product(
        product_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        category: str | None = None,
    ) -> SimilarOut:
        """Nearest other items of an indexed product, from its category's served version.

        Async on purpose: a query is ~0.1 ms of mmap reads, cheaper than a thread-pool hop.
        """
        check_category(category)
        return out(reader.similar_to_product(product_id, k, category))

    images.route(app, check_category)

    @app.get("/v1/products")
    def products(
        category: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict[str, list[str]]:
        """A sample of served product ids per category (for the page's picker)."""
        check_category(category)
        with reader.hold(None if category is None else [category]) as held:
            return {c: v.ids.head(limit) for c, v in held.items()}

    @app.get("/v1/images/{product_id}", responses={200: {"content": {"image/jpeg": {}}}})
    def product_image(product_id: str) -> Response:
        """The stored image of a served product."""
        key = reader.image_key(product_id)
        if key is None or not storage.exists(key):
            return error(404, "no_image", f"no stored image for product {product_id!r}")
        headers = {"Cache-Control": "max-age=3600"}
        return Response(storage.read_bytes(key), media_type="image/jpeg", headers=headers)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    def category_status(category: str, refused: dict[str, str]) -> dict[str, Any]:
        state = reader.state(category)
        served = state.served
        return {
            "version": served.version if served else None,
            "day": served.day if served else None,
            "embedders": served.embedders() if served else [],
            "pin": state.pin,
            "image_queries": images.status(category, refused),
        }

    @app.get("/v1/versions")
    def versions() -> dict[str, Any]:
        """Each category's served version, its day and embedders, whether image queries are
        answered for it, and the `pin` of its pointer as written (null when none)."""
        refused = images.refusals()
        return {"categories": {c: category_status(c, refused) for c in reader.categories}}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only when every configured category serves a verified index. With image queries
        on, the models were loaded before the port opened; a category whose served version
        another embedder built is named under `image_queries` (product queries still answer)."""
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

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    return app
