"""GET /events/{event_id} and GET /events: the events told to the shop, read again by a
consumer catching up (SPEC §3.8), on the in-memory adapters."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.entrypoints.http.auth import ApiKeys
from tests.unit.fakes import pending_order, store_with
from tests.unit.http_support import assert_problem, client_on, post_pay

CLOUD_EVENT_MEMBERS = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "data",
}


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(*(pending_order(order_id=n, total=f"{n}.50") for n in range(1, 6)))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def pay(client: TestClient, order_id: int) -> dict[str, Any]:
    response = post_pay(client, f'{{"order_id": {order_id}, "amount": "{order_id}.50"}}')
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


def test_a_payment_is_told_as_one_cloud_event_readable_by_its_id(client: TestClient) -> None:
    receipt = pay(client, 3)
    post_pay(client, '{"order_id": 3, "amount": "3.50"}')  # refused: already paid

    page = client.get("/events")

    assert page.status_code == 200
    [event] = page.json()["events"]
    assert set(event) == CLOUD_EVENT_MEMBERS
    assert event["type"] == "payment.succeeded"
    assert event["subject"] == "3"
    assert event["data"] == {
        "order_id": 3,
        "payment_id": receipt["payment_id"],
        "amount": "3.50",
        "created_at": receipt["created_at"],
    }
    one = client.get(f"/events/{event['id']}")
    assert one.status_code == 200
    assert one.headers["content-type"] == "application/json"
    assert one.json() == event


def test_pages_follow_the_cursor_in_the_order_events_were_written(client: TestClient) -> None:
    paid = [pay(client, order_id)["payment_id"] for order_id in (5, 1, 4, 2)]

    first = client.get("/events", params={"limit": 3}).json()
    second = client.get("/events", params={"after": first["next_after"], "limit": 3}).json()
    third = client.get("/events", params={"after": second["next_after"]}).json()

    told = [e["data"]["payment_id"] for e in first["events"] + second["events"]]
    assert told == paid
    assert (len(first["events"]), len(second["events"])) == (3, 1)
    assert third == {"events": [], "next_after": second["next_after"]}


def test_an_unknown_event_is_404_and_a_malformed_id_or_cursor_is_422(
    client: TestClient,
) -> None:
    assert_problem(client.get(f"/events/{uuid.uuid4()}"), 404, "event_not_found")
    for bad in ["not-a-uuid", "1", "' OR 1=1 --"]:
        assert_problem(client.get(f"/events/{bad}"), 422, "validation_error")
    for params in [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "1001"}]:
        assert_problem(client.get("/events", params=params), 422, "validation_error")


def test_events_need_a_key_when_keys_are_configured(store: InMemoryStore) -> None:
    with client_on(lambda: InMemoryUnitOfWork(store), api_keys=ApiKeys(["k" * 32])) as client:
        assert_problem(client.get("/events"), 401, "unauthorized")
        allowed = client.get("/events", headers={"Authorization": "Bearer " + "k" * 32})
        assert allowed.status_code == 200


def test_the_decision_rides_on_the_access_line_and_is_counted(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        pay(client, 2)

    lines = [r for r in caplog.records if r.name in ("payment.access", "payment.decision")]
    [line] = lines
    assert line.name == "payment.access"
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["outcome"], fields["order_id"], fields["claimed_amount"]) == ("paid", 2, "2.50")
    metrics = client.get("/metrics").text
    assert 'payment_decisions_total{outcome="paid"} 1.0' in metrics
    assert json.loads(client.get("/events").text)["events"][0]["subject"] == "2"
