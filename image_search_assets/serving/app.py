"""The similar-items HTTP service: FastAPI over an IndexReader.

FastAPI (on Starlette, served by uvicorn) gives typed parameters with validation, JSON errors
and OpenAPI docs (/docs, /openapi.json) from the signatures alone.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from image_search_assets.core.ingest.images import ItemRejected
from image_search_assets.core.storage import Storage
from image_search_assets.serving.metrics import build_registry
from image_search_assets.serving.page import PAGE
from image_search_assets.serving.reader import Answer, IndexReader, NotReady, UnknownProduct
from image_search_assets.settings import Settings

log = logging.getLogger(__name__)
MAX_K = 100


class NeighbourOut(BaseModel):
    product_id: str
    category: str
    distance: float
    version: str


class SimilarOut(BaseModel):
    neighbours: list[NeighbourOut]
    versions: dict[str, str]
    query_category: str | None = None


def _out(answer: Answer) -> SimilarOut:
    return SimilarOut(
        neighbours=[NeighbourOut(**vars(n)) for n in answer.neighbours],
        versions=answer.versions,
        query_category=answer.category,
    )


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


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


def create_app(reader: IndexReader, storage: Storage, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="image-search similar items",
        version="1",
        description="Nearest neighbours from each category's current verified Annoy index.",
    )
    registry, latency = build_registry(reader)
    app.add_middleware(LatencyMiddleware, histogram=latency)  # type: ignore[arg-type]

    def check_category(category: str | None) -> None:
        if category is not None and category not in reader.categories:
            raise HTTPException(400, f"unknown category {category!r}; have {reader.categories}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, "bad_request" if exc.status_code < 500 else "error",
                      str(exc.detail))  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, "invalid_parameter", problems)

    @app.exception_handler(UnknownProduct)
    async def unknown(_: Request, exc: UnknownProduct) -> JSONResponse:
        return _error(404, "unknown_product", f"product {exc.args[0]!r} is in no served index")

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return _error(503, "not_ready", str(exc))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)  # the trace stays in the log
        return _error(500, "internal_error", "the service failed; see its log")

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
        return _out(reader.similar_to_product(product_id, k, category))

    @app.post("/v1/similar", response_model=SimilarOut)
    def similar_to_image(
        image: Annotated[UploadFile, File(description="a JPEG/PNG/WebP/... product photo")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        category: Annotated[str | None, Form()] = None,
    ) -> SimilarOut:
        """Nearest items of an uploaded image: ingestion's guards, detection, embedding."""
        check_category(category)
        data = image.file.read(settings.fetch.max_bytes + 1)
        from image_search_assets.serving.embedder import embed_upload

        try:
            vector = embed_upload(settings, data)
        except ItemRejected as e:
            status = 413 if e.reason == "too_large" else 422
            return _error(status, f"bad_image:{e.reason}", e.detail or e.reason)  # type: ignore[return-value]
        return _out(reader.similar_to_vector(vector, k, None if category is None else [category]))

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
            return _error(404, "no_image", f"no stored image for product {product_id!r}")
        headers = {"Cache-Control": "max-age=3600"}
        return Response(storage.read_bytes(key), media_type="image/jpeg", headers=headers)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only when every configured category serves a verified index."""
        body = {}
        for category in reader.categories:
            state = reader.state(category)
            body[category] = {
                "version": state.served.version if state.served else None,
                "failed_loads": state.failed_loads,
                "last_error": state.last_error,
            }
        ready = reader.ready()
        return JSONResponse({"ready": ready, "categories": body}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    return app
