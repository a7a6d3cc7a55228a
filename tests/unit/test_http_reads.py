"""GET /payments/{payment_id} and GET /orders/{order_id}/payments, on the in-memory adapters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import Money, Order, Payment
from tests.unit.fakes import FailingUnitOfWork, pending_order, store_with
from tests.unit.http_support import PAID_AT, assert_problem, client_on, post_pay

PAYMENT_FIELDS = {"order_id", "payment_id", "amount", "status", "created_at"}
BAD_IDS = ["0", "-1", "2147483648", "abc", "1.5", "99999999999999999999"]


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=123, total="199.99"),
        pending_order(order_id=5, total="0.10"),
        Order(id=7, status="cancelled", total=Money(Decimal("1.00"))),
    )


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def pay(client: TestClient, order_id: int, amount: str) -> dict[str, Any]:
    response = post_pay(client, f'{{"order_id": {order_id}, "amount": "{amount}"}}')
    assert response.status_code == 200
    receipt: dict[str, Any] = response.json()
    return receipt


def test_a_payment_is_read_with_the_receipts_fields_but_the_message_and_its_refunds(
    client: TestClient,
) -> None:
    pay(client, 5, "0.10")
    receipt = pay(client, 123, "199.99")

    response = client.get(f"/payments/{receipt['payment_id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "order_id": 123,
        "payment_id": receipt["payment_id"],
        "amount": "199.99",
        "status": "succeeded",
        "created_at": "2026-11-26T10:15:00Z",
        "amount_refunded": "0.00",
        "refunded": False,
    }
    assert {name: receipt[name] for name in PAYMENT_FIELDS} == {
        name: value for name, value in response.json().items() if name in PAYMENT_FIELDS
    }


def test_an_amount_is_read_back_exactly_as_a_decimal_string(client: TestClient) -> None:
    receipt = pay(client, 5, "0.1")

    assert client.get(f"/payments/{receipt['payment_id']}").json()["amount"] == "0.10"


def test_an_unknown_payment_is_a_404_payment_not_found_problem(client: TestClient) -> None:
    receipt = pay(client, 123, "199.99")
    missing = receipt["payment_id"] + 1

    problem = assert_problem(client.get(f"/payments/{missing}"), 404, "payment_not_found")

    assert str(missing) in problem["detail"]


def test_the_largest_id_is_a_valid_id_that_finds_nothing(client: TestClient) -> None:
    assert_problem(client.get("/payments/2147483647"), 404, "payment_not_found")
    assert_problem(client.get("/orders/2147483647/payments"), 404, "order_not_found")


@pytest.mark.parametrize("payment_id", BAD_IDS)
def test_a_payment_id_out_of_range_or_not_a_number_is_a_422_naming_the_parameter(
    client: TestClient, payment_id: str
) -> None:
    problem = assert_problem(client.get(f"/payments/{payment_id}"), 422, "validation_error")

    [error] = problem["errors"]
    assert error["parameter"] == "payment_id"
    assert error["detail"]
    assert "pointer" not in error


@pytest.mark.parametrize("order_id", BAD_IDS)
def test_an_order_id_out_of_range_or_not_a_number_is_a_422_naming_the_parameter(
    client: TestClient, order_id: str
) -> None:
    problem = assert_problem(client.get(f"/orders/{order_id}/payments"), 422, "validation_error")

    assert [error["parameter"] for error in problem["errors"]] == ["order_id"]


def test_the_payments_of_an_unknown_order_are_a_404_order_not_found_problem(
    client: TestClient,
) -> None:
    problem = assert_problem(client.get("/orders/999/payments"), 404, "order_not_found")

    assert "999" in problem["detail"]


@pytest.mark.parametrize("order_id", [123, 7], ids=["pending", "cancelled"])
def test_an_unpaid_order_has_an_empty_list_of_payments(client: TestClient, order_id: int) -> None:
    pay(client, 5, "0.10")

    response = client.get(f"/orders/{order_id}/payments")

    assert response.status_code == 200
    assert response.json() == {"order_id": order_id, "payments": []}


def test_a_paid_order_lists_its_payment_as_it_is_read_alone(client: TestClient) -> None:
    pay(client, 5, "0.10")
    receipt = pay(client, 123, "199.99")

    response = client.get("/orders/123/payments")

    assert response.status_code == 200
    single = client.get(f"/payments/{receipt['payment_id']}").json()
    assert response.json() == {"order_id": 123, "payments": [single]}


def test_an_orders_payments_are_listed_oldest_first(store: InMemoryStore) -> None:
    # Not reachable through /pay today (one succeeded payment per order): seeded directly.
    older = Payment(order_id=123, amount=Money(Decimal("100.00")), created_at=PAID_AT, id=1)
    newer = Payment(
        order_id=123, amount=Money(Decimal("99.99")), created_at=PAID_AT + timedelta(1), id=2
    )
    store.payments = {1: older, 2: newer}

    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        listed = client.get("/orders/123/payments").json()["payments"]

    assert [(p["payment_id"], p["amount"]) for p in listed] == [(1, "100.00"), (2, "99.99")]
    assert [p["created_at"] for p in listed] == ["2026-11-26T10:15:00Z", "2026-11-27T10:15:00Z"]


def test_reads_write_nothing(client: TestClient, store: InMemoryStore) -> None:
    receipt = pay(client, 123, "199.99")
    before = (dict(store.orders), dict(store.payments), list(store.audit))

    client.get(f"/payments/{receipt['payment_id']}")
    client.get("/payments/999")
    client.get("/orders/123/payments")
    client.get("/orders/999/payments")

    assert (store.orders, store.payments, store.audit) == before


@pytest.mark.parametrize("path", ["/payments/1", "/orders/123/payments"])
def test_a_read_on_an_unreachable_store_is_a_503_with_retry_after(
    store: InMemoryStore, path: str
) -> None:
    with client_on(lambda: FailingUnitOfWork(store, fails_at="read")) as client:
        response = client.get(path)

    assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
