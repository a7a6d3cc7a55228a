"""One ``payment.access`` line per request: who asked what, how it ended, how long it took;
never a key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.adapters.logging import JsonFormatter
from payment.domain.errors import OrderChanged
from payment.entrypoints.http.auth import ANONYMOUS_CALLER, ApiKeys
from payment.entrypoints.http.observe import UNMATCHED_ROUTE
from tests.unit.fakes import BrokenUnitOfWork, FailingUnitOfWork, pending_order, store_with
from tests.unit.http_support import client_on, post_pay

ACCESS = "payment.access"
KEY = "shop-a-s3cr3t-0123456789"
PAY_1 = '{"order_id": 1, "amount": "10.00"}'
ACCESS_FIELDS = {
    "request_id",
    "caller",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "outcome",
}
DECISION_FIELDS = {"outcome", "order_id", "claimed_amount", "payment_id", "idempotency_key"}
"""What the line of a payment attempt that was decided adds (SPEC §3.7)."""


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Captured:
    # configure_logging stops the service's loggers from propagating; the capture needs it.
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    return Captured(caplog)


class Captured:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def all(self) -> list[logging.LogRecord]:
        return list(self._caplog.records)

    def records(self, logger: str) -> list[logging.LogRecord]:
        return [record for record in self._caplog.records if record.name == logger]

    def access(self) -> list[dict[str, Any]]:
        return [vars(record)["fields"] for record in self.records(ACCESS)]

    def as_json_lines(self) -> str:
        """Every captured record of any logger, as the service writes it."""
        formatter = JsonFormatter()
        return "\n".join(formatter.format(record) for record in self._caplog.records)


def test_each_request_leaves_one_access_line_with_its_request_id(
    client: TestClient, captured: Captured
) -> None:
    responses = [
        post_pay(client, PAY_1),
        client.get("/payments/1", headers={"X-Request-ID": "trace-7"}),
        client.get("/livez"),
        client.get("/nowhere"),
    ]

    lines = captured.access()
    assert [line["request_id"] for line in lines] == [r.headers["x-request-id"] for r in responses]
    assert lines[1]["request_id"] == "trace-7"
    assert set(lines[0]) == ACCESS_FIELDS | DECISION_FIELDS
    assert all(set(line) == ACCESS_FIELDS for line in lines[1:])


def test_a_payment_line_names_the_route_the_status_and_the_outcome(
    client: TestClient, captured: Captured
) -> None:
    post_pay(client, PAY_1)

    [line] = captured.access()
    assert line["method"] == "POST"
    assert line["route"] == "/pay"
    assert line["path"] == "/pay"
    assert line["status"] == 200
    assert line["outcome"] == "paid"
    assert line["order_id"] == 1
    assert line["claimed_amount"] == "10.00"
    assert line["payment_id"] == 1
    assert line["caller"] == ANONYMOUS_CALLER
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("body", "status", "outcome"),
    [
        ('{"order_id": 1, "amount": "9.99"}', 422, "amount_mismatch"),
        ('{"order_id": 99, "amount": "9.99"}', 404, "order_not_found"),
        ('{"order_id": 0, "amount": "9.99"}', 422, None),
        ("[1]", 400, None),
    ],
    ids=["mismatch", "not-found", "invalid", "malformed"],
)
def test_a_refusal_line_names_its_outcome_or_none_before_a_decision(
    client: TestClient, captured: Captured, body: str, status: int, outcome: str | None
) -> None:
    post_pay(client, body)

    [line] = captured.access()
    assert (line["status"], line["outcome"]) == (status, outcome)
    assert (set(line) == ACCESS_FIELDS | DECISION_FIELDS) == (outcome is not None)


def test_a_read_line_names_the_template_and_the_path(
    client: TestClient, captured: Captured
) -> None:
    client.get("/payments/4242")
    client.get("/orders/1/payments")
    client.get("/nowhere")

    assert [(line["route"], line["path"], line["status"]) for line in captured.access()] == [
        ("/payments/{payment_id}", "/payments/4242", 404),
        ("/orders/{order_id}/payments", "/orders/1/payments", 200),
        (UNMATCHED_ROUTE, "/nowhere", 404),
    ]
    assert all(line["outcome"] is None for line in captured.access())


def test_with_api_keys_the_line_names_the_caller_and_no_line_shows_the_key(
    store: InMemoryStore, captured: Captured
) -> None:
    authorization = {"Authorization": f"Bearer {KEY}"}
    with client_on(lambda: InMemoryUnitOfWork(store), api_keys=ApiKeys([KEY])) as client:
        paid = post_pay(client, PAY_1, headers=list(authorization.items()))
        client.get("/payments/1", headers=authorization)
        client.get("/orders/1/payments", headers={"Authorization": f"Bearer {KEY}x"})
        client.post("/pay", content=PAY_1, headers={"Authorization": f"Basic {KEY}"})

    assert paid.status_code == 200
    lines = captured.access()
    assert [line["status"] for line in lines] == [200, 200, 401, 401]
    assert lines[0]["caller"] == store.audit[0].caller
    assert lines[0]["caller"].startswith("key-")
    assert [line["caller"] for line in lines[2:]] == [ANONYMOUS_CALLER, ANONYMOUS_CALLER]
    text = captured.as_json_lines()
    assert '"outcome": "paid"' in text
    assert "s3cr3t" not in text
    assert "Bearer" not in text
    assert "Basic" not in text


def test_access_lines_are_json_objects_with_their_fields(
    client: TestClient, captured: Captured
) -> None:
    post_pay(client, PAY_1, headers=[("X-Request-ID", "trace-json"), ("Idempotency-Key", "k-json")])

    [line] = [json.loads(JsonFormatter().format(record)) for record in captured.records(ACCESS)]
    assert line["logger"] == ACCESS
    assert line["request_id"] == "trace-json"
    assert line["outcome"] == "paid"
    assert line["order_id"] == 1
    assert line["claimed_amount"] == "10.00"
    assert line["idempotency_key"] == "k-json"
    assert line["level"] == "info"
    assert line["message"] == "request"


def test_an_unexpected_failure_leaves_an_access_line_with_status_500(captured: Captured) -> None:
    with client_on(BrokenUnitOfWork, raise_server_exceptions=False) as client:
        response = client.get("/payments/1")

    [line] = captured.access()
    assert response.status_code == 500
    assert line["status"] == 500
    assert line["route"] == "/payments/{payment_id}"
    assert line["request_id"] == response.headers["x-request-id"]


def test_a_replay_and_a_reused_key_are_decisions_on_their_lines(
    client: TestClient, captured: Captured
) -> None:
    key = [("Idempotency-Key", "checkout-1")]
    post_pay(client, PAY_1, headers=key)
    post_pay(client, PAY_1, headers=key)
    post_pay(client, '{"order_id": 1, "amount": "9.99"}', headers=key)

    lines = captured.access()
    assert [(line["status"], line["outcome"]) for line in lines] == [
        (200, "paid"),
        (200, "replayed"),
        (422, "idempotency_key_reused"),
    ]
    assert [line["payment_id"] for line in lines] == [1, None, None]
    assert [line["claimed_amount"] for line in lines] == ["10.00", "10.00", "9.99"]
    assert all(line["idempotency_key"] == "checkout-1" for line in lines)


def test_an_attempt_that_never_decided_has_no_outcome_on_its_line(
    store: InMemoryStore, captured: Captured
) -> None:
    def contended() -> FailingUnitOfWork:
        return FailingUnitOfWork(store, fails_at="commit", error=OrderChanged())

    with client_on(contended) as client:
        post_pay(client, PAY_1)

    [line] = captured.access()
    assert (line["status"], line["outcome"]) == (503, None)
    assert set(line) == ACCESS_FIELDS


def test_the_service_logs_nothing_but_the_access_line_for_a_decision(
    client: TestClient, captured: Captured
) -> None:
    post_pay(client, PAY_1)

    service_records = [r for r in captured.all() if r.name.partition(".")[0] == "payment"]
    assert [record.name for record in service_records] == [ACCESS]
