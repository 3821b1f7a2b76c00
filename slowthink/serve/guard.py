"""What guards the server before a route runs: the ``Host`` check (an optional list of names clients may
address it by, against DNS rebinding), and the uvicorn settings that bound connections (a header timeout,
the keep-alive timeout, the connection limit, the access log without query strings)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .limits import Limits
from .protocol import error_body
from .scrub import log_config


def host_name(value: str) -> str:
    """The name in a ``Host`` header, without its port."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheck:
    """ASGI middleware: requests whose ``Host`` is not one of ``allowed`` get a 400 (``"*"``: any host)."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {host_name(h) for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "*" not in self.allowed:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                body = error_body(f"Host {host[:100]!r} is not one this server answers to (slowthink serve "
                                  "--allowed-hosts).", param="Host", code="host_not_allowed")
                await JSONResponse(body, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def header_timeout_protocol(header_timeout: float):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within
    ``header_timeout`` seconds of connecting or of starting its next request (uvicorn waits forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.head_timer is None and self._between_requests():
                self._arm()
            super().data_received(data)
            if self.head_timer is not None and not self._between_requests():
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self.head_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _too_slow(self) -> None:
            self.head_timer = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11


def uvicorn_settings(limits: Limits) -> dict:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that apply ``limits`` to connections."""
    return dict(http=header_timeout_protocol(limits.header_timeout), timeout_keep_alive=limits.keep_alive_timeout,
                limit_concurrency=limits.max_connections, log_config=log_config())
