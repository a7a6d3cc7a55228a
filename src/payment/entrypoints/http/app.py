"""The FastAPI application, made by a factory: nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider

from payment.entrypoints.http.auth import ApiKeyMiddleware
from payment.entrypoints.http.dependencies import Services
from payment.entrypoints.http.docs import install_docs
from payment.entrypoints.http.events import router as events_router
from payment.entrypoints.http.front import RequestFront
from payment.entrypoints.http.lifecycle import Lifecycle
from payment.entrypoints.http.observe import Metrics, telemetry
from payment.entrypoints.http.openapi import install_openapi
from payment.entrypoints.http.problems import install_problem_handlers
from payment.entrypoints.http.refunds import router as refunds_router
from payment.entrypoints.http.routes import router
from payment.entrypoints.http.schemas import PayRequest, RefundRequest

DESCRIPTION = """\
Pays for orders exactly once: verifies the order, checks the amount against the order's total,
marks the order paid and records the payment, in one transaction.

Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
When the service is configured with API keys, every endpoint but `/livez`, `/readyz` and
`/metrics` needs `Authorization: Bearer <key>`: enter one under **Authorize** to try them here
(these pages and `/openapi.json` themselves need none).
"""


def create_app(
    services: Services,
    *,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The application over ``services``; ``on_shutdown`` runs when the server stops;
    ``metrics``: the registry the composition root also counts decisions on (a new one if
    not given); ``tracer_provider``: each request traced with it, if given
    (``adapters/tracing.py``)."""
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.watch_stop_signals()
        app.state.metrics.start_publishing()
        yield
        app.state.metrics.stop_publishing()
        lifecycle.stop()
        await lifecycle.requests_ended()
        if on_shutdown is not None:
            await on_shutdown()

    app = FastAPI(
        # FastAPI's own OpenTelemetry hooks, on with a provider only: otherwise they would ask
        # the global providers on every request. Prometheus metrics are the service's own.
        telemetry=telemetry(tracer_provider),
        title="Payment service",
        version=version("payment-service"),
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load their scripts from a CDN: install_docs serves them instead.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics = metrics or Metrics()
    app.include_router(router)
    app.include_router(refunds_router)
    app.include_router(events_router)
    install_problem_handlers(app)
    install_docs(app)
    # Outermost last: the front (request id, stop gate, metrics, log line), then the key check.
    app.add_middleware(ApiKeyMiddleware, keys=services.api_keys)
    app.add_middleware(
        RequestFront,
        lifecycle=lifecycle,
        metrics=metrics,
        pool_report=services.pool_report,
        # The API's routes, then the app's own (the document, the pages): to label a request
        # that a middleware answers before routing, or that a route outside the API serves.
        routes=[*router.routes, *refunds_router.routes, *events_router.routes, *app.routes],
        max_in_flight=services.max_requests_in_flight,
    )
    install_openapi(app, body_models=[PayRequest, RefundRequest])
    return app
