"""The gateway application: ``create_app(settings)`` builds a FastAPI app around its components."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from gateway.api import accesses, auth, consents, me, records, system, transactions
from gateway import portal
from gateway.observability import configure_logging
from gateway.problems import install_problem_handlers
from gateway.settings import GatewaySettings
from gateway.state import Components, build_components

__all__ = ["create_app"]


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: GatewaySettings | None = None, *, components: Components | None = None) -> FastAPI:
    """Builds the app. Components are built from ``settings`` (or taken as given) and started with it."""
    settings = settings or (components.settings if components else GatewaySettings())
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = components or build_components(settings)
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
    )
    install_problem_handlers(app)

    @app.middleware("http")
    async def _timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        c = getattr(request.app.state, "components", None)
        if c is not None:
            c.metrics.request_seconds.labels(path, request.method, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response

    for module in (auth, records, consents, transactions, accesses, me, system):
        app.include_router(module.router)
    app.include_router(portal.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
