"""What the service shows of itself: Prometheus metrics and one log line per request.

Labels are route templates (``/payments/{payment_id}``), methods, statuses and outcomes:
never an id, so the number of series stays small whatever the traffic.

With several worker processes, ``payment-service serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
folder the workers share, and a scrape of any worker reports the whole server; the process and
interpreter metrics too (``runtime_metrics.py``).

The probes and the scrapes are routine: their access lines are written at DEBUG while they
succeed, and they make no trace.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import MutableMapping, Sequence
from typing import Any, Protocol

from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import TracerProvider
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from payment.entrypoints.http.runtime_metrics import (
    GC_PUBLISH_SECONDS,
    WorkerGarbageCollection,
    WorkerProcesses,
    forget_dead_workers,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
"""Any other method is counted as this, so that made-up methods cannot add series."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTINE_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
"""Asked every few seconds by the orchestrator and the scraper: access lines at DEBUG while
they succeed (at INFO when they fail: a failing probe is news), and no trace."""


class PoolReport(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def waiting(self) -> int: ...


class Metrics:
    """The service's metrics, in a registry of their own (one per application)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._gc: WorkerGarbageCollection | None = None
        self._gc_timer: asyncio.TimerHandle | None = None
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            self._gc = WorkerGarbageCollection(self.registry)  # the others: at the scrape
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcomes: dict[str, Any] = {}
        labels = ("route", "method", "status")
        self.requests = Counter(
            "payment_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "payment_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "payment_decisions",
            "Payment attempts decided, by outcome (paid, order_not_found, ..., replayed).",
            ("outcome",),
            registry=self.registry,
        )
        self.refund_decisions = Counter(
            "payment_refund_decisions",
            "Refund attempts decided, by outcome (refunded, refund_exceeds_payment, ...,"
            " replayed).",
            ("outcome",),
            registry=self.registry,
        )
        self.shed = Counter(
            "payment_http_requests_shed",
            "Requests answered 503 at once, unread, because the worker had its maximum of"
            " requests in progress (PAYMENT_MAX_REQUESTS_IN_FLIGHT).",
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "payment_db_pool_size",
            "Database connections the pools may hold, all workers together.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_in_use = Gauge(
            "payment_db_pool_connections_in_use",
            "Database connections lent out now, all workers together.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "payment_db_pool_waiting",
            "Requests waiting for a database connection now, all workers together.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:  # once per label set: the label lookups cost more than the counts
            labels = (route, method, str(status))
            series = self._series[(route, method, status)] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        requests, latency = series
        requests.inc()
        latency.observe(seconds)

    def count_decision(self, outcome: str) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self.decisions.labels(outcome)
        counter.inc()

    def count_refund_decision(self, outcome: str) -> None:
        self.refund_decisions.labels(outcome).inc()

    def count_shed(self) -> None:
        self.shed.inc()

    def show_pool(self, report: PoolReport) -> None:
        self.pool_size.set(report.size)
        self.pool_in_use.set(report.in_use)
        self.pool_waiting.set(report.waiting)

    def start_publishing(self) -> None:
        """With workers sharing a folder, publish this one's garbage collector counts now and
        every few seconds, until ``stop_publishing``. Runs on the event loop: nothing is added
        to a request."""
        if self._gc is None:
            return
        loop = asyncio.get_running_loop()
        gc_counts = self._gc

        def publish() -> None:
            gc_counts.publish()
            self._gc_timer = loop.call_later(GC_PUBLISH_SECONDS, publish)

        publish()

    def stop_publishing(self) -> None:
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._gc_timer = None

    def exposition(self) -> bytes:
        """The text format: of every worker when they share a folder, else of this one."""
        folder = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
        if folder:
            if self._gc is not None:
                self._gc.publish()
            forget_dead_workers(folder)
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(WorkerProcesses(folder))
            PlatformCollector(registry=registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def telemetry(tracer_provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry instrumentation: a server span per request, continuing the
    caller's ``traceparent``, when the service traces (``adapters/tracing.py``); else off, so
    that a request does not even ask for the global providers. Its metrics and log events stay
    off (the service has its own), and so do its spans for each step of a request (dependencies,
    endpoint, serialization): the request's span and its statements' say where time goes."""
    if tracer_provider is None:
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    return {
        "tracing": True,
        "tracer_provider": tracer_provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": _routine,
    }


def _routine(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in ROUTINE_PATHS


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route the request is for, also when a middleware answered it
    before routing (a 401, a 503 while stopping); ``<unmatched>`` for no route at all."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", UNMATCHED_ROUTE)
