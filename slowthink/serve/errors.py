"""Every error in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .prepare import from_validation
from .protocol import APIError, error_body

log = logging.getLogger(__name__)


def api_error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def on_api_error(request, e: APIError):
    return api_error(e)


async def on_validation(request, e: RequestValidationError):
    return api_error(from_validation(e.errors()))


async def on_http(request, e: StarletteHTTPException):  # unknown path, wrong method
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)


async def on_internal(request, e: Exception):
    log.exception("unhandled error")
    return JSONResponse(error_body("internal server error", "server_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_internal)
