"""X-Request-ID on every answer, and the decision of each payment attempt on the request's one
log line (SPEC §3.7)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.entrypoints.http.dependencies import ANONYMOUS_CALLER
from tests.unit.fakes import FailingUnitOfWork, pending_order, store_with
from tests.unit.http_support import client_on, post_pay

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
PAY_123 = '{"order_id": 123, "amount": 199.99}'
ACCESS = "payment.access"
DECISION_FIELDS = {"outcome", "order_id", "claimed_amount", "payment_id", "idempotency_key"}


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=123, total="199.99"),
        replace(pending_order(order_id=7, total="1.00"), status="cancelled"),
    )


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def pay_as(
    client: TestClient, body: str, request_id: str | None = None, *, key: str | None = None
) -> Any:
    """POST /pay with this X-Request-ID and Idempotency-Key, each left out when None."""
    headers = [("X-Request-ID", request_id), ("Idempotency-Key", key)]
    return post_pay(client, body, headers=[(n, v) for n, v in headers if v is not None])


@pytest.mark.parametrize(
    "request_id",
    ["abc", "r" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:1/2;3=4!~"],
)
def test_a_sane_request_id_is_echoed_and_reaches_the_audit_trail(
    client: TestClient, store: InMemoryStore, request_id: str
) -> None:
    response = pay_as(client, PAY_123, request_id)

    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert [record.request_id for record in store.audit] == [request_id]


def test_a_missing_request_id_is_generated_anew_for_each_request(
    client: TestClient, store: InMemoryStore
) -> None:
    first = pay_as(client, PAY_123)
    second = pay_as(client, PAY_123)

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_ID.fullmatch(request_id) for request_id in ids)
    assert ids[0] != ids[1]
    assert [record.request_id for record in store.audit] == ids


@pytest.mark.parametrize(
    "request_id",
    ["r" * 129, "r" * 200, "has space", "", "tab\there", "caf\u00e9"],
    ids=["129-chars", "200-chars", "space", "empty", "tab", "not-ascii"],
)
def test_an_insane_request_id_is_replaced_by_a_generated_one(
    client: TestClient, store: InMemoryStore, request_id: str
) -> None:
    response = client.post(
        "/pay",
        content=PAY_123,
        headers=[(b"Content-Type", b"application/json"), (b"X-Request-ID", request_id.encode())],
    )

    returned = response.headers["x-request-id"]
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(returned)
    assert [record.request_id for record in store.audit] == [returned]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("[1]", 400),
        ('{"order_id": 999, "amount": 1}', 404),
        ('{"order_id": 7, "amount": 1}', 409),
        ('{"order_id": 0, "amount": 1}', 422),
        ('{"order_id": 123, "amount": 1}', 422),
        (" " * (64 * 1024 + 1), 413),
    ],
)
def test_an_error_answer_carries_the_request_id_too(
    client: TestClient, body: str, status: int
) -> None:
    echoed = pay_as(client, body, "trace-1")
    generated = pay_as(client, body)

    assert echoed.status_code == status
    assert echoed.headers["x-request-id"] == "trace-1"
    assert generated.status_code == status
    assert GENERATED_ID.fullmatch(generated.headers["x-request-id"])


def test_an_invalid_key_answer_carries_the_request_id(client: TestClient) -> None:
    response = pay_as(client, PAY_123, "trace-1", key="a b")

    assert response.status_code == 422
    assert response.headers["x-request-id"] == "trace-1"


def test_an_unknown_route_and_a_probe_carry_the_request_id(client: TestClient) -> None:
    missing = client.get("/nowhere", headers={"X-Request-ID": "trace-2"})
    alive = client.get("/livez", headers={"X-Request-ID": "trace-3"})

    assert missing.status_code == 404
    assert missing.headers["x-request-id"] == "trace-2"
    assert alive.headers["x-request-id"] == "trace-3"


def test_an_unavailable_store_answer_carries_the_request_id(store: InMemoryStore) -> None:
    with client_on(lambda: FailingUnitOfWork(store, fails_at="ground")) as client:
        response = pay_as(client, PAY_123, "trace-4")

    assert response.status_code == 503
    assert response.headers["x-request-id"] == "trace-4"


def test_an_unexpected_failure_carries_the_request_id(store: InMemoryStore) -> None:
    def broken() -> FailingUnitOfWork:
        return FailingUnitOfWork(store, fails_at="ground", error=RuntimeError("bug"))

    with client_on(broken, raise_server_exceptions=False) as client:
        response = pay_as(client, PAY_123, "trace-5")

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-5"


@pytest.fixture
def decisions(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Decisions:
    # configure_logging stops the service's loggers from propagating; the capture needs it.
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    return Decisions(caplog)


class Decisions:
    """The access lines captured so far that carry a decision, by their structured fields."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def lines(self) -> list[dict[str, Any]]:
        records = [record for record in self._caplog.records if record.name == ACCESS]
        found: list[dict[str, Any]] = [vars(record)["fields"] for record in records]
        return found

    def fields(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["outcome"] is not None]

    def service_loggers(self) -> set[str]:
        """The service's loggers that logged anything."""
        return {r.name for r in self._caplog.records if r.name.partition(".")[0] == "payment"}


