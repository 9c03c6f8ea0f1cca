"""The gateway application: ``create_app(settings)`` builds a FastAPI app around its components."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import portal
from gateway.api import (
    accesses,
    auth,
    category_keys,
    consents,
    exports,
    federation,
    fhir,
    me,
    records,
    reviews,
    system,
    transactions,
    webhooks,
)
from gateway.api.deps import complete_read_model
from gateway.framing import RejectAmbiguousFraming
from gateway.ledger.member_names import display_language, negotiate
from gateway.observability import configure_logging
from gateway.openapi import install_openapi
from gateway.problems import install_problem_handlers
from gateway.settings import GatewaySettings
from gateway.wiring import Components, build_components

__all__ = ["GatewayServer", "create_app", "server_config"]


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


class RequestTiming:
    """ASGI middleware: request duration by route, method and status (``hcl_request_seconds``).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every
    response through an extra task and stream, which cost ~15 % of a release's CPU in the profile.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            c = getattr(scope["app"].state, "components", None) if "app" in scope else None
            if c is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                c.metrics.request_seconds.labels(path, scope["method"], str(status)).observe(
                    time.perf_counter() - started
                )


class DisplayLanguage:
    """ASGI middleware: institutions' names in API answers in the language of ``Accept-Language`` (zh-CN or
    en; their ``name`` otherwise), through :data:`gateway.ledger.member_names.display_language`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", ()) if scope["type"] == "http" else ()
        header = next((value for name, value in headers if name == b"accept-language"), None)  # no dict per request
        if not header:
            await self.app(scope, receive, send)
            return
        token = display_language.set(negotiate(header.decode("latin-1")))
        try:
            await self.app(scope, receive, send)
        finally:
            display_language.reset(token)


#: The docs pages load only the gateway's own files (``/static/vendor/``, copied from npm at install).
#: Scripts: those files plus Swagger UI's inline start-up script, by hash. Styles may be inline (both UIs
#: style elements inline); ReDoc's search runs in a worker made from a blob.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def _static_page(page: HTMLResponse) -> Callable[[], HTMLResponse]:
    """The page as a route answer, with a CSP that allows exactly its inline scripts (by SHA-256)."""
    body = bytes(page.body)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in re.findall(rb"<script>(.*?)</script>", body, re.S)
    )
    headers = {
        "Content-Security-Policy": DOCS_CSP.format(scripts=hashes),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return lambda: HTMLResponse(body, headers=headers)


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the gateway's own static files, never a CDN, so the API
    reference works on a machine with no internet."""
    vendor, spec, title = "/static/vendor", app.openapi_url or "/openapi.json", f"{app.title} API"
    swagger = _static_page(
        get_swagger_ui_html(
            openapi_url=spec,
            title=title,
            swagger_favicon_url="/static/icon.svg",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_ui_parameters={"validatorUrl": None},  # else it would ask validator.swagger.io
        )
    )
    redoc = _static_page(
        get_redoc_html(
            openapi_url=spec,
            title=title,
            redoc_favicon_url="/static/icon.svg",
            redoc_js_url=f"{vendor}/redoc.standalone.js",
            with_google_fonts=False,
        )
    )
    app.add_api_route("/docs", swagger, methods=["GET"], name="swagger_ui", include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], name="redoc", include_in_schema=False)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    components: Components | None = None,
    build: Callable[[GatewaySettings], Components] = build_components,
) -> FastAPI:
    """Builds the app. Components are built from ``settings`` by ``build`` (or taken as given) and started
    with it (a worker of several processes passes :func:`~gateway.wiring.build_worker_components`)."""
    settings = settings or (components.settings if components else GatewaySettings())
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = components or build(settings)
        app.state.components = c
        c.start()
        try:
            yield
        finally:
            c.stop()

    app = FastAPI(
        title="HealthCode Ledger gateway",
        version="0.1.0",
        description="Consent-enforced, ledgered release of encrypted FHIR records.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served by install_docs from local files
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_openapi(app)
    install_docs(app)

    app.add_middleware(RequestTiming)
    app.add_middleware(DisplayLanguage)
    app.add_middleware(RejectAmbiguousFraming)  # outermost: nothing of a smuggled request reaches the app

    for module in (
        auth,
        records,
        federation,
        consents,
        category_keys,
        transactions,
        accesses,
        reviews,
        system,
        fhir,
        webhooks,
    ):
        app.include_router(module.router)
    app.include_router(me.router, dependencies=[Depends(complete_read_model)])  # the caller's lists: read model
    app.include_router(exports.router, dependencies=[Depends(complete_read_model)])  # the same lists, downloaded
    app.include_router(portal.router)
    app.mount("/static", StaticFiles(directory=portal.STATIC_DIR), name="static")
    return app


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending the live event streams as its shutdown begins: uvicorn waits for open
    requests before it stops the app, and a stream never finishes on its own."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        c = getattr(getattr(self.config.app, "state", None), "components", None)
        if c is not None and c.events is not None:
            c.events.stop()
        await super().shutdown(sockets)


def server_config(settings: GatewaySettings, app: ASGIApp) -> uvicorn.Config:
    """How uvicorn serves the gateway, for the CLI and the tests alike (its keep-alive: ``settings.keep_alive``)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=settings.keep_alive,
    )
