"""Tracing (adapters/tracing.py): on only when the standard OTEL_* variables ask for it; then a
server span per request continuing the caller's ``traceparent``, exported by OTLP over HTTP, the
trace on the log lines and on the service's own calls; off, nothing is installed at all."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.adapters.logging import configure_logging
from payment.adapters.settings import ConfigurationError
from payment.adapters.tracing import (
    inject_trace_context,
    requested_exporters,
    start_propagating,
    stop_propagating,
    tracer_provider,
    tracing_from_environment,
)
from payment.entrypoints.http import Services, create_app
from tests.support.otlp_collector import SERVER, Collector, otlp_collector
from tests.unit.fakes import FixedClock, pending_order, store_with
from tests.unit.http_support import PAID_AT, database_that, post_pay

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
PAY_1 = '{"order_id": 1, "amount": "10.00"}'
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_PROPAGATORS",
)
COLLECTOR = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "payments"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": COLLECTOR + "/v1/traces"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "OTLP, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR}, ()),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "zipkin"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR}, ("otlp",)),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
        ),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("console",)),
    ],
)
def test_traces_are_on_only_when_the_environment_asks_for_them(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert requested_exporters(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": ","}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_request_the_service_cannot_honour_is_refused_by_name(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named) as refused:
        requested_exporters(environ)
    assert "zipkin" not in str(refused.value)
    assert "jaeger" not in str(refused.value)


def test_off_nothing_is_made_and_no_provider_is_installed() -> None:
    assert tracing_from_environment(version="1", environ={}) is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(spans: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = tracer_provider((), version="1.2.3", processors=(SimpleSpanProcessor(spans),))
    yield made
    made.shutdown()


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


def traced_client(store: InMemoryStore, provider: TracerProvider | None) -> TestClient:
    services = Services(
        unit_of_work=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(PAID_AT),
        database_ready=database_that(answers=True),
    )
    return TestClient(create_app(services, tracer_provider=provider))


def server_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER]


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return trace.format_trace_id(span.context.trace_id)


def test_each_request_is_one_trace_named_by_its_route(
    store: InMemoryStore, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    with traced_client(store, provider) as client:
        paid = post_pay(client, PAY_1)
        missing = client.get("/payments/12345")

    assert (paid.status_code, missing.status_code) == (200, 404)
    first, second = server_spans(spans)
    assert (first.name, second.name) == ("POST /pay", "GET /payments/{payment_id}")
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["http.route"] == "/pay"
    assert first.attributes["http.response.status_code"] == 200
    assert second.attributes["http.response.status_code"] == 404
    assert first.parent is None
    assert second.parent is None
    assert trace_of(first) != trace_of(second)
    assert first.resource.attributes["service.name"] == "payment-service"
    assert first.resource.attributes["service.version"] == "1.2.3"


def test_the_callers_traceparent_is_continued(
    store: InMemoryStore, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    with traced_client(store, provider) as client:
        post_pay(client, PAY_1, headers=[("traceparent", TRACEPARENT)])

    [span] = server_spans(spans)
    assert trace_of(span) == CALLER_TRACE
    assert span.parent is not None
    assert trace.format_span_id(span.parent.span_id) == CALLER_SPAN
    assert span.parent.is_remote


def test_the_probes_and_the_scrapes_make_no_trace(
    store: InMemoryStore, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    with traced_client(store, provider) as client:
        for path in ("/livez", "/readyz", "/metrics"):
            assert client.get(path, headers={"traceparent": TRACEPARENT}).status_code == 200

    assert spans.get_finished_spans() == ()


@pytest.fixture
def service_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The lines the service's loggers write to standard error once configured in the test;
    their configuration put back after."""
    logger = logging.getLogger("payment")
    saved = (logger.handlers, logger.level, logger.propagate)
    try:
        yield lambda: capsys.readouterr().err.splitlines()
    finally:
        logger.handlers, logger.level, logger.propagate = saved


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_the_access_line_names_the_trace_and_the_span(
    store: InMemoryStore,
    provider: TracerProvider,
    spans: InMemorySpanExporter,
    service_log: Callable[[], list[str]],
    log_format: Any,
) -> None:
    configure_logging("INFO", log_format, traced=True)
    with traced_client(store, provider) as client:
        post_pay(client, PAY_1, headers=[("traceparent", TRACEPARENT)])

    [span] = server_spans(spans)
    assert span.context is not None
    span_id = trace.format_span_id(span.context.span_id)
    [line] = service_log()
    if log_format == "json":
        fields = json.loads(line)
        assert (fields["trace_id"], fields["span_id"]) == (CALLER_TRACE, span_id)
        assert fields["route"] == "/pay"
    else:
        assert f"trace_id={CALLER_TRACE} span_id={span_id}" in line


def test_off_the_access_line_names_no_trace(
    store: InMemoryStore, service_log: Callable[[], list[str]]
) -> None:
    configure_logging("INFO", "json", traced=False)
    with traced_client(store, None) as client:
        post_pay(client, PAY_1, headers=[("traceparent", TRACEPARENT)])

    [line] = service_log()
    fields = json.loads(line)
    assert fields["route"] == "/pay"
    assert "trace_id" not in fields
    assert "span_id" not in fields


def test_the_trace_is_carried_on_the_services_own_calls(provider: TracerProvider) -> None:
    headers: dict[str, str] = {}
    tracer = provider.get_tracer("test")
    start_propagating()
    try:
        with tracer.start_as_current_span("delivery") as span:
            inject_trace_context(headers)
        outside: dict[str, str] = {}
        inject_trace_context(outside)
    finally:
        stop_propagating()
    off: dict[str, str] = {}
    with tracer.start_as_current_span("delivery"):
        inject_trace_context(off)

    context = span.get_span_context()
    trace_id, span_id = (
        trace.format_trace_id(context.trace_id),
        trace.format_span_id(context.span_id),
    )
    assert headers["traceparent"] == f"00-{trace_id}-{span_id}-{context.trace_flags:02x}"
    assert outside == {}
    assert off == {}


@pytest.fixture
def collector() -> Iterator[Collector]:
    with otlp_collector() as collector:
        yield collector


def test_spans_are_exported_by_otlp_over_http_to_the_endpoint_named(
    store: InMemoryStore, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.address)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments-eu")
    provider = tracer_provider(requested_exporters(os.environ), version="1.2.3")
    try:
        with traced_client(store, provider) as client:
            post_pay(client, PAY_1, headers=[("traceparent", TRACEPARENT)])
        assert provider.force_flush()
    finally:
        provider.shutdown()

    [export] = collector.exports
    assert (export.path, export.content_type) == ("/v1/traces", "application/x-protobuf")
    [span] = collector.spans()
    assert (span.name, span.kind) == ("POST /pay", SERVER)
    assert (span.trace_id, span.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    assert span.attributes["http.route"] == "/pay"
    assert span.resource["service.name"] == "payments-eu"
    assert span.resource["service.version"] == "1.2.3"


def test_off_by_default_the_service_loads_no_sdk_and_instruments_nothing() -> None:
    """In a process of its own, as a worker starts: no OTEL_* variable, no SDK imported, no
    global provider, no instrumented driver, and a request answered all the same."""
    script = """
import sys
from fastapi.testclient import TestClient
from opentelemetry import trace
import psycopg
from payment.bootstrap import app_from_environment

with TestClient(app_from_environment()) as client:
    assert client.get("/nowhere").status_code == 404
loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instr"))]
assert loaded == [], loaded
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert not hasattr(psycopg.AsyncConnection.connect, "__wrapped__")
print("untraced")
"""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYMENT_"))}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untraced"
