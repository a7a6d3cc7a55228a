"""The FastAPI application, made by a factory: nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from payment.entrypoints.http.auth import ApiKeyMiddleware
from payment.entrypoints.http.dependencies import Services
from payment.entrypoints.http.front import RequestFront
from payment.entrypoints.http.lifecycle import Lifecycle
from payment.entrypoints.http.observe import Metrics
from payment.entrypoints.http.openapi import install_openapi
from payment.entrypoints.http.problems import install_problem_handlers
from payment.entrypoints.http.routes import router
from payment.entrypoints.http.schemas import PayRequest

DESCRIPTION = """\
Pays for orders exactly once: verifies the order, checks the amount against the order's total,
marks the order paid and records the payment, in one transaction.

Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
When the service is configured with API keys, every endpoint but `/livez`, `/readyz` and
`/metrics` needs `Authorization: Bearer <key>`.
"""


def create_app(
    services: Services, *, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> FastAPI:
    """The application over ``services``; ``on_shutdown`` runs when the server stops."""
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.watch_stop_signals()
        yield
        lifecycle.stop()
        await lifecycle.requests_ended()
        if on_shutdown is not None:
            await on_shutdown()

    app = FastAPI(
        # FastAPI's own OpenTelemetry hooks ask the global providers on every request; the
        # service exports Prometheus metrics of its own and no traces yet.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Payment service",
        version=version("payment-service"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics = Metrics()
    app.include_router(router)
    install_problem_handlers(app)
    # Outermost last: the front (request id, stop gate, metrics, log line), then the key check.
    app.add_middleware(ApiKeyMiddleware, keys=services.api_keys)
    app.add_middleware(
        RequestFront,
        lifecycle=lifecycle,
        metrics=metrics,
        pool_report=services.pool_report,
        routes=router.routes,
        max_in_flight=services.max_requests_in_flight,
    )
    install_openapi(app, body_models=[PayRequest])
    return app
