"""The Idempotency-Key header over HTTP, on the in-memory adapters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.errors import OrderChanged
from payment.domain.model import OrderStatus
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.dependencies import ANONYMOUS_CALLER
from tests.unit.fakes import (
    FailingUnitOfWork,
    FixedClock,
    InterleavedUnitOfWork,
    paid_by_another,
    pending_order,
    store_with,
)
from tests.unit.http_support import (
    PAID_AT,
    assert_problem,
    client_on,
    database_that,
    post_pay,
)

REPLAYED = "idempotent-replayed"
PAY_123 = '{"order_id": 123, "amount": 199.99}'


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=123, total="199.99"),
        pending_order(order_id=124, total="5.00"),
        replace(pending_order(order_id=7, total="1.00"), status="cancelled"),
    )


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def pay_with_key(client: TestClient, body: str, key: str) -> Any:
    return post_pay(client, body, headers=[("Idempotency-Key", key)])


def assert_nothing_written(store: InMemoryStore) -> None:
    assert store.payments == {}
    assert store.audit == []
    assert store.idempotency == {}
    assert store.orders[123].status == OrderStatus.PENDING


def test_a_payment_with_a_key_is_replayed_byte_for_byte(
    client: TestClient, store: InMemoryStore
) -> None:
    first = pay_with_key(client, PAY_123, "order-123-attempt")

    again = pay_with_key(client, PAY_123, "order-123-attempt")

    assert first.status_code == 200
    assert REPLAYED not in first.headers
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers[REPLAYED] == "true"
    assert len(store.payments) == 1


def test_a_retry_spelling_the_amount_otherwise_is_the_same_request(
    client: TestClient, store: InMemoryStore
) -> None:
    first = pay_with_key(client, '{"order_id": 124, "amount": 5}', "k")

    again = pay_with_key(client, '{"amount": "5.00", "order_id": 124}', "k")

    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert len(store.payments) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"order_id": 999, "amount": 1}', 404),
        ('{"order_id": 7, "amount": 1}', 409),
        ('{"order_id": 123, "amount": 1}', 422),
    ],
    ids=["not-found", "not-payable", "mismatch"],
)
def test_a_refusal_with_a_key_is_replayed_byte_for_byte(
    client: TestClient, body: str, status: int
) -> None:
    first = pay_with_key(client, body, "k")

    again = pay_with_key(client, body, "k")

    assert first.status_code == status
    assert REPLAYED not in first.headers
    assert again.status_code == status
    assert again.content == first.content
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers[REPLAYED] == "true"


def test_a_mismatch_is_replayed_even_after_another_key_paid_the_order(
    client: TestClient, store: InMemoryStore
) -> None:
    first = pay_with_key(client, '{"order_id": 123, "amount": 1}', "wrong")
    assert pay_with_key(client, PAY_123, "right").status_code == 200

    again = pay_with_key(client, '{"order_id": 123, "amount": 1}', "wrong")

    assert_problem(again, 422, "amount_mismatch")
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert len(store.payments) == 1


def test_without_a_key_a_retry_is_decided_afresh(client: TestClient) -> None:
    assert post_pay(client, PAY_123).status_code == 200

    again = post_pay(client, PAY_123)

    assert_problem(again, 409, "order_not_payable")
    assert REPLAYED not in again.headers


def test_the_longest_key_is_accepted(client: TestClient, store: InMemoryStore) -> None:
    key = "k" * 255

    assert pay_with_key(client, PAY_123, key).status_code == 200
    assert (ANONYMOUS_CALLER, key) in store.idempotency


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "a b", "", "caf\u00e9"],
    ids=["too-long", "space-inside", "empty", "not-ascii"],
)
def test_an_invalid_key_is_a_422_naming_the_header_and_writes_nothing(
    client: TestClient, store: InMemoryStore, key: str
) -> None:
    response = client.post(
        "/pay",
        content=PAY_123,
        headers=[(b"Content-Type", b"application/json"), (b"Idempotency-Key", key.encode())],
    )

    problem = assert_problem(response, 422, "validation_error")
    assert len(problem["errors"]) == 1
    assert problem["errors"][0]["header"] == "Idempotency-Key"
    assert problem["errors"][0]["detail"]
    assert "pointer" not in problem["errors"][0]
    assert_nothing_written(store)


def test_a_key_sent_twice_is_a_422_and_writes_nothing(
    client: TestClient, store: InMemoryStore
) -> None:
    response = post_pay(
        client, PAY_123, headers=[("Idempotency-Key", "k"), ("Idempotency-Key", "k")]
    )

    problem = assert_problem(response, 422, "validation_error")
    assert [error["header"] for error in problem["errors"]] == ["Idempotency-Key"]
    assert_nothing_written(store)


def test_a_key_reused_for_another_body_is_a_422_and_pays_nothing(
    client: TestClient, store: InMemoryStore
) -> None:
    assert pay_with_key(client, PAY_123, "k").status_code == 200

    response = pay_with_key(client, '{"order_id": 124, "amount": 5}', "k")

    assert_problem(response, 422, "idempotency_key_reused")
    assert REPLAYED not in response.headers
    assert store.orders[124].status == OrderStatus.PENDING
    assert [p.order_id for p in store.payments.values()] == [123]
    assert store.audit[-1].outcome is Outcome.IDEMPOTENCY_KEY_REUSED


def test_a_request_whose_key_was_answered_while_it_was_deciding_gets_that_answer(
    store: InMemoryStore,
) -> None:
    first = paid_by_another(123, "199.99", key="k", caller=ANONYMOUS_CALLER)

    with client_on(lambda: InterleavedUnitOfWork(store, meanwhile=[first])) as client:
        duplicate = pay_with_key(client, PAY_123, "k")

    kept = store.idempotency[(ANONYMOUS_CALLER, "k")].record.answer
    assert duplicate.status_code == 200
    assert duplicate.headers[REPLAYED] == "true"
    assert duplicate.content == kept.body.encode()
    assert len(store.payments) == 1
    assert [record.outcome for record in store.audit] == [Outcome.PAID, Outcome.REPLAYED]


def test_a_request_on_an_order_that_never_holds_still_is_a_503_with_retry_after(
    store: InMemoryStore,
) -> None:
    def contended() -> FailingUnitOfWork:
        return FailingUnitOfWork(store, fails_at="commit", error=OrderChanged())

    with client_on(contended) as client:
        response = pay_with_key(client, PAY_123, "k")

    problem = assert_problem(response, 503, "service_unavailable")
    assert "123" in problem["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert REPLAYED not in response.headers
    assert_nothing_written(store)


def test_the_openapi_document_describes_the_idempotency_key_header(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/pay"]["post"]

    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header.get("required", False) is False
    assert "255" in header["description"]


def test_a_key_is_kept_for_the_configured_retention(store: InMemoryStore) -> None:
    services = Services(
        unit_of_work=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(PAID_AT),
        database_ready=database_that(answers=True),
        key_retention=timedelta(hours=72),
    )

    with TestClient(create_app(services)) as client:
        assert pay_with_key(client, PAY_123, "k").status_code == 200

    assert store.idempotency[(ANONYMOUS_CALLER, "k")].expires_at == PAID_AT + timedelta(hours=72)
