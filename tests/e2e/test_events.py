"""Every committed payment is told exactly once, in its own transaction, and the events can be
read again: against the running service (two workers) and the real database (SPEC §3.8)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
from sqlalchemy import Engine, text

from tests.e2e.checks import stored_payments
from tests.e2e.server import RunningService
from tests.support.orders import add_orders, broken_invariants

JSON = {"Content-Type": "application/json"}
ATTEMPTS_PER_ORDER = 12


def outbox_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT event_id, type, subject, payment_id, body, status"
                    " FROM outbox_events ORDER BY position"
                )
            ).all()
        )


def test_concurrent_attempts_keyed_or_not_tell_each_payment_once(
    service: RunningService, clean_database: Engine
) -> None:
    order_ids = add_orders(clean_database, "10.00", "20.00", "30.00", "40.00")
    attempts = [
        (order_id, f"{10 * (n + 1)}.00", None if i % 2 else f"key-{order_id}-{i % 4}")
        for n, order_id in enumerate(order_ids)
        for i in range(ATTEMPTS_PER_ORDER)
    ]

    def attempt(one: tuple[int, str, str | None]) -> int:
        order_id, amount, key = one
        headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
        with httpx2.Client(base_url=service.base_url, timeout=30.0) as client:
            body = f'{{"order_id": {order_id}, "amount": "{amount}"}}'
            return client.post("/pay", content=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(attempt, attempts))

    assert set(statuses) <= {200, 409}, statuses
    payments = stored_payments(clean_database)
    assert sorted(p.order_id for p in payments) == sorted(order_ids)
    rows = outbox_rows(clean_database)
    assert sorted(row[3] for row in rows) == sorted(p.id for p in payments)
    for event_id, type_, subject, payment_id, body, status in rows:
        [payment] = [p for p in payments if p.id == payment_id]
        event = json.loads(body)
        assert (type_, status, event["type"]) == ("payment.succeeded", "pending", type_)
        assert event["id"] == str(event_id)
        assert subject == event["subject"] == str(payment.order_id)
        assert event["data"]["amount"] == str(payment.amount)
        assert event["data"]["order_id"] == payment.order_id
    assert broken_invariants(clean_database) == []


def test_a_consumer_reads_every_event_again_by_id_and_page_by_page(
    client: httpx2.Client, clean_database: Engine
) -> None:
    order_ids = add_orders(clean_database, "1.00", "2.00", "3.00")
    receipts = []
    for n, order_id in enumerate(order_ids, start=1):
        response = client.post(
            "/pay", content=f'{{"order_id": {order_id}, "amount": {n}.00}}', headers=JSON
        )
        assert response.status_code == 200, response.text
        receipts.append(response.json())

    told: list[dict[str, Any]] = []
    after = "0"
    while True:
        page = client.get("/events", params={"after": after, "limit": 2})
        assert page.status_code == 200, page.text
        events = page.json()["events"]
        if not events:
            break
        told += events
        after = page.json()["next_after"]

    assert [e["data"]["payment_id"] for e in told] == [r["payment_id"] for r in receipts]
    assert [e["data"]["created_at"] for e in told] == [r["created_at"] for r in receipts]
    stored = {str(row[0]): row[4] for row in outbox_rows(clean_database)}
    for event in told:
        one = client.get(f"/events/{event['id']}")
        assert one.status_code == 200
        assert one.text == stored[event["id"]]
        assert one.json() == event
