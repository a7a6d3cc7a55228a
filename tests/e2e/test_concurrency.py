"""Simultaneous payments against two server processes: each order is paid exactly once, and the
database proves it (SPEC §3.1, §3.2)."""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx2
from sqlalchemy import Engine

from tests.e2e.checks import assert_problem, stored_order, stored_payments
from tests.e2e.server import RunningService
from tests.support.orders import add_orders, broken_invariants

ORDERS = 6
ATTEMPTS_PER_ORDER = 24
TOTALS = [str(Decimal("10.01") * n) for n in range(1, ORDERS + 1)]
JSON = {"Content-Type": "application/json"}
PATIENCE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Attempt:
    order_id: int
    amount: str
    """Raw JSON text of the amount: a number such as ``10.01`` or a string such as ``"10.01"``."""
    right: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    attempt: Attempt
    response: httpx2.Response

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.response.json()
        return body


def release_together(service: RunningService, attempts: list[Attempt]) -> list[Outcome]:
    """Every attempt on its own connection, all sent at the same moment."""
    start = threading.Barrier(len(attempts), timeout=PATIENCE_SECONDS)
    tls = ssl.create_default_context()  # one for all: building one per client costs ~30 ms

    def attempt(one: Attempt) -> Outcome:
        with httpx2.Client(
            base_url=service.base_url, timeout=PATIENCE_SECONDS, verify=tls
        ) as client:
            start.wait()
            response = client.post(
                "/pay",
                content=f'{{"order_id": {one.order_id}, "amount": {one.amount}}}'.encode(),
                headers=JSON,
            )
            return Outcome(one, response)

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        return list(pool.map(attempt, attempts))


def interleaved(per_order: dict[int, list[Attempt]]) -> list[Attempt]:
    """One attempt of each order in turn, so that the orders are contended side by side."""
    columns = zip(*per_order.values(), strict=True)
    return [attempt for column in columns for attempt in column]


def wrong_amounts(total: str) -> list[str]:
    cents = Decimal("0.01")
    exact = Decimal(total)
    return [str(exact + cents), str(exact - cents), f'"{exact + 1}"', f'"{exact * 2}"']


def assert_each_order_paid_once(
    engine: Engine, totals: dict[int, str], winners: dict[int, Outcome]
) -> None:
    """The database holds exactly one succeeded payment per order, for its total, and it is the
    one each winning receipt names."""
    assert broken_invariants(engine) == []
    payments = stored_payments(engine)
    assert sorted(p.order_id for p in payments) == sorted(totals)
    for payment in payments:
        assert payment.amount == Decimal(totals[payment.order_id])
        assert payment.status == "succeeded"
        assert payment.id == winners[payment.order_id].body["payment_id"]
        assert stored_order(engine, payment.order_id).status == "paid"


def winners_by_order(outcomes: list[Outcome]) -> dict[int, Outcome]:
    """The single 200 of each order; fails when an order has none or several."""
    successes = Counter(o.attempt.order_id for o in outcomes if o.status == 200)
    orders = {o.attempt.order_id for o in outcomes}
    assert successes == dict.fromkeys(orders, 1), successes
    winners = {o.attempt.order_id: o for o in outcomes if o.status == 200}
    receipts = [w.body["payment_id"] for w in winners.values()]
    assert len(set(receipts)) == len(receipts)
    return winners


def assert_refused_as_paid(outcome: Outcome) -> None:
    body = assert_problem(
        outcome.response, 409, "order_not_payable", extra=frozenset({"order_status"})
    )
    assert body["order_status"] == "paid"


def test_simultaneous_payments_of_the_same_orders_pay_each_exactly_once(
    service: RunningService, clean_database: Engine
) -> None:
    order_ids = add_orders(clean_database, *TOTALS)
    totals = dict(zip(order_ids, TOTALS, strict=True))
    attempts = interleaved(
        {
            order_id: [Attempt(order_id, total, right=True)] * ATTEMPTS_PER_ORDER
            for order_id, total in totals.items()
        }
    )

    outcomes = release_together(service, attempts)

    winners = winners_by_order(outcomes)
    for outcome in outcomes:
        if outcome is not winners[outcome.attempt.order_id]:
            assert_refused_as_paid(outcome)
    for order_id, winner in winners.items():
        assert winner.body["amount"] == totals[order_id]
    assert_each_order_paid_once(clean_database, totals, winners)


def test_simultaneous_right_and_wrong_amounts_pay_each_order_once_with_its_total(
    service: RunningService, clean_database: Engine
) -> None:
    order_ids = add_orders(clean_database, *TOTALS)
    totals = dict(zip(order_ids, TOTALS, strict=True))
    per_order: dict[int, list[Attempt]] = {}
    for order_id, total in totals.items():
        right = [Attempt(order_id, total, right=True)] * (ATTEMPTS_PER_ORDER // 2)
        wrong = [
            Attempt(order_id, amount, right=False)
            for amount in wrong_amounts(total) * (ATTEMPTS_PER_ORDER // 8)
        ]
        per_order[order_id] = [a for pair in zip(right, wrong, strict=True) for a in pair]

    outcomes = release_together(service, interleaved(per_order))

    winners = winners_by_order(outcomes)
    assert all(winner.attempt.right for winner in winners.values())
    for outcome in outcomes:
        if outcome is winners[outcome.attempt.order_id]:
            continue
        if outcome.attempt.right or outcome.status == 409:
            assert_refused_as_paid(outcome)
        else:
            assert_problem(outcome.response, 422, "amount_mismatch")
            assert totals[outcome.attempt.order_id] not in outcome.response.text
    assert_each_order_paid_once(clean_database, totals, winners)


def test_simultaneous_wrong_amounts_are_all_refused_and_write_nothing(
    service: RunningService, clean_database: Engine
) -> None:
    order_ids = add_orders(clean_database, *TOTALS)
    totals = dict(zip(order_ids, TOTALS, strict=True))
    attempts = interleaved(
        {
            order_id: [
                Attempt(order_id, amount, right=False)
                for amount in wrong_amounts(total) * (ATTEMPTS_PER_ORDER // 4)
            ]
            for order_id, total in totals.items()
        }
    )

    outcomes = release_together(service, attempts)

    for outcome in outcomes:
        assert_problem(outcome.response, 422, "amount_mismatch")
    assert stored_payments(clean_database) == []
    assert all(stored_order(clean_database, i).status == "pending" for i in order_ids)
    assert broken_invariants(clean_database) == []
