"""Refuse requests whose message framing is ambiguous (HTTP request smuggling).

uvicorn's HTTP/1.1 parser (h11) already refuses conflicting ``Content-Length`` values and any
``Transfer-Encoding`` but ``chunked``. A request carrying *both* ``Content-Length`` and
``Transfer-Encoding: chunked`` it reads as chunked (RFC 9112 §6.3) but then keeps the connection open,
so bytes after the chunked body are taken as a second, pipelined request. RFC 9112 §6.1 says a server
MUST close the connection after such a request: a proxy in front that framed it by Content-Length would
otherwise forward a request the gateway runs as someone else's. This middleware answers such requests
``400 invalid_request`` with ``Connection: close`` before the app sees them, so nothing after them on
the connection is read.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import Problem

__all__ = ["RejectAmbiguousFraming", "ambiguous_framing"]


def ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the raw request ``headers`` frame the body ambiguously, or ``None``."""
    names = [name.lower() for name, _ in headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        return "both Content-Length and Transfer-Encoding"
    if names.count(b"transfer-encoding") > 1:
        return "more than one Transfer-Encoding"
    return None


class RejectAmbiguousFraming:
    """ASGI middleware: see the module docstring. ``app.add_middleware(RejectAmbiguousFraming)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = ambiguous_framing(scope["headers"]) if scope["type"] == "http" else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        # the HTTP boundary itself (an ASGI middleware before the app and its handlers): it writes the problem
        body = orjson.dumps(Problem("invalid_request", f"ambiguous message framing: {reason}").body(scope["path"]))
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
