"""The one middleware every request passes: its request id, the stop gate, the load limit, its
timing and metrics, and its one log line.

One pure ASGI layer rather than four: each layer costs a call and a wrapped ``send`` per
request, and these four share what they need (the start time, the status, the request id).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payment.adapters.decisions import request_fields
from payment.entrypoints.http.auth import ANONYMOUS_CALLER, OPEN_PATHS
from payment.entrypoints.http.lifecycle import Lifecycle
from payment.entrypoints.http.observe import (
    KNOWN_METHODS,
    OTHER_METHOD,
    ROUTINE_PATHS,
    Metrics,
    PoolReport,
    route_template,
)
from payment.entrypoints.http.problems import RETRY_AFTER_SECONDS, SERVICE_UNAVAILABLE
from payment.entrypoints.http.request_id import REQUEST_ID_HEADER, request_id_from

access = logging.getLogger("payment.access")

_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()
_CLOSING = {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}
_SHED_DETAIL = (
    "The service has as many requests in progress as it takes; this one was not started."
    " Retry shortly."
)


class RequestFront:
    """For each HTTP request:

    - the request id: the caller's ``X-Request-ID`` when sane, else a new one; in
      ``scope["state"]["request_id"]`` and on the response, errors included;
    - while the process stops, new requests (but the probes and the metrics) are refused with
      503 and ``Connection: close``, so the caller retries on another instance; a request still
      running when the graceful stop times out is answered 503 rather than the server's bare
      500;
    - beyond ``max_in_flight`` requests in progress (the probes and the metrics neither
      counted nor refused), a new one is answered 503 with ``Retry-After`` at once, before any
      work, and counted: the caller retries later rather than waiting in a growing queue;
    - its duration, counted by route template, method and status; the pool gauges refreshed;
    - one access line, which for a payment attempt also carries the decision (SPEC §3.7); at
      DEBUG for a probe or a scrape that succeeded (``ROUTINE_PATHS``), at INFO for the rest.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        metrics: Metrics,
        pool_report: Callable[[], PoolReport] | None,
        routes: Sequence[BaseRoute] = (),
        max_in_flight: int | None = None,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.pool_report = pool_report
        self.routes = routes
        self.max_in_flight = sys.maxsize if max_in_flight is None else max_in_flight
        self.working = 0
        """Requests in progress now, the probes and the metrics left out."""
        self._shed = SERVICE_UNAVAILABLE.response(
            _SHED_DETAIL, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                given = value.decode("latin-1")
                break
        request_id = request_id_from(given)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        # The decision's handler fills these in, for the one access line.
        carried = request_fields.set(state.setdefault("decision", {}))
        status = 500  # unless a response starts: an error escaped every handler
        id_header = (_REQUEST_ID_KEY, request_id.encode())

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        self.lifecycle.in_flight += 1
        counted = False
        try:
            if scope["path"] not in OPEN_PATHS:
                if self.lifecycle.stopping:
                    await SERVICE_UNAVAILABLE.response(
                        "The service is shutting down. Nothing was written; retry shortly.",
                        headers=_CLOSING,
                    )(scope, receive, send_observed)
                    return
                if self.working >= self.max_in_flight:
                    self.metrics.count_shed()
                    await self._shed(scope, receive, send_observed)
                    return
                self.working += 1
                counted = True
            await self._answer(scope, receive, send_observed)
        finally:
            if counted:
                self.working -= 1
            self.lifecycle.in_flight -= 1
            self._observe(scope, state, status, time.perf_counter() - started)
            request_fields.reset(carried)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            # payment's one write may have committed just before, hence the advice.
            await SERVICE_UNAVAILABLE.response(
                "The service stopped before this request finished. Retry with the same "
                "Idempotency-Key: a payment that did commit is then replayed, never repeated.",
                headers=_CLOSING,
            )(scope, receive, send)

    def _observe(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = route_template(scope, self.routes)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        self.metrics.observe_request(route, method, status, seconds)
        if self.pool_report is not None:
            self.metrics.show_pool(self.pool_report())
        level = logging.DEBUG if status < 400 and scope["path"] in ROUTINE_PATHS else logging.INFO
        if not access.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "request_id": state.get("request_id"),
            "caller": state.get("caller", ANONYMOUS_CALLER),
            "method": scope["method"],
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "outcome": None,
        }
        decision = state.get("decision")
        if decision:
            fields.update(decision)
        access.log(level, "request", extra={"fields": fields})
