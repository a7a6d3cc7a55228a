"""GET /payments/{payment_id} and GET /orders/{order_id}/payments against the running service
and the real database (SPEC §2)."""

from __future__ import annotations

from typing import Any

import httpx2
from sqlalchemy import Engine

from tests.e2e.checks import assert_problem, stored_payments
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
VIEW_MEMBERS = {
    "order_id",
    "payment_id",
    "amount",
    "status",
    "created_at",
    "amount_refunded",
    "refunded",
}


def paid(client: httpx2.Client, order_id: int, amount: str) -> dict[str, Any]:
    response = client.post(
        "/pay", content=f'{{"order_id": {order_id}, "amount": "{amount}"}}', headers=JSON
    )
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


def view_of(receipt: dict[str, Any]) -> dict[str, Any]:
    """The payment as the reads show it: the receipt without its message, nothing refunded."""
    view = {name: value for name, value in receipt.items() if name != "message"}
    return {**view, "amount_refunded": "0.00", "refunded": False}


def test_a_payment_reads_back_as_its_receipt_without_the_message(
    client: httpx2.Client, clean_database: Engine
) -> None:
    first, second = add_orders(clean_database, "199.99", "0.30")
    receipts = [paid(client, first, "199.99"), paid(client, second, "0.30")]

    for receipt in receipts:
        response = client.get(f"/payments/{receipt['payment_id']}")

        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert set(response.json()) == VIEW_MEMBERS
        assert response.json() == view_of(receipt)


def test_a_missing_payment_is_not_found(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "199.99")
    receipt = paid(client, order_id, "199.99")

    response = client.get(f"/payments/{receipt['payment_id'] + 1}")

    assert_problem(response, 404, "payment_not_found")
    assert [p.id for p in stored_payments(clean_database)] == [receipt["payment_id"]]


def test_the_payments_of_a_missing_order_are_not_found(
    client: httpx2.Client, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = client.get(f"/orders/{order_id + 1}/payments")

    assert_problem(response, 404, "order_not_found")


def test_a_pending_order_has_no_payments_and_a_paid_one_has_its_payment(
    client: httpx2.Client, clean_database: Engine
) -> None:
    order_id, other = add_orders(clean_database, "199.99", "5.00")

    pending = client.get(f"/orders/{order_id}/payments")
    receipt = paid(client, order_id, "199.99")
    paid(client, other, "5.00")
    after = client.get(f"/orders/{order_id}/payments")

    assert pending.status_code == 200, pending.text
    assert pending.json() == {"order_id": order_id, "payments": []}
    assert after.status_code == 200, after.text
    assert after.json() == {"order_id": order_id, "payments": [view_of(receipt)]}


def test_ids_outside_the_range_are_validation_errors_not_server_errors(
    client: httpx2.Client, clean_database: Engine
) -> None:
    for path in ("/payments/0", "/payments/2147483648", "/orders/-1/payments", "/payments/x"):
        response = client.get(path)

        assert_problem(response, 422, "validation_error", extra=frozenset({"errors"}))
