"""`payment-service serve` with OTEL_EXPORTER_OTLP_ENDPOINT set: each worker exports its spans
by OTLP over HTTP to the collector named, one trace per request with the statements inside,
continuing the caller's traceparent; the access line names the trace."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from tests.e2e.checks import log_lines, wait_for
from tests.e2e.server import RunningService, running_service
from tests.support.orders import add_orders
from tests.support.otlp_collector import CLIENT, SERVER, Collector, otlp_collector

CALLER_TRACE = "5bd66ef5095369c7b0d1f8f4bd33716a"
CALLER_SPAN = "c532cb4098ac3dd2"
EXPORT_SECONDS = 10.0


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with otlp_collector() as collector:
        yield collector


@pytest.fixture(scope="module")
def traced_service(
    database_url: URL, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    with running_service(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.address,
            "OTEL_SERVICE_NAME": "payment-service-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds between batches
        },
        tmp_path_factory.mktemp("traced-service"),
    ) as running:
        yield running


def test_a_payment_is_exported_as_one_trace_with_its_statements_inside(
    traced_service: RunningService, collector: Collector, clean_database: Engine
) -> None:
    [order_id] = add_orders(clean_database, "12.50")
    body = json.dumps({"order_id": order_id, "amount": "12.50"})
    headers = {
        "Content-Type": "application/json",
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "X-Request-ID": "e2e-traced-payment",
    }
    with httpx2.Client(base_url=traced_service.base_url, timeout=15.0) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/pay", content=body, headers=headers).status_code == 200

    def traced() -> list[str]:
        return [s.name for s in collector.spans() if s.trace_id == CALLER_TRACE]

    wait_for(
        lambda: "POST /pay" in traced() and len(traced()) >= 3,
        timeout=EXPORT_SECONDS,
        what=lambda: f"{traced()}\n{traced_service.output()}",
    )
    spans = [span for span in collector.spans() if span.trace_id == CALLER_TRACE]
    [server] = [span for span in spans if span.kind == SERVER]
    statements = [span for span in spans if span.kind == CLIENT]
    assert server.parent_id == CALLER_SPAN
    assert server.attributes["http.route"] == "/pay"
    assert server.resource["service.name"] == "payment-service-e2e"
    assert len(statements) >= 2
    assert all(statement.parent_id == server.span_id for statement in statements)
    assert all(statement.attributes["db.system"] == "postgresql" for statement in statements)
    assert not [span for span in collector.spans() if span.attributes.get("url.path") == "/readyz"]
    [access] = [
        line
        for line in log_lines(traced_service.output())
        if line.get("request_id") == "e2e-traced-payment"
    ]
    assert (access["trace_id"], access["span_id"]) == (CALLER_TRACE, server.span_id)
