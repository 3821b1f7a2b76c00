"""Keeping secrets out of what the server relays, stores and logs.

:func:`scrub` removes the keys it is given, any ``Bearer`` token and the credentials of any URL from a
text (a remote's error message, a transport error) before it reaches a client, the jobs database or the
log. :func:`redact_url` shows a URL without its credentials or query (the remote's ``--base-url`` in the
start-up line). The access log never shows a query string (a key sent as ``?api_key=...`` would land there).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_KEY_PARAM = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|auth|password|secret)=)[^&\s\"']+")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets, bearer tokens, URL credentials or key-like query values."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)
    return _KEY_PARAM.sub(lambda m: f"{m.group(1)}{HIDDEN}", text)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` and query string replaced by ``***``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{HIDDEN}@" if parts.username or parts.password else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, HIDDEN if parts.query else "", ""))


class AccessLogScrubber(logging.Filter):
    """Drops the query string from uvicorn's access-log lines (the path stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?" + HIDDEN, *args[3:])
        return True


def log_config() -> dict:
    """uvicorn's logging config with :class:`AccessLogScrubber` on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["scrub_query"] = {"()": f"{__name__}.AccessLogScrubber"}
    config["handlers"]["access"]["filters"] = ["scrub_query"]
    return config
