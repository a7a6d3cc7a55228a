"""Paying through the use case in tests, without the HTTP layer: attempts and a plain way of
answering decisions, recognisable in assertions."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

from payment.domain import services
from payment.domain.attempts import Decision, Outcome, PaymentAttempt, RecordedAnswer
from payment.domain.messagebus import MessageBus
from payment.domain.model import Money
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import Clock, UnitOfWork

CALLER = "test-caller"
REQUEST_ID = "test-request"

STATUS_OF = {
    Outcome.PAID: 200,
    Outcome.ORDER_NOT_FOUND: 404,
    Outcome.ORDER_NOT_PAYABLE: 409,
    Outcome.AMOUNT_MISMATCH: 422,
    Outcome.IDEMPOTENCY_KEY_REUSED: 422,
}


def plain_answer(decision: Decision) -> RecordedAnswer:
    """A status by outcome, and a JSON body naming the outcome and the payment id, if any."""
    payment_id = None if decision.payment is None else decision.payment.id
    body = json.dumps({"outcome": decision.outcome.value, "payment_id": payment_id})
    return RecordedAnswer(STATUS_OF[decision.outcome], body)


def attempt(
    order_id: int,
    amount: str | Decimal | Money,
    *,
    key: str | None = None,
    caller: str = CALLER,
    request_id: str = REQUEST_ID,
) -> PaymentAttempt:
    money = amount if isinstance(amount, Money) else Money(Decimal(amount))
    return PaymentAttempt(
        order_id=order_id,
        amount=money,
        caller=caller,
        request_id=request_id,
        idempotency_key=key,
    )


async def pay(
    order_id: int,
    amount: str | Decimal | Money,
    *,
    uow: UnitOfWork,
    clock: Clock,
    key: str | None = None,
    caller: str = CALLER,
    request_id: str = REQUEST_ID,
    key_retention: timedelta = services.DEFAULT_KEY_RETENTION,
    policy: PaymentPolicy = services.DEFAULT_POLICY,
    bus: MessageBus | None = None,
) -> services.Reply:
    """The ``pay`` use case on one attempt, answered with ``plain_answer``."""
    return await services.pay(
        attempt(order_id, amount, key=key, caller=caller, request_id=request_id),
        uow=uow,
        clock=clock,
        answer_for=plain_answer,
        key_retention=key_retention,
        policy=policy,
        bus=bus,
    )
