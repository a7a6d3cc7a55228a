"""Traces of the service as ``bootstrap`` wires it, on PostgreSQL: one trace per request, the
statements the unit of work sends on the pool's connections as spans inside it, the caller's
``traceparent`` continued, and the trace on the request's access line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from payment.adapters.tracing import tracer_provider
from payment.bootstrap import build_app
from tests.integration.conftest import service_settings
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(spans: InMemorySpanExporter) -> TracerProvider:
    """Shut down by the service when it stops, as in production."""
    return tracer_provider((), version="test", processors=(SimpleSpanProcessor(spans),))


@pytest.fixture
def client(
    clean_database: Engine, database_url: URL, provider: TracerProvider
) -> Iterator[TestClient]:
    logger = logging.getLogger("payment")
    saved = (logger.handlers, logger.level, logger.propagate)
    app = build_app(
        service_settings(database_url, payment_log_format="json"), tracer_provider=provider
    )
    try:
        with TestClient(app) as client:
            yield client
    finally:
        logger.handlers, logger.level, logger.propagate = saved


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return trace.format_trace_id(span.context.trace_id)


def ancestry(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[str]:
    """The names of the span's parents, nearest first, as far as they were recorded here."""
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in spans:
        names.append(spans[parent.span_id].name)
        parent = spans[parent.span_id].parent
    return names


def by_trace(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    traces: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        traces.setdefault(hex_trace(span), []).append(span)
    return traces


def test_a_payment_is_one_trace_with_its_statements_inside(
    client: TestClient, clean_database: Engine, database_url: URL, spans: InMemorySpanExporter
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")

    for order_id, total in ((first, "10.00"), (second, "20.00")):
        body = json.dumps({"order_id": order_id, "amount": total})
        assert client.post("/pay", content=body, headers=JSON).status_code == 200

    traces = by_trace(spans)
    assert len(traces) == 2
    for recorded in traces.values():
        [server] = [span for span in recorded if span.kind is SpanKind.SERVER]
        statements = [span for span in recorded if span.kind is SpanKind.CLIENT]
        assert server.name == "POST /pay"
        assert server.parent is None
        assert len(statements) >= 2  # the read of the order, the write of the payment
        known = {span.context.span_id: span for span in recorded if span.context is not None}
        operations = set()
        for statement in statements:
            assert statement.attributes is not None
            assert statement.attributes["db.system"] == "postgresql"
            assert statement.attributes["db.name"] == database_url.database
            assert statement.attributes["net.peer.name"]
            assert ancestry(statement, known)[-1] == "POST /pay"
            assert server.start_time is not None
            assert server.end_time is not None
            assert statement.start_time is not None
            assert statement.end_time is not None
            assert server.start_time <= statement.start_time <= statement.end_time
            assert statement.end_time <= server.end_time
            operations.add(str(statement.attributes["db.statement"]).split()[0])
        assert {"SELECT", "WITH"} <= operations


def test_the_callers_trace_goes_on_to_the_statements_and_the_access_line(
    client: TestClient,
    clean_database: Engine,
    spans: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [order_id] = add_orders(clean_database, "10.00")
    body = json.dumps({"order_id": order_id, "amount": "10.00"})
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    # The lines go where build_app sent them, in the format and with the ids it chose; here
    # to the test's capture.
    handlers = logging.getLogger("payment").handlers
    [handler] = [h for h in handlers if type(h) is logging.StreamHandler]
    handler.setStream(sys.stderr)

    response = client.post("/pay", content=body, headers={**JSON, "traceparent": traceparent})

    assert response.status_code == 200
    assert set(by_trace(spans)) == {CALLER_TRACE}
    [server] = [span for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert server.parent is not None
    assert trace.format_span_id(server.parent.span_id) == CALLER_SPAN
    assert server.context is not None
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [access] = [line for line in lines if line["logger"] == "payment.access"]
    assert access["outcome"] == "paid"
    assert access["trace_id"] == CALLER_TRACE
    assert access["span_id"] == trace.format_span_id(server.context.span_id)


def test_the_readiness_probe_makes_no_span(client: TestClient, spans: InMemorySpanExporter) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200

    assert spans.get_finished_spans() == ()
