"""A request body from the socket to a JSON object, bounded before any parsing.

Only ``Content-Type: application/json`` is read (415 otherwise): a web page can send a plain-text or form
body to any address without the browser asking first, but not a JSON one. The body is read as it streams
in and refused with 413 as soon as it passes ``max_body_bytes`` (a declared ``Content-Length`` above it is
refused before reading); a client slower than ``body_timeout`` gets 408. A body of ``INLINE_BYTES`` or more
is parsed (and the request prepared) on a worker thread, so a large body never holds the event loop; invalid UTF-8, JSON nested too deeply and strings with lone
surrogates (which no UTF-8 reply or SQLite row can hold) are 400s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request

from .limits import Limits
from .protocol import APIError

CLOSE = {"Connection": "close"}  # what is left of a refused body is not worth reading
INLINE_BYTES = 64 * 1024  # smaller bodies are parsed and prepared on the event loop: a thread hop costs more


def check_content_type(request: Request) -> None:
    kind, *params = request.headers.get("content-type", "").lower().split(";")
    named = dict(p.strip().partition("=")[::2] for p in params)
    if kind.strip() != "application/json" or named.get("charset", "utf-8").strip('"') not in ("utf-8", "utf8"):
        raise APIError(415, "The request body must be JSON sent with 'Content-Type: application/json'.",
                       param="Content-Type", code="unsupported_media_type")


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than max_body_bytes ({limit} bytes; slowthink serve "
                         "--max-body-bytes).", code="body_too_large", headers=CLOSE)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The raw body, at most ``max_body_bytes``, within ``body_timeout``."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), limits.body_timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body did not arrive within body_timeout ({limits.body_timeout:g} s; "
                            "slowthink serve --body-timeout).", code="body_timeout", headers=CLOSE) from None


def lone_surrogate(value) -> str | None:
    """The first string in a parsed JSON value that holds a lone surrogate (None: all are valid Unicode)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def parse_json(raw: bytes) -> dict:
    """A JSON object from a body (400 for anything else)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise APIError(400, f"The request body is not valid UTF-8 ({e.reason} at byte {e.start}).",
                       code="invalid_json") from None
    except ValueError as e:
        raise APIError(400, f"Invalid JSON body: {e}", code="invalid_json") from None
    except RecursionError:  # json's decoder recurses per nesting level: "[[[[..." is the caller's fault
        raise APIError(400, "Invalid JSON body: nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    if lone_surrogate(body) is not None:
        raise APIError(400, "The request body holds a string with a lone surrogate (an escape such as \\ud800 "
                            "without its pair): not valid Unicode.", code="invalid_unicode")
    return body


def parse_then(raw: bytes, then: Callable[[dict], Any] | None):
    body = parse_json(raw)
    return body if then is None else then(body)


async def json_body(request: Request, limits: Limits, then: Callable[[dict], Any] | None = None):
    """The request's JSON object (or ``then(object)``, e.g. the prepared request): content type, size and time
    checked; parsed (and ``then`` run) on a worker thread unless the body is under ``INLINE_BYTES``."""
    check_content_type(request)
    raw = await read_body(request, limits)
    if len(raw) < INLINE_BYTES:
        return parse_then(raw, then)
    return await asyncio.to_thread(parse_then, raw, then)
