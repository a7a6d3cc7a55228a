"""The HTTP API in-process, on the in-memory adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import Order, OrderStatus
from payment.entrypoints.http import Services, create_app
from tests.unit.fakes import (
    BrokenUnitOfWork,
    FixedClock,
    UnreachableUnitOfWork,
    pending_order,
    store_with,
)
from tests.unit.http_support import (
    PROBLEM_JSON,
    PROBLEM_MEMBERS,
    assert_problem,
    client_on,
    database_that,
    post_pay,
)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=123, total="199.99"),
        Order(id=7, status="cancelled", total=pending_order().total),
    )


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def test_a_payment_answers_exactly_the_fields_of_the_spec(
    client: TestClient, store: InMemoryStore
) -> None:
    response = post_pay(client, '{"order_id": 123, "amount": 199.99}')

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "message": "Payment successful",
        "order_id": 123,
        "payment_id": 1,
        "amount": "199.99",
        "status": "succeeded",
        "created_at": "2026-11-26T10:15:00Z",
    }
    assert store.orders[123].status == OrderStatus.PAID
    assert [p.amount.amount for p in store.payments.values()] == [Decimal("199.99")]


def test_a_decimal_string_amount_pays_too(client: TestClient) -> None:
    response = post_pay(client, '{"order_id": 123, "amount": "199.99"}')

    assert response.status_code == 200
    assert response.json()["amount"] == "199.99"


def test_the_payment_time_is_written_in_utc_with_a_z() -> None:
    store = store_with(pending_order(order_id=1, total="1.00"))
    moment = datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=UTC)
    app = create_app(
        Services(
            unit_of_work=lambda: InMemoryUnitOfWork(store),
            clock=FixedClock(moment),
            database_ready=database_that(answers=True),
        )
    )

    with TestClient(app) as client:
        response = post_pay(client, '{"order_id": 1, "amount": 1}')

    assert response.json()["created_at"] == "2026-01-02T03:04:05.006789Z"


def test_an_unknown_order_is_a_404_problem(client: TestClient) -> None:
    problem = assert_problem(
        post_pay(client, '{"order_id": 999, "amount": 1}'), 404, "order_not_found"
    )

    assert "999" in problem["detail"]


def test_an_order_paid_already_is_a_409_problem_with_its_status(client: TestClient) -> None:
    assert post_pay(client, '{"order_id": 123, "amount": 199.99}').status_code == 200

    problem = assert_problem(
        post_pay(client, '{"order_id": 123, "amount": 199.99}'), 409, "order_not_payable"
    )

    assert problem["order_status"] == "paid"


def test_a_cancelled_order_is_a_409_problem_with_its_status(client: TestClient) -> None:
    problem = assert_problem(
        post_pay(client, '{"order_id": 7, "amount": 199.99}'), 409, "order_not_payable"
    )

    assert problem["order_status"] == "cancelled"


def test_a_wrong_amount_is_a_422_problem_that_hides_the_total(
    client: TestClient, store: InMemoryStore
) -> None:
    response = post_pay(client, '{"order_id": 123, "amount": 199.98}')

    problem = assert_problem(response, 422, "amount_mismatch")
    assert "199.99" not in response.text
    assert "errors" not in problem
    assert store.orders[123].status == OrderStatus.PENDING
    assert store.payments == {}


def test_an_invalid_body_is_a_422_problem_listing_each_member_at_fault(
    client: TestClient, store: InMemoryStore
) -> None:
    response = post_pay(client, '{"order_id": 0, "amount": 199.999, "tip": 1}')

    problem = assert_problem(response, 422, "validation_error")
    assert sorted(error["pointer"] for error in problem["errors"]) == [
        "/amount",
        "/order_id",
        "/tip",
    ]
    assert all(set(error) == {"pointer", "detail"} for error in problem["errors"])
    assert store.payments == {}


@pytest.mark.parametrize("body", ["", "{", "[1]", '{"a": 1, "a": 2}', "[" * 60_000])
def test_a_body_that_is_not_a_json_object_is_a_400_problem(client: TestClient, body: str) -> None:
    assert_problem(post_pay(client, body), 400, "malformed_request")


def test_a_body_over_64_kib_is_a_413_problem(client: TestClient, store: InMemoryStore) -> None:
    body = '{"order_id": 123, "amount": 199.99}'.ljust(64 * 1024 + 1)

    assert_problem(post_pay(client, body), 413, "payload_too_large")
    assert store.payments == {}


def test_a_body_of_exactly_64_kib_is_read(client: TestClient) -> None:
    body = '{"order_id": 123, "amount": 199.99}'.ljust(64 * 1024)

    assert post_pay(client, body).status_code == 200


def test_a_streamed_body_over_64_kib_is_a_413_problem(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"order_id": 123, "amount": 199.99'
        for _ in range(65):
            yield b" " * 1024
        yield b"}"

    response = client.post("/pay", content=chunks(), headers={"Content-Type": "application/json"})

    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


def test_an_unreachable_database_is_a_503_problem_with_retry_after() -> None:
    with client_on(UnreachableUnitOfWork) as client:
        response = post_pay(client, '{"order_id": 123, "amount": 199.99}')

    assert_problem(response, 503, "service_unavailable")
    assert response.headers["retry-after"].isdigit()
    assert int(response.headers["retry-after"]) >= 1
    assert "s3cr3tpw" not in response.text
    assert "postgresql" not in response.text


def test_an_unexpected_failure_is_a_500_problem_that_shows_nothing_inside() -> None:
    with client_on(BrokenUnitOfWork, raise_server_exceptions=False) as client:
        response = post_pay(client, '{"order_id": 123, "amount": 199.99}')

    assert_problem(response, 500, "internal_error")
    assert "s3cr3tpw" not in response.text
    assert "SELECT" not in response.text
    assert "Traceback" not in response.text


def test_readiness_follows_the_database(store: InMemoryStore) -> None:
    with client_on(
        lambda: InMemoryUnitOfWork(store), database_ready=database_that(answers=False)
    ) as client:
        not_ready = client.get("/readyz")
        alive = client.get("/livez")

    assert_problem(not_ready, 503, "service_unavailable")
    assert "retry-after" in not_ready.headers
    assert alive.status_code == 200


def test_an_unknown_route_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/nowhere"), 404, "not_found")


def pay_operation(client: TestClient) -> dict[str, Any]:
    document = client.get("/openapi.json").json()
    operation: dict[str, Any] = document["paths"]["/pay"]["post"]
    return operation


def test_the_openapi_document_lists_every_answer_of_pay(client: TestClient) -> None:
    responses = pay_operation(client)["responses"]

    assert {"200", "400", "404", "409", "413", "422", "503"} <= set(responses)


@pytest.mark.parametrize(
    ("status", "codes"),
    [
        ("400", {"malformed_request"}),
        ("404", {"order_not_found"}),
        ("409", {"order_not_payable", "idempotency_key_in_use"}),
        ("413", {"payload_too_large"}),
        ("422", {"validation_error", "amount_mismatch", "idempotency_key_reused"}),
        ("503", {"service_unavailable"}),
    ],
)
def test_the_openapi_document_shows_each_error_of_pay_as_a_problem_with_an_example(
    client: TestClient, status: str, codes: set[str]
) -> None:
    content = pay_operation(client)["responses"][status]["content"]

    assert list(content) == [PROBLEM_JSON]
    examples = [example["value"] for example in content[PROBLEM_JSON]["examples"].values()]
    assert codes <= {example["code"] for example in examples}
    for example in examples:
        assert set(example) >= PROBLEM_MEMBERS
        assert example["status"] == int(status)


def test_the_openapi_document_shows_the_success_body_and_the_request_body(
    client: TestClient,
) -> None:
    document = json.loads(client.get("/openapi.json").text, parse_float=Decimal)
    operation = document["paths"]["/pay"]["post"]
    schemas = document["components"]["schemas"]

    success = operation["responses"]["200"]["content"]["application/json"]["schema"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert success == {"$ref": "#/components/schemas/PaymentReceipt"}
    assert request == {"$ref": "#/components/schemas/PayRequest"}
    assert schemas["PayRequest"]["examples"] == [{"order_id": 123, "amount": Decimal("199.99")}]
    assert schemas["PaymentReceipt"]["examples"][0]["amount"] == "199.99"
    assert set(schemas["PayRequest"]["required"]) == {"order_id", "amount"}
