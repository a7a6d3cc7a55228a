"""The handlers that follow a decision: its log line and its count, whatever the entrypoint;
and the ids the events are told with."""

from __future__ import annotations

import logging
import time
import uuid
from decimal import Decimal

import pytest

from payment.adapters.cloudevents import new_event_id
from payment.adapters.decisions import count_decisions, log_decision, request_fields
from payment.domain.attempts import Outcome, PaymentAttempt
from payment.domain.events import AttemptDecided, PaymentSucceeded
from payment.domain.messagebus import MessageBus
from payment.domain.model import Money
from tests.unit.fakes import FixedClock

ATTEMPT = PaymentAttempt(
    order_id=9, amount=Money(Decimal("5.00")), caller="shop", request_id="r-1", idempotency_key="k"
)
DECIDED = AttemptDecided(ATTEMPT, Outcome.PAID, payment_id=4)


class Counts:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def count_decision(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    def count_refund_decision(self, outcome: str) -> None:
        self.outcomes.append(f"refund {outcome}")


def test_outside_a_request_the_decision_gets_a_line_of_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="payment.decision"):
        log_decision(DECIDED)

    [record] = caplog.records
    assert record.fields == {  # type: ignore[attr-defined]
        "outcome": "paid",
        "order_id": 9,
        "claimed_amount": "5.00",
        "payment_id": 4,
        "idempotency_key": "k",
        "request_id": "r-1",
        "caller": "shop",
    }


def test_inside_a_request_the_fields_ride_on_its_own_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    carried: dict[str, object] = {}
    token = request_fields.set(carried)
    try:
        with caplog.at_level(logging.INFO, logger="payment.decision"):
            log_decision(DECIDED)
    finally:
        request_fields.reset(token)

    assert caplog.records == []
    assert carried["outcome"] == "paid"
    assert carried["payment_id"] == 4


def test_the_bus_runs_every_handler_of_a_type_and_survives_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = Counts()
    bus = MessageBus()

    def broken(event: object) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe(AttemptDecided, broken)
    bus.subscribe(AttemptDecided, count_decisions(counts))
    paid = PaymentSucceeded(4, 9, Money(Decimal("5.00")), FixedClock().now())

    with caplog.at_level(logging.ERROR, logger="payment.messagebus"):
        bus.handle([paid, DECIDED, AttemptDecided(ATTEMPT, Outcome.REPLAYED)])

    assert counts.outcomes == ["paid", "replayed"]
    assert len(caplog.records) == 2
    assert "handler bug" in caplog.text


def test_event_ids_are_uuid7_and_later_ones_sort_later() -> None:
    first = new_event_id()
    time.sleep(0.002)
    later = new_event_id()

    for made in (first, later):
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == made
    assert first < later
    assert len({new_event_id() for _ in range(1000)}) == 1000
