"""POST /payments/{payment_id}/refunds, GET /refunds/{refund_id} and GET
/payments/{payment_id}/refunds, on the in-memory adapters."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import Money
from tests.unit.fakes import pending_order, store_with
from tests.unit.http_support import assert_problem, client_on, post_pay

JSON = {"Content-Type": "application/json"}
REFUND_MEMBERS = {
    "refund_id",
    "payment_id",
    "order_id",
    "amount",
    "reason",
    "status",
    "created_at",
}


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


@pytest.fixture
def payment_id(client: TestClient) -> int:
    response = post_pay(client, '{"order_id": 1, "amount": "10.00"}')
    assert response.status_code == 200
    paid: int = response.json()["payment_id"]
    return paid


def post_refund(
    client: TestClient, payment_id: int, body: str = "{}", *, key: str | None = None
) -> Any:
    headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
    return client.post(f"/payments/{payment_id}/refunds", content=body, headers=headers)


def test_a_partial_refund_is_201_with_the_refund(client: TestClient, payment_id: int) -> None:
    response = post_refund(client, payment_id, '{"amount": 2.5, "reason": "duplicate"}')

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == REFUND_MEMBERS
    assert body["payment_id"] == payment_id
    assert (body["order_id"], body["amount"], body["reason"]) == (1, "2.50", "duplicate")
    assert body["status"] == "succeeded"
    assert body["created_at"] == "2026-11-26T10:15:00Z"


def test_the_payment_shows_what_was_refunded_and_an_empty_body_refunds_the_rest(
    client: TestClient, payment_id: int, store: InMemoryStore
) -> None:
    post_refund(client, payment_id, '{"amount": "4.00"}')
    partly = client.get(f"/payments/{payment_id}").json()
    rest = post_refund(client, payment_id)
    refunded = client.get(f"/payments/{payment_id}").json()

    assert (partly["amount_refunded"], partly["refunded"]) == ("4.00", False)
    assert rest.status_code == 201
    assert rest.json()["amount"] == "6.00"
    assert rest.json()["reason"] is None
    assert (refunded["amount_refunded"], refunded["refunded"]) == ("10.00", True)
    assert client.get("/orders/1/payments").json()["payments"] == [refunded]
    assert store.orders[1].status == "paid"


def test_more_than_remains_is_422_and_says_what_remains(
    client: TestClient, payment_id: int, store: InMemoryStore
) -> None:
    post_refund(client, payment_id, '{"amount": "9.99"}')

    problem = assert_problem(
        post_refund(client, payment_id, '{"amount": "0.02"}'), 422, "refund_exceeds_payment"
    )

    assert problem["amount_refundable"] == "0.01"
    assert store.payments[payment_id].amount_refunded == Money.of("9.99")


def test_nothing_left_is_409_and_a_missing_payment_404(client: TestClient, payment_id: int) -> None:
    post_refund(client, payment_id)

    assert_problem(post_refund(client, payment_id), 409, "payment_not_refundable")
    assert_problem(post_refund(client, payment_id + 1), 404, "payment_not_found")


@pytest.mark.parametrize(
    "body",
    [
        '{"amount": 0}',
        '{"amount": "-1.00"}',
        '{"amount": 1.001}',
        '{"amount": "1e2"}',
        '{"amount": true}',
        '{"reason": "because"}',
        '{"amount": "1.00", "currency": "EUR"}',
        '{"amount": NaN}',
    ],
)
def test_bad_input_is_422_and_refunds_nothing(
    client: TestClient, payment_id: int, store: InMemoryStore, body: str
) -> None:
    assert_problem(post_refund(client, payment_id, body), 422, "validation_error")
    assert store.refunds == {}


def test_a_body_that_is_not_json_or_not_sent_as_json_refunds_nothing(
    client: TestClient, payment_id: int, store: InMemoryStore
) -> None:
    assert_problem(post_refund(client, payment_id, "[1]"), 400, "malformed_request")
    form = client.post(
        f"/payments/{payment_id}/refunds",
        content="amount=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(form, 415, "unsupported_media_type")
    assert store.refunds == {}


def test_a_keyed_retry_is_replayed_and_the_key_with_another_body_is_refused(
    client: TestClient, payment_id: int, store: InMemoryStore
) -> None:
    first = post_refund(client, payment_id, '{"amount": "1.00"}', key="refund-1")
    again = post_refund(client, payment_id, '{"amount": 1.0}', key="refund-1")
    other = post_refund(client, payment_id, '{"amount": "2.00"}', key="refund-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_problem(other, 422, "idempotency_key_reused")
    assert len(store.refunds) == 1


def test_refunds_read_back_oldest_first(client: TestClient, payment_id: int) -> None:
    made = [post_refund(client, payment_id, f'{{"amount": "{a}"}}').json() for a in (1, 2)]

    one = client.get(f"/refunds/{made[0]['refund_id']}")
    listed = client.get(f"/payments/{payment_id}/refunds")

    assert one.status_code == 200
    assert one.json() == made[0]
    assert listed.json() == {
        "payment_id": payment_id,
        "amount": "10.00",
        "amount_refunded": "3.00",
        "refunded": False,
        "refunds": made,
    }
    assert_problem(client.get("/refunds/999"), 404, "refund_not_found")
    assert_problem(client.get(f"/payments/{payment_id + 1}/refunds"), 404, "payment_not_found")
    assert_problem(client.get("/refunds/0"), 422, "validation_error")


def test_each_refund_decision_is_logged_and_counted(
    client: TestClient, payment_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="payment.access"):
        post_refund(client, payment_id, '{"amount": "11.00"}')

    [line] = [r for r in caplog.records if r.name == "payment.access"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["outcome"] == "refund_exceeds_payment"
    assert (fields["payment_id"], fields["claimed_amount"]) == (payment_id, "11.00")
    assert 'payment_refund_decisions_total{outcome="refund_exceeds_payment"} 1.0' in (
        client.get("/metrics").text
    )
