"""POST /v1/similar: an uploaded image's neighbours, within the service's limits.

In order: a free image-query slot (else 503), the body streamed under its caps (413, nothing
written), the form fields, image queries enabled (else 503) and every asked category served by
this embedder's vectors (else 409), room in the decode budget (else 503 with Retry-After),
one decode and the embedding in the thread pool, the search on the versions checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from image_search_assets.core.ingest.images import ItemRejected
from image_search_assets.serving.budget import Busy
from image_search_assets.serving.embedder import QueryEmbedder
from image_search_assets.serving.errors import error_response as _error
from image_search_assets.serving.limits import ServeLimits
from image_search_assets.serving.reader import IndexReader, ModelMismatch
from image_search_assets.serving.schema import MAX_K, SimilarOut, out
from image_search_assets.serving.upload import UploadRefused, read_upload

# The form as OpenAPI shows it: the body is parsed by upload.read_upload, not by FastAPI.
FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                        "category": {"type": "string"},
                    },
                }
            }
        },
    }
}


# On a response given before the body was read to its end: the rest of it is not waited for.
CLOSE = {"Connection": "close"}


def _k(raw: str | None, max_k: int) -> int:
    if raw is None:
        return 10
    if not raw.strip().isdigit() or not 1 <= int(raw) <= max_k:
        raise UploadRefused(422, "invalid_parameter", f"k: must be an integer in 1..{max_k}")
    return int(raw)


class ImageQueries:
    """The image path of the service: its slots, its embedder (None when disabled)."""

    def __init__(
        self,
        reader: IndexReader,
        limits: ServeLimits,
        max_bytes: int,
        embedder: QueryEmbedder | None,
    ) -> None:
        self.reader, self.limits = reader, limits
        self.max_bytes, self.embedder = max_bytes, embedder
        self.in_flight = 0  # changed on the event loop only

    @property
    def identity(self) -> str | None:
        return None if self.embedder is None else self.embedder.identity

    def refusals(self) -> dict[str, str]:
        """Served categories whose version another embedder built, and why."""
        return {} if self.identity is None else self.reader.embedder_refusals(self.identity)

    def status(self, category: str, refused: dict[str, str]) -> str:
        if self.identity is None:
            return "disabled"
        return f"refused: {refused[category]}" if category in refused else "answered"

    def route(self, app: FastAPI, check_category: Callable[[str | None], None]) -> None:
        @app.post("/v1/similar", response_model=SimilarOut, openapi_extra=FORM_SCHEMA)
        async def similar_to_image(request: Request) -> Any:
            """Nearest items of an uploaded image (multipart `image`, form `k`, `category`):
            ingestion's guards, detection, embedding, across the categories asked."""
            if self.in_flight >= self.limits.max_image_queries:
                return _error(
                    503,
                    "unavailable",
                    f"{self.in_flight} image queries in flight; retry shortly",
                    {"Retry-After": "1", **CLOSE},
                )
            self.in_flight += 1
            try:
                return await self._answer(request, check_category)
            except UploadRefused as e:
                return _error(e.status, e.code, e.detail, CLOSE)
            except ItemRejected as e:
                status = 413 if e.reason == "too_large" else 422
                return _error(status, f"bad_image:{e.reason}", e.detail or e.reason)
            except Busy as e:
                return _error(503, "busy", str(e), {"Retry-After": str(e.retry_after_s)})
            finally:
                self.in_flight -= 1

    async def _answer(self, request: Request, check_category: Callable[[str | None], None]) -> Any:
        upload = await read_upload(request, self.max_bytes)
        k, category = _k(upload.fields.get("k"), MAX_K), upload.fields.get("category") or None
        check_category(category)
        if self.embedder is None or self.identity is None:
            return _error(
                503, "image_queries_disabled", "this service answers product queries only"
            )
        categories = None if category is None else [category]
        refused = self.refusals()
        if refused and (category is None or category in refused):
            raise ModelMismatch(refused if category is None else {category: refused[category]})
        vector = await run_in_threadpool(
            self.embedder.embed, upload.image, self.limits.decode_wait_s
        )
        answer = self.reader.similar_to_vector(vector, k, categories, embedder=self.identity)
        return out(answer)
