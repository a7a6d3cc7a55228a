"""POST /pay over HTTP against the running service and the real database (SPEC §2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx2
import pytest
from sqlalchemy import Engine

from tests.e2e.checks import assert_nothing_written, assert_problem, stored_order, stored_payments
from tests.support.orders import add_orders, broken_invariants

JSON = {"Content-Type": "application/json"}
LIMIT = 64 * 1024
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
RECEIPT_MEMBERS = {"message", "order_id", "payment_id", "amount", "status", "created_at"}


def pay(client: httpx2.Client, body: bytes) -> httpx2.Response:
    return client.post("/pay", content=body, headers=JSON)


def pay_body(order_id: int, amount: str) -> bytes:
    """A body with ``amount`` written as raw JSON text, e.g. ``199.99`` or ``"199.99"``."""
    return f'{{"order_id": {order_id}, "amount": {amount}}}'.encode()


def test_paying_the_exact_total_returns_a_receipt_and_records_the_payment(
    client: httpx2.Client, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, pay_body(order_id, "199.99"))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    receipt = response.json()
    assert set(receipt) == RECEIPT_MEMBERS
    assert receipt["message"] == "Payment successful"
    assert receipt["order_id"] == order_id
    assert receipt["amount"] == "199.99"
    assert receipt["status"] == "succeeded"
    assert ISO_UTC.fullmatch(receipt["created_at"]), receipt["created_at"]
    created_at = datetime.fromisoformat(receipt["created_at"])
    assert created_at.utcoffset() is not None
    [payment] = stored_payments(clean_database)
    assert payment.id == receipt["payment_id"]
    assert payment.order_id == order_id
    assert payment.amount == Decimal("199.99")
    assert payment.status == "succeeded"
    assert payment.created_at == created_at.astimezone(UTC).replace(tzinfo=None)
    order = stored_order(clean_database, order_id)
    assert order.status == "paid"
    assert order.paid_at is not None
    assert broken_invariants(clean_database) == []


def test_amount_as_a_decimal_string_pays_the_order(
    client: httpx2.Client, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, pay_body(order_id, '"199.99"'))

    assert response.status_code == 200, response.text
    assert response.json()["amount"] == "199.99"
    assert [p.amount for p in stored_payments(clean_database)] == [Decimal("199.99")]
    assert stored_order(clean_database, order_id).status == "paid"


def test_amount_is_read_exactly_not_as_a_binary_float(
    client: httpx2.Client, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "0.30")

    response = pay(client, pay_body(order_id, "0.3"))

    assert response.status_code == 200, response.text
    assert response.json()["amount"] == "0.30"
    assert [p.amount for p in stored_payments(clean_database)] == [Decimal("0.30")]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"order_id": 1, "amount": ', id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'[{"order_id": 1, "amount": 199.99}]', id="json-array"),
        pytest.param(b'"pay order 1"', id="json-string"),
        pytest.param(b"199.99", id="json-number"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b'{"order_id": 1, "amount": 1, "amount": 199.99}', id="repeated-member"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
    ],
)
def test_body_that_is_not_a_json_object_is_a_malformed_request(
    client: httpx2.Client, clean_database: Engine, body: bytes
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, body)

    assert_problem(response, 400, "malformed_request")
    assert_nothing_written(clean_database, order_id)


def test_unknown_order_is_not_found(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, pay_body(order_id + 1, "199.99"))

    assert_problem(response, 404, "order_not_found")
    assert_nothing_written(clean_database, order_id)


def test_paid_order_cannot_be_paid_again(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "199.99")
    first = pay(client, pay_body(order_id, "199.99"))
    assert first.status_code == 200, first.text
    paid = stored_order(clean_database, order_id)

    again = pay(client, pay_body(order_id, "199.99"))

    body = assert_problem(again, 409, "order_not_payable", extra=frozenset({"order_status"}))
    assert body["order_status"] == "paid"
    assert [p.id for p in stored_payments(clean_database)] == [first.json()["payment_id"]]
    assert stored_order(clean_database, order_id) == paid
    assert broken_invariants(clean_database) == []


@pytest.mark.parametrize("status", ["cancelled", "refunded"])
def test_order_in_another_status_than_pending_is_not_payable(
    client: httpx2.Client, clean_database: Engine, status: str
) -> None:
    (order_id,) = add_orders(clean_database, "199.99", status=status)

    response = pay(client, pay_body(order_id, "199.99"))

    body = assert_problem(response, 409, "order_not_payable", extra=frozenset({"order_status"}))
    assert body["order_status"] == status
    assert stored_payments(clean_database) == []
    order = stored_order(clean_database, order_id)
    assert (order.status, order.paid_at) == (status, None)


def padded_pay_body(order_id: int, size: int) -> bytes:
    """A valid body for ``order_id`` of exactly ``size`` bytes, padded with JSON whitespace."""
    body = pay_body(order_id, "199.99")
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_body_of_exactly_64_kib_is_accepted(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, padded_pay_body(order_id, LIMIT))

    assert response.status_code == 200, response.text


def test_body_over_64_kib_with_a_content_length_is_too_large(
    client: httpx2.Client, clean_database: Engine
) -> None:
    first, second = add_orders(clean_database, "199.99", "199.99")
    body = padded_pay_body(first, LIMIT + 1)

    response = pay(client, body)

    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert_problem(response, 413, "payload_too_large")
    assert_nothing_written(clean_database, first, second)
    assert pay(client, pay_body(second, "199.99")).status_code == 200


def chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_over_64_kib_is_too_large(
    client: httpx2.Client, clean_database: Engine
) -> None:
    first, second = add_orders(clean_database, "199.99", "199.99")

    response = client.post("/pay", content=chunks(padded_pay_body(first, 4 * LIMIT)), headers=JSON)

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert_nothing_written(clean_database, first, second)
    assert pay(client, pay_body(second, "199.99")).status_code == 200


def test_chunked_body_within_64_kib_is_read(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = client.post("/pay", content=chunks(padded_pay_body(order_id, LIMIT)), headers=JSON)

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text


HOSTILE_BODIES = [
    pytest.param('{"order_id": ORDER, "amount": NaN}', "/amount", id="amount-nan"),
    pytest.param('{"order_id": ORDER, "amount": Infinity}', "/amount", id="amount-infinity"),
    pytest.param('{"order_id": ORDER, "amount": -Infinity}', "/amount", id="amount-minus-inf"),
    pytest.param('{"order_id": ORDER, "amount": true}', "/amount", id="amount-true"),
    pytest.param('{"order_id": ORDER, "amount": null}', "/amount", id="amount-null"),
    pytest.param('{"order_id": ORDER, "amount": [199.99]}', "/amount", id="amount-array"),
    pytest.param('{"order_id": ORDER, "amount": {"v": 1}}', "/amount", id="amount-object"),
    pytest.param('{"order_id": ORDER, "amount": "1e2"}', "/amount", id="amount-exponent-text"),
    pytest.param('{"order_id": ORDER, "amount": "NaN"}', "/amount", id="amount-nan-text"),
    pytest.param('{"order_id": ORDER, "amount": ""}', "/amount", id="amount-empty-text"),
    pytest.param('{"order_id": ORDER, "amount": " 199.99"}', "/amount", id="amount-spaced"),
    pytest.param('{"order_id": ORDER, "amount": "-199.99"}', "/amount", id="amount-neg-text"),
    pytest.param('{"order_id": ORDER, "amount": "199,99"}', "/amount", id="amount-comma"),
    pytest.param('{"order_id": ORDER, "amount": 1.234}', "/amount", id="amount-3-places"),
    pytest.param('{"order_id": ORDER, "amount": 1.99991e2}', "/amount", id="amount-hidden"),
    pytest.param('{"order_id": ORDER, "amount": 1e-7}', "/amount", id="amount-tiny"),
    pytest.param('{"order_id": ORDER, "amount": 1e999999999}', "/amount", id="amount-huge-exp"),
    pytest.param('{"order_id": ORDER, "amount": ' + "9" * 5000 + "}", "/amount", id="amount-long"),
    pytest.param('{"order_id": ORDER, "amount": 0}', "/amount", id="amount-zero"),
    pytest.param('{"order_id": ORDER, "amount": 0.00}', "/amount", id="amount-zero-cents"),
    pytest.param('{"order_id": ORDER, "amount": -5}', "/amount", id="amount-negative"),
    pytest.param('{"order_id": ORDER, "amount": 100000000.00}', "/amount", id="amount-over-max"),
    pytest.param(
        '{"order_id": ORDER, "amount": 199.99, "discount": 199.99}', "/discount", id="unknown"
    ),
    pytest.param('{"order_id": ORDER}', "/amount", id="missing-amount"),
    pytest.param('{"amount": 199.99}', "/order_id", id="missing-order-id"),
    pytest.param('{"order_id": 2147483648, "amount": 199.99}', "/order_id", id="order-id-over"),
    pytest.param('{"order_id": 0, "amount": 199.99}', "/order_id", id="order-id-zero"),
    pytest.param('{"order_id": -1, "amount": 199.99}', "/order_id", id="order-id-negative"),
    pytest.param('{"order_id": "1", "amount": 199.99}', "/order_id", id="order-id-text"),
    pytest.param('{"order_id": 1.5, "amount": 199.99}', "/order_id", id="order-id-fraction"),
    pytest.param('{"order_id": true, "amount": 199.99}', "/order_id", id="order-id-true"),
    pytest.param(
        '{"order_id": ' + "9" * 5000 + ', "amount": 199.99}', "/order_id", id="order-id-long"
    ),
]


@pytest.mark.parametrize(("template", "pointer"), HOSTILE_BODIES)
def test_hostile_input_is_a_validation_error_that_points_at_the_member(
    client: httpx2.Client, clean_database: Engine, template: str, pointer: str
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, template.replace("ORDER", str(order_id)).encode())

    body = assert_problem(response, 422, "validation_error", extra=frozenset({"errors"}))
    errors = body["errors"]
    assert errors, body
    assert all(set(error) == {"pointer", "detail"} for error in errors), errors
    assert all(isinstance(error["detail"], str) and error["detail"] for error in errors)
    assert pointer in [error["pointer"] for error in errors], errors
    assert_nothing_written(clean_database, order_id)


@pytest.mark.parametrize("amount", ["199.98", "200.00", "19999", '"0.01"', "99999999.99"])
def test_amount_other_than_the_total_is_a_mismatch_that_keeps_the_total_secret(
    client: httpx2.Client, clean_database: Engine, amount: str
) -> None:
    (order_id,) = add_orders(clean_database, "199.99")

    response = pay(client, pay_body(order_id, amount))

    assert_problem(response, 422, "amount_mismatch")
    assert "199.99" not in response.text
    assert_nothing_written(clean_database, order_id)
