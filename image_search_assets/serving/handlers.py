"""The app's exception handlers: every failure answered in the one error format (errors.py).

Unknown routes (404) and methods (405) come from Starlette's router as Starlette's own
HTTPException, which a handler by status code catches; the reader's refusals have their own
codes; anything else is a 500 whose trace stays in the log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from image_search_assets.serving.errors import code_of
from image_search_assets.serving.errors import error_response as error
from image_search_assets.serving.reader import ModelMismatch, NotReady, UnknownProduct

log = logging.getLogger(__name__)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    status, detail = getattr(exc, "status_code", 500), str(getattr(exc, "detail", exc))
    return error(status, code_of(status), detail, getattr(exc, "headers", None))


async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error(422, "invalid_parameter", problems)


async def unknown(_: Request, exc: UnknownProduct) -> JSONResponse:
    return error(404, "unknown_product", f"product {exc.args[0]!r} is in no served index")


async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
    return error(503, "not_ready", str(exc))


async def mismatch(_: Request, exc: ModelMismatch) -> JSONResponse:
    return error(409, "model_mismatch", f"image queries are refused for {exc}")


async def internal(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)  # the trace stays in the log
    return error(500, "internal_error", "the service failed; see its log")


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_error)
    for status in (404, 405):
        app.add_exception_handler(status, http_error)
    for exc, handler in (
        (RequestValidationError, invalid),
        (UnknownProduct, unknown),
        (NotReady, not_ready),
        (ModelMismatch, mismatch),
        (Exception, internal),
    ):
        app.exception_handler(exc)(handler)
