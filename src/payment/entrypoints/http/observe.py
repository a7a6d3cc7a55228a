"""What the service shows of itself: Prometheus metrics and one log line per request.

Labels are route templates (``/payments/{payment_id}``), methods, statuses and outcomes:
never an id, so the number of series stays small whatever the traffic.

With several worker processes, ``payment-service serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
folder the workers share, and a scrape of any worker reports the whole server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
"""Any other method is counted as this, so that made-up methods cannot add series."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def count_shed(self) -> None:
        self.shed.inc()

    def show_pool(self, report: PoolReport) -> None:
        self.pool_size.set(report.size)
        self.pool_in_use.set(report.in_use)
        self.pool_waiting.set(report.waiting)

    def exposition(self) -> bytes:
        """The text format: of every worker when they share a folder, else of this one."""
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route the request is for, also when a middleware answered it
    before routing (a 401, a 503 while stopping); ``<unmatched>`` for no route at all."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", UNMATCHED_ROUTE)
