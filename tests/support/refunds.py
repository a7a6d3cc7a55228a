"""Refunding through the use case in tests, without the HTTP layer: attempts and a plain way of
answering refund decisions, recognisable in assertions."""

from __future__ import annotations

import json
from decimal import Decimal

from payment.domain import refunding
from payment.domain.attempts import RecordedAnswer
from payment.domain.messagebus import MessageBus
from payment.domain.model import Money
from payment.domain.ports import Clock, UnitOfWork
from payment.domain.refunds import RefundAttempt, RefundDecision, RefundOutcome, RefundReason
from tests.support.attempts import CALLER, REQUEST_ID

STATUS_OF = {
    RefundOutcome.REFUNDED: 201,
    RefundOutcome.PAYMENT_NOT_FOUND: 404,
    RefundOutcome.PAYMENT_NOT_REFUNDABLE: 409,
    RefundOutcome.REFUND_EXCEEDS_PAYMENT: 422,
    RefundOutcome.IDEMPOTENCY_KEY_REUSED: 422,
}


def plain_refund_answer(decision: RefundDecision) -> RecordedAnswer:
    """A status by outcome, and a JSON body naming the outcome, the refund id and amount."""
    made = decision.refund
    body = json.dumps(
        {
            "outcome": decision.outcome.value,
            "refund_id": None if made is None else made.id,
            "amount": None if made is None else str(made.amount),
        }
    )
    return RecordedAnswer(STATUS_OF[decision.outcome], body)


def refund_attempt(
    payment_id: int,
    amount: str | Decimal | None = None,
    *,
    reason: RefundReason | None = None,
    key: str | None = None,
    caller: str = CALLER,
    request_id: str = REQUEST_ID,
) -> RefundAttempt:
    return RefundAttempt(
        payment_id=payment_id,
        caller=caller,
        request_id=request_id,
        amount=None if amount is None else Money(Decimal(amount)),
        reason=reason,
        idempotency_key=key,
    )


async def refund(
    payment_id: int,
    amount: str | Decimal | None = None,
    *,
    uow: UnitOfWork,
    clock: Clock,
    reason: RefundReason | None = None,
    key: str | None = None,
    caller: str = CALLER,
    request_id: str = REQUEST_ID,
    bus: MessageBus | None = None,
) -> refunding.RefundReply:
    """The ``refund`` use case on one attempt, answered with ``plain_refund_answer``."""
    return await refunding.refund(
        refund_attempt(
            payment_id, amount, reason=reason, key=key, caller=caller, request_id=request_id
        ),
        uow=uow,
        clock=clock,
        answer_for=plain_refund_answer,
        bus=bus,
    )
