"""The FastAPI application, made by a factory: nothing is built at import."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from types import FrameType

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payment.entrypoints.http.auth import OPEN_PATHS, ApiKeyMiddleware
from payment.entrypoints.http.dependencies import Services
from payment.entrypoints.http.observe import Metrics, RequestObserver
from payment.entrypoints.http.openapi import install_openapi
from payment.entrypoints.http.problems import (
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    install_problem_handlers,
)
from payment.entrypoints.http.request_id import RequestIdMiddleware
from payment.entrypoints.http.routes import router
from payment.entrypoints.http.schemas import PayRequest

DESCRIPTION = """\
Pays for orders exactly once: verifies the order, checks the amount against the order's total,
marks the order paid and records the payment, in one transaction.

Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
When the service is configured with API keys, every endpoint but `/livez`, `/readyz` and
`/metrics` needs `Authorization: Bearer <key>`.
"""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """Whether the process is stopping. Once it is, ``/readyz`` answers 503 and no new
    request reaches a transaction; requests already in flight finish."""

    def __init__(self) -> None:
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    def watch_stop_signals(self) -> None:
        """Mark the process stopping as soon as a stop signal arrives, then let the server's
        own handler (uvicorn's graceful shutdown) run. Only the main thread has signals."""
        if threading.current_thread() is not threading.main_thread():
            return
        for stop_signal in STOP_SIGNALS:
            previous = signal.getsignal(stop_signal)

            def on_signal(number: int, frame: FrameType | None, chained: object = previous) -> None:
                self.stop()
                if callable(chained):
                    chained(number, frame)

            signal.signal(stop_signal, on_signal)


_CLOSING = {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}


class StopGate:
    """While the process stops, refuses new requests (but the probes and the metrics) with 503
    and ``Connection: close``, so the caller retries on another instance.

    A request still running when the graceful stop times out is cancelled by the server; it is
    answered here with a 503 problem rather than the server's bare 500.
    """

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.lifecycle.stopping and scope["path"] not in OPEN_PATHS:
            response = SERVICE_UNAVAILABLE.response(
                "The service is shutting down. Nothing was written; retry shortly.",
                headers=_CLOSING,
            )
            await response(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            if started or not self.lifecycle.stopping:
                raise
            # The stop's time ran out: answer, and end the request like a finished one. The
            # work may still commit in its thread before the process ends, hence the advice.
            await SERVICE_UNAVAILABLE.response(
                "The service stopped before this request finished. Retry with the same "
                "Idempotency-Key: a payment that did commit is then replayed, never repeated.",
                headers=_CLOSING,
            )(scope, receive, send)


def create_app(services: Services, *, on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The application over ``services``; ``on_shutdown`` runs when the server stops."""
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle.watch_stop_signals()
        yield
        lifecycle.stop()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
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
    # Outermost last: the request id first, then timing, the stop gate, the key check.
    app.add_middleware(ApiKeyMiddleware, keys=services.api_keys)
    app.add_middleware(StopGate, lifecycle=lifecycle)
    app.add_middleware(
        RequestObserver, metrics=metrics, pool_report=services.pool_report, routes=router.routes
    )
    app.add_middleware(RequestIdMiddleware)
    install_openapi(app, body_models=[PayRequest])
    return app
