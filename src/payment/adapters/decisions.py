"""The handlers that follow a payment attempt's decision inside the process: its log line and
its metric (SPEC §3.7). Subscribed to ``AttemptDecided`` on the message bus by the composition
root, whatever entrypoint made the decision.

An entrypoint that writes a line of its own per request (the HTTP front's access line) opens
``request_fields`` for the request: the decision's fields then ride on that one line. Anywhere
else the decision gets a line of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from payment.domain.events import AttemptDecided, Event, RefundDecided

logger = logging.getLogger("payment.decision")

request_fields: ContextVar[dict[str, Any] | None] = ContextVar(
    "payment_request_fields", default=None
)
"""The fields the current request's own log line will carry, when an entrypoint opened them."""


def decision_fields(event: AttemptDecided) -> dict[str, Any]:
    attempt = event.attempt
    return {
        "outcome": event.outcome.value,
        "order_id": attempt.order_id,
        "claimed_amount": str(attempt.amount),
        "payment_id": event.payment_id,
        "idempotency_key": attempt.idempotency_key,
    }


def refund_decision_fields(event: RefundDecided) -> dict[str, Any]:
    attempt = event.attempt
    return {
        "outcome": event.outcome.value,
        "payment_id": attempt.payment_id,
        "claimed_amount": None if attempt.amount is None else str(attempt.amount),
        "reason": None if attempt.reason is None else attempt.reason.value,
        "refund_id": event.refund_id,
        "idempotency_key": attempt.idempotency_key,
    }


def log_decision(event: Event) -> None:
    if isinstance(event, AttemptDecided):
        fields = decision_fields(event)
    elif isinstance(event, RefundDecided):
        fields = refund_decision_fields(event)
    else:
        return
    carried = request_fields.get()
    if carried is not None:
        carried.update(fields)
        return
    attempt = event.attempt
    fields |= {"request_id": attempt.request_id, "caller": attempt.caller}
    logger.info("decision", extra={"fields": fields})


class DecisionCounter(Protocol):
    def count_decision(self, outcome: str) -> None: ...

    def count_refund_decision(self, outcome: str) -> None: ...


def count_decisions(counter: DecisionCounter) -> Callable[[Event], None]:
    """A handler counting each decision (a payment's, a refund's) by outcome on ``counter``."""

    def count(event: Event) -> None:
        if isinstance(event, AttemptDecided):
            counter.count_decision(event.outcome.value)
        elif isinstance(event, RefundDecided):
            counter.count_refund_decision(event.outcome.value)

    return count
