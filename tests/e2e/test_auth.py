"""API keys (SPEC §2, §4): a service configured with two keys, with spaces around them,
answers only callers holding one of them, but for the probes and the metrics; each key is an
idempotency scope of its own; and no key ever shows in what the server writes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, text

from tests.e2e.checks import assert_problem, log_lines, stored_order, wait_for
from tests.e2e.secured import KeyedService, bearer
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
CALLER = re.compile(r"key-[0-9a-f]+")


@pytest.fixture
def client(keyed_service: KeyedService) -> Iterator[httpx2.Client]:
    """A client of the keyed service that sends no key unless told."""
    with httpx2.Client(base_url=keyed_service.service.base_url, timeout=15.0) as client:
        yield client


def pay(
    client: httpx2.Client, order_id: int, amount: str, headers: dict[str, str]
) -> httpx2.Response:
    return client.post(
        "/pay",
        content=f'{{"order_id": {order_id}, "amount": "{amount}"}}',
        headers={**JSON, **headers},
    )


def assert_unauthorized(response: httpx2.Response) -> dict[str, Any]:
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    return body


def lines_of(keyed_service: KeyedService, request_id: str) -> list[dict[str, Any]]:
    """Every line the request left: its one access line, which carries its decision."""
    return [
        line
        for line in log_lines(keyed_service.service.output())
        if line.get("request_id") == request_id
    ]


def test_a_request_without_a_valid_key_is_unauthorized_and_writes_nothing(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    key, _ = keyed_service.keys
    (order_id,) = add_orders(clean_database, "19.99")
    refused = {
        "no header": {},
        "basic scheme": {"Authorization": f"Basic {key}"},
        "no scheme": {"Authorization": key},
        "bearer without a key": {"Authorization": "Bearer"},
        "wrong key": bearer(key[:-1] + ("0" if key[-1] != "0" else "1")),
        "key with a suffix": bearer(key + "x"),
        "key in upper case": bearer(key.upper()),
    }

    for what, headers in refused.items():
        for response in (
            pay(client, order_id, "19.99", headers),
            client.get(f"/orders/{order_id}/payments", headers=headers),
            client.get("/payments/1", headers=headers),
        ):
            assert response.status_code == 401, (what, response.request.url, response.text)
            assert_unauthorized(response)
            assert key not in response.text

    order = stored_order(clean_database, order_id)
    assert (order.status, order.paid_at) == ("pending", None)
    with clean_database.connect() as connection:
        attempts = connection.execute(text("SELECT count(*) FROM payment_attempts")).scalar_one()
    assert attempts == 0


def test_each_configured_key_pays_and_reads(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")

    payments = zip(keyed_service.keys, (first, second), ("10.00", "20.00"), strict=True)
    for key, order_id, amount in payments:
        paid = pay(client, order_id, amount, bearer(key))
        assert paid.status_code == 200, paid.text
        payment_id = paid.json()["payment_id"]
        read = client.get(f"/payments/{payment_id}", headers=bearer(key))
        listed = client.get(f"/orders/{order_id}/payments", headers=bearer(key))
        assert read.status_code == 200, read.text
        assert read.json()["payment_id"] == payment_id
        assert listed.status_code == 200, listed.text
        assert [p["payment_id"] for p in listed.json()["payments"]] == [payment_id]
        assert client.get("/openapi.json", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_probes_and_metrics_answer_without_a_key(client: httpx2.Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200, response.text


def test_the_same_idempotency_key_under_two_api_keys_is_two_scopes(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    one, two = keyed_service.keys
    first, second = add_orders(clean_database, "30.00", "40.00")
    shared = {"Idempotency-Key": f"e2e-shared-{uuid.uuid4().hex}"}

    under_one = pay(client, first, "30.00", {**bearer(one), **shared})
    under_two = pay(client, second, "40.00", {**bearer(two), **shared})
    replay_under_one = pay(client, first, "30.00", {**bearer(one), **shared})
    reuse_under_two = pay(client, first, "30.00", {**bearer(two), **shared})

    assert under_one.status_code == 200, under_one.text
    assert under_two.status_code == 200, under_two.text
    assert "idempotent-replayed" not in under_two.headers
    assert under_one.json()["payment_id"] != under_two.json()["payment_id"]
    assert (
        stored_order(clean_database, first).status,
        stored_order(clean_database, second).status,
    ) == ("paid", "paid")
    # Each scope still holds the key for its own request: a replay in the first, a reuse with
    # another body in the second.
    assert replay_under_one.status_code == 200, replay_under_one.text
    assert replay_under_one.headers["idempotent-replayed"] == "true"
    assert replay_under_one.json() == under_one.json()
    assert_problem(reuse_under_two, 422, "idempotency_key_reused")
    with clean_database.connect() as connection:
        callers = (
            connection.execute(
                text("SELECT caller FROM idempotency_keys WHERE key = :key ORDER BY caller"),
                {"key": shared["Idempotency-Key"]},
            )
            .scalars()
            .all()
        )
    assert len(callers) == 2, callers
    assert all(CALLER.fullmatch(caller) for caller in callers), callers


def test_no_key_ever_shows_in_the_output_while_the_caller_identity_does(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    one, two = keyed_service.keys
    orders = add_orders(clean_database, "1.00", "2.00", "3.00")
    request_ids = {key: f"e2e-auth-{uuid.uuid4().hex}" for key in (one, two)}
    refused_key = one[:-4] + ("cafe" if one.endswith("beef") else "beef")
    for key, order_id, amount in zip((one, two), orders[:2], ("1.00", "2.00"), strict=True):
        headers = {**bearer(key), "X-Request-ID": request_ids[key]}
        response = pay(client, order_id, amount, headers)
        assert response.status_code == 200, response.text
    assert pay(client, orders[2], "3.00", bearer(refused_key)).status_code == 401
    wait_for(
        lambda: all(lines_of(keyed_service, r) for r in request_ids.values()),
        timeout=10.0,
        what=keyed_service.service.output,
    )

    output = keyed_service.service.output()
    for secret in (one, two, refused_key):
        assert secret not in output
        assert secret.rsplit("-", 1)[-1] not in output  # not even the key's random part
    callers: dict[str, str] = {}
    for key, request_id in request_ids.items():
        [line] = lines_of(keyed_service, request_id)
        assert (line["logger"], line["outcome"]) == ("payment.access", "paid"), line
        assert CALLER.fullmatch(line["caller"]), line
        callers[key] = line["caller"]
    assert callers[one] != callers[two]
    with clean_database.connect() as connection:
        stored = (
            connection.execute(text("SELECT DISTINCT caller FROM payment_attempts")).scalars().all()
        )
    assert sorted(stored) == sorted(callers.values())
