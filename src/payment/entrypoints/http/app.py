"""The FastAPI application, made by a factory: nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from payment.entrypoints.http.dependencies import Services
from payment.entrypoints.http.openapi import install_openapi
from payment.entrypoints.http.problems import install_problem_handlers
from payment.entrypoints.http.request_id import RequestIdMiddleware
from payment.entrypoints.http.routes import router
from payment.entrypoints.http.schemas import PayRequest

DESCRIPTION = """\
Pays for orders exactly once: verifies the order, checks the amount against the order's total,
marks the order paid and records the payment, in one transaction.

Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
"""


def create_app(services: Services, *, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The application over ``services``; ``on_shutdown`` runs when the server stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="Payment service",
        version=version("payment-service"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    app.include_router(router)
    install_problem_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    install_openapi(app, body_models=[PayRequest])
    return app