@pytest.mark.parametrize(
    ("body", "outcome", "order_id", "claimed", "status"),
    [
        (PAY_123, "paid", 123, "199.99", 200),
        ('{"order_id": 999, "amount": 1.5}', "order_not_found", 999, "1.50", 404),
        ('{"order_id": 7, "amount": "1"}', "order_not_payable", 7, "1.00", 409),
        ('{"order_id": 123, "amount": 1}', "amount_mismatch", 123, "1.00", 422),
    ],
)
def test_each_decision_is_logged_once_with_its_fields(
    client: TestClient,
    store: InMemoryStore,
    decisions: Decisions,
    body: str,
    outcome: str,
    order_id: int,
    claimed: str,
    status: int,
) -> None:
    response = pay_as(client, body, "trace-1")

    assert response.status_code == status
    [line] = decisions.fields()
    assert decisions.lines() == [line]
    assert line["request_id"] == "trace-1"
    assert line["outcome"] == outcome
    assert line["order_id"] == order_id
    assert line["claimed_amount"] == claimed
    assert line["status"] == status
    assert line["caller"] == ANONYMOUS_CALLER
    assert line["route"] == "/pay"
    assert (line["payment_id"] is not None) == (outcome == "paid")
    assert line["payment_id"] == store.audit[0].payment_id
    assert line["idempotency_key"] is None


def test_no_line_is_logged_apart_from_the_access_line(
    client: TestClient, decisions: Decisions
) -> None:
    pay_as(client, PAY_123, "trace-1", key="k1")
    pay_as(client, PAY_123, "trace-2", key="k1")

    assert decisions.service_loggers() == {ACCESS}
    assert len(decisions.lines()) == 2
    assert all(set(line) >= DECISION_FIELDS for line in decisions.lines())


def test_the_payment_line_names_the_payment(
    client: TestClient, store: InMemoryStore, decisions: Decisions
) -> None:
    pay_as(client, PAY_123, "trace-1", key="k1")

    [line] = decisions.fields()
    assert line["payment_id"] == next(iter(store.payments))
    assert line["payment_id"] == store.audit[0].payment_id
    assert line["idempotency_key"] == "k1"


def test_a_replay_is_logged_as_a_decision_of_its_own(
    client: TestClient, decisions: Decisions
) -> None:
    pay_as(client, PAY_123, "first", key="k1")
    pay_as(client, PAY_123, "retry", key="k1")

    assert [(line["request_id"], line["outcome"]) for line in decisions.fields()] == [
        ("first", "paid"),
        ("retry", "replayed"),
    ]
    assert decisions.fields()[1]["status"] == 200


def test_a_key_reused_with_another_request_is_logged_as_a_decision_of_its_own(
    client: TestClient, decisions: Decisions
) -> None:
    pay_as(client, PAY_123, "first", key="k1")
    response = pay_as(client, '{"order_id": 7, "amount": "1"}', "other", key="k1")

    assert response.status_code == 422
    assert [
        (line["request_id"], line["outcome"], line["status"]) for line in decisions.fields()
    ] == [
        ("first", "paid", 200),
        ("other", "idempotency_key_reused", 422),
    ]


def test_a_generated_request_id_is_the_one_logged(client: TestClient, decisions: Decisions) -> None:
    response = pay_as(client, PAY_123)

    [line] = decisions.fields()
    assert line["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"order_id": 0, "amount": 1}', None),
        ("[1]", None),
        (" " * (64 * 1024 + 1), None),
        (PAY_123, "a b"),
    ],
    ids=["validation", "malformed", "too-large", "invalid-key"],
)
def test_a_request_refused_before_any_decision_logs_no_decision(
    client: TestClient, store: InMemoryStore, decisions: Decisions, body: str, key: str | None
) -> None:
    response = pay_as(client, body, "trace-1", key=key)

    assert response.status_code >= 400
    assert decisions.fields() == []
    [line] = decisions.lines()
    assert line["status"] == response.status_code
    assert (DECISION_FIELDS - {"outcome"}) & set(line) == set()
    assert store.audit == []


def test_an_unavailable_store_logs_no_decision(store: InMemoryStore, decisions: Decisions) -> None:
    with client_on(lambda: FailingUnitOfWork(store, fails_at="commit")) as client:
        response = pay_as(client, PAY_123, "trace-1")

    assert response.status_code == 503
    assert decisions.fields() == []
    assert [line["status"] for line in decisions.lines()] == [503]
    assert store.audit == []
