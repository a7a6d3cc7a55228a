"""API keys (SPEC §4): ``Authorization: Bearer <key>`` on every endpoint but the probes and
the metrics, when keys are configured; the caller is known by an identity, never the key."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import OrderStatus
from payment.entrypoints.http.auth import ApiKeys
from tests.unit.fakes import pending_order, store_with
from tests.unit.http_support import assert_problem, client_on, post_pay

KEY_A = "shop-a-0123456789abcdef"
KEY_B = "shop-b-fedcba9876543210"
IDENTITY = re.compile(r"key-[0-9a-f]{12}")
PAY_1 = '{"order_id": 1, "amount": "10.00"}'
PAY_2 = '{"order_id": 2, "amount": "20.00"}'


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"), pending_order(2, "20.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    keys = ApiKeys([KEY_A, KEY_B])
    with client_on(lambda: InMemoryUnitOfWork(store), api_keys=keys) as client:
        yield client


def pay(client: TestClient, body: str, headers: dict[str, str]) -> Any:
    return post_pay(client, body, headers=list(headers.items()))


def assert_unauthorized(response: Any) -> dict[str, Any]:
    problem = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer ")
    return problem


def assert_nothing_written(store: InMemoryStore) -> None:
    assert store.payments == {}
    assert store.audit == []
    assert store.idempotency == {}
    assert all(order.status == OrderStatus.PENDING for order in store.orders.values())


def test_a_request_without_a_key_is_a_401_with_a_bearer_challenge_and_writes_nothing(
    client: TestClient, store: InMemoryStore
) -> None:
    problem = assert_unauthorized(pay(client, PAY_1, {}))

    assert "Bearer" in problem["detail"]
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic c2hvcC1hOjAxMjM0NTY3ODlhYmNkZWY=",
        f"Basic {KEY_A}",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        KEY_A,
        f"Token {KEY_A}",
        f"Bearer{KEY_A}",
        "",
    ],
    ids=[
        "basic",
        "basic-with-the-key",
        "bearer-without-token",
        "bearer-space",
        "bearer-spaces",
        "bare-key",
        "other-scheme",
        "no-space",
        "empty",
    ],
)
def test_a_key_not_sent_as_a_bearer_token_is_a_401(
    client: TestClient, store: InMemoryStore, authorization: str
) -> None:
    assert_unauthorized(pay(client, PAY_1, {"Authorization": authorization}))
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "wrong",
    [KEY_A[:-1], KEY_A + "0", KEY_A.upper(), f"{KEY_A},{KEY_B}", "x" * 16, "ключ-0123456789ab"],
    ids=["shorter", "longer", "other-case", "both-keys", "unknown", "not-ascii"],
)
def test_a_wrong_key_is_a_401_saying_the_key_is_not_valid(
    client: TestClient, store: InMemoryStore, wrong: str
) -> None:
    response = client.post(
        "/pay",
        content=PAY_1,
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Authorization", b"Bearer " + wrong.encode()),
        ],
    )

    problem = assert_unauthorized(response)
    assert "not valid" in problem["detail"]
    assert wrong not in response.text
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {KEY_A}", f"bearer {KEY_A}", f"BEARER {KEY_A}", f"Bearer   {KEY_A}  "],
    ids=["canonical", "lower-case-scheme", "upper-case-scheme", "extra-spaces"],
)
def test_a_right_key_pays(client: TestClient, store: InMemoryStore, authorization: str) -> None:
    response = pay(client, PAY_1, {"Authorization": authorization})

    assert response.status_code == 200
    assert store.orders[1].status == OrderStatus.PAID


def test_the_callers_identity_not_its_key_reaches_the_audit_trail(
    client: TestClient, store: InMemoryStore
) -> None:
    pay(client, PAY_1, bearer(KEY_A))
    pay(client, PAY_1, bearer(KEY_A))

    callers = [record.caller for record in store.audit]
    assert len(callers) == 2
    assert callers[0] == callers[1]
    assert IDENTITY.fullmatch(callers[0])
    assert callers[0] == "key-" + hashlib.sha256(KEY_A.encode()).hexdigest()[:12]
    assert KEY_A not in callers[0]


def test_two_keys_are_two_callers(client: TestClient, store: InMemoryStore) -> None:
    pay(client, PAY_1, bearer(KEY_A))
    pay(client, PAY_2, bearer(KEY_B))

    [first, second] = [record.caller for record in store.audit]
    assert first != second
    assert all(IDENTITY.fullmatch(caller) for caller in (first, second))


def test_idempotency_keys_are_scoped_to_the_api_key(
    client: TestClient, store: InMemoryStore
) -> None:
    same = {"Idempotency-Key": "order-checkout-1"}

    first = pay(client, PAY_1, {**bearer(KEY_A), **same})
    other_caller = pay(client, PAY_2, {**bearer(KEY_B), **same})
    retry = pay(client, PAY_1, {**bearer(KEY_A), **same})

    assert first.status_code == 200
    assert other_caller.status_code == 200
    assert "idempotent-replayed" not in other_caller.headers
    assert other_caller.json()["order_id"] == 2
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert {order.status for order in store.orders.values()} == {OrderStatus.PAID}
    assert len(store.payments) == 2


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_the_probes_and_the_metrics_answer_without_a_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200
    assert client.get(path, headers=bearer("not-a-key-at-all")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/payments/1",
        "/orders/1/payments",
        "/nowhere",
        "/livez/",
        "/metrics/extra",
    ],
)
def test_every_other_path_needs_a_key(client: TestClient, path: str) -> None:
    assert_unauthorized(client.get(path))
    assert_unauthorized(client.get(path, headers=bearer(KEY_A + "x")))


def test_the_reads_answer_with_a_key(client: TestClient) -> None:
    receipt = pay(client, PAY_1, bearer(KEY_A)).json()

    payment = client.get(f"/payments/{receipt['payment_id']}", headers=bearer(KEY_B))
    listed = client.get("/orders/1/payments", headers=bearer(KEY_A))
    document = client.get("/openapi.json", headers=bearer(KEY_A))

    assert payment.status_code == 200
    assert payment.json()["payment_id"] == receipt["payment_id"]
    assert listed.json()["payments"] == [payment.json()]
    assert document.status_code == 200


def test_an_unauthorized_answer_carries_the_request_id(client: TestClient) -> None:
    response = client.get("/payments/1", headers={"X-Request-ID": "trace-401"})

    assert_unauthorized(response)
    assert response.headers["x-request-id"] == "trace-401"


@pytest.mark.parametrize("authorization", [None, "Bearer whatever-you-like", "Basic abc"])
def test_without_keys_configured_nothing_asks_for_one(
    store: InMemoryStore, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        paid = pay(client, PAY_1, headers)
        answers = [
            client.get(path, headers=headers)
            for path in (
                f"/payments/{paid.json()['payment_id']}",
                "/orders/1/payments",
                "/openapi.json",
                "/docs",
                "/livez",
                "/readyz",
                "/metrics",
            )
        ]

    assert paid.status_code == 200
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert [record.caller for record in store.audit] == ["anonymous"]


# ApiKeys itself


def test_api_keys_name_a_known_key_and_refuse_an_unknown_one() -> None:
    keys = ApiKeys([KEY_A, KEY_B])

    a, b = keys.caller(KEY_A), keys.caller(KEY_B)

    assert a is not None
    assert b is not None
    assert IDENTITY.fullmatch(a)
    assert a != b
    assert keys.caller(KEY_A) == a
    assert keys.caller(KEY_A + " ") is None
    assert keys.caller("") is None


def test_the_identity_of_a_key_does_not_depend_on_the_other_keys() -> None:
    assert ApiKeys([KEY_A]).caller(KEY_A) == ApiKeys([KEY_B, KEY_A]).caller(KEY_A)


def test_api_keys_never_hold_the_key_itself() -> None:
    keys = ApiKeys(iter([KEY_A, KEY_B]))

    held = repr(vars(keys)) + repr(keys) + str(keys)

    for key in (KEY_A, KEY_B):
        assert key not in held
        assert key.encode().hex() not in held


def test_api_keys_need_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ApiKeys([])
