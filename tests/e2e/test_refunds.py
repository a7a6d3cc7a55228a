"""Refunds against the running service (two workers) and the real database: 32 partial refunds
of one payment at once, whose sum exceeds it, never refund more than it; each 201 is a
committed refund with its event; replays return the first answer (SPEC §2 Refunds)."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, text

from tests.e2e.server import RunningService
from tests.support.orders import add_orders, broken_invariants

JSON = {"Content-Type": "application/json"}
AT_ONCE = 32
TIMEOUT_SECONDS = 30.0


def paid(client: httpx2.Client, engine: Engine, total: str) -> int:
    [order_id] = add_orders(engine, total)
    response = client.post(
        "/pay", content=f'{{"order_id": {order_id}, "amount": "{total}"}}', headers=JSON
    )
    assert response.status_code == 200, response.text
    payment_id: int = response.json()["payment_id"]
    return payment_id


def all_at_once(
    service: RunningService, payment_id: int, amounts: list[str], keys: list[str | None]
) -> list[httpx2.Response]:
    start = threading.Barrier(len(amounts), timeout=TIMEOUT_SECONDS)

    def one(call: tuple[str, str | None]) -> httpx2.Response:
        amount, key = call
        headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
        with httpx2.Client(base_url=service.base_url, timeout=TIMEOUT_SECONDS) as client:
            start.wait()
            return client.post(
                f"/payments/{payment_id}/refunds",
                content=f'{{"amount": "{amount}"}}',
                headers=headers,
            )

    with ThreadPoolExecutor(max_workers=len(amounts)) as pool:
        return list(pool.map(one, zip(amounts, keys, strict=True)))


def stored(engine: Engine, payment_id: int) -> tuple[Decimal, list[tuple[int, Decimal]]]:
    with engine.connect() as connection:
        refunded = connection.execute(
            text("SELECT amount_refunded FROM payments WHERE id = :id"), {"id": payment_id}
        ).scalar_one()
        rows = connection.execute(
            text("SELECT id, amount FROM refunds WHERE payment_id = :id ORDER BY id"),
            {"id": payment_id},
        ).all()
    return refunded, [(refund_id, amount) for refund_id, amount in rows]


@pytest.mark.parametrize("keyed", [False, True], ids=["without keys", "with keys"])
def test_32_partial_refunds_at_once_never_refund_more_than_the_payment(
    service: RunningService, client: httpx2.Client, clean_database: Engine, keyed: bool
) -> None:
    payment_id = paid(client, clean_database, "20.00")
    amounts = [f"{1 + n % 3}.00" for n in range(AT_ONCE)]  # 64.00 asked of 20.00
    keys: list[str | None] = [f"r-{n}" if keyed else None for n in range(AT_ONCE)]

    responses = all_at_once(service, payment_id, amounts, keys)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409, 422, 503}, statuses
    made = [r.json() for r in responses if r.status_code == 201]
    refunded, rows = stored(clean_database, payment_id)
    assert refunded <= Decimal("20.00")
    assert sorted((m["refund_id"], Decimal(m["amount"])) for m in made) == rows
    assert sum((amount for _, amount in rows), Decimal(0)) == refunded
    for response in responses:
        if response.status_code == 422:
            problem: dict[str, Any] = response.json()
            assert problem["code"] == "refund_exceeds_payment"
            assert Decimal(problem["amount_refundable"]) < Decimal(
                amounts[responses.index(response)]
            )
    assert statuses[201] >= 7  # at most 3.00 each: seven at least fit before 20.00 is reached
    if keyed:
        again = all_at_once(service, payment_id, amounts, keys)
        for before, retry in zip(responses, again, strict=True):
            if before.status_code == 503:  # nothing was written, nor kept for the key
                continue
            assert (retry.status_code, retry.json()) == (before.status_code, before.json())
            assert retry.headers["Idempotent-Replayed"] == "true"
        fresh = [
            retry
            for before, retry in zip(responses, again, strict=True)
            if before.status_code == 503 and retry.status_code == 201
        ]
        refunded_after, rows_after = stored(clean_database, payment_id)
        assert len(rows_after) == len(rows) + len(fresh)
        assert refunded_after <= Decimal("20.00")
    assert broken_invariants(clean_database) == []


def test_a_refund_is_told_as_refund_succeeded_and_read_back(
    client: httpx2.Client, clean_database: Engine
) -> None:
    payment_id = paid(client, clean_database, "9.99")

    first = client.post(
        f"/payments/{payment_id}/refunds",
        content='{"amount": "0.99", "reason": "requested_by_customer"}',
        headers={**JSON, "Idempotency-Key": "e2e-refund"},
    )
    replay = client.post(
        f"/payments/{payment_id}/refunds",
        content='{"amount": 0.99, "reason": "requested_by_customer"}',
        headers={**JSON, "Idempotency-Key": "e2e-refund"},
    )
    rest = client.post(f"/payments/{payment_id}/refunds", content="{}", headers=JSON)

    assert first.status_code == replay.status_code == rest.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert rest.json()["amount"] == "9.00"
    view = client.get(f"/payments/{payment_id}").json()
    assert (view["amount_refunded"], view["refunded"]) == ("9.99", True)
    listed = client.get(f"/payments/{payment_id}/refunds").json()
    assert [r["refund_id"] for r in listed["refunds"]] == [
        first.json()["refund_id"],
        rest.json()["refund_id"],
    ]
    events = client.get("/events").json()["events"]
    told = [e["data"] for e in events if e["type"] == "refund.succeeded"]
    assert [(d["refund_id"], d["amount"], d["amount_refunded"]) for d in told] == [
        (first.json()["refund_id"], "0.99", "0.99"),
        (rest.json()["refund_id"], "9.00", "9.99"),
    ]
    assert broken_invariants(clean_database) == []
