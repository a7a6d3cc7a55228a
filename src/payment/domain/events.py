"""What happened: recorded by the aggregates and the use cases, handled after the commit.

``PaymentSucceeded`` and ``RefundSucceeded`` are told to the rest of the shop: the unit of work
writes them to the outbox in the same transaction as what they tell. ``AttemptDecided`` and
``RefundDecided`` stay inside: every attempt that reached a decision, for the decision log and
the decision metrics (SPEC §3.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from payment.domain.attempts import Outcome, PaymentAttempt
from payment.domain.model import Money, Payment

if TYPE_CHECKING:
    from payment.domain.refunds import Refund, RefundAttempt, RefundOutcome, RefundReason


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened. ``published`` events go through the outbox to the shop."""

    published: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class PaymentSucceeded(Event):
    """An order was paid: recorded by ``Order.pay``, published as ``payment.succeeded``."""

    published: ClassVar[bool] = True
    type: ClassVar[str] = "payment.succeeded"

    payment_id: int
    order_id: int
    amount: Money
    created_at: datetime

    @classmethod
    def of(cls, payment: Payment) -> PaymentSucceeded:
        if payment.id is None:
            raise ValueError("a payment is told with the id set aside for it")
        return cls(
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=payment.amount,
            created_at=payment.created_at,
        )


@dataclass(frozen=True, slots=True)
class AttemptDecided(Event):
    """A payment attempt reached a decision, and the decision committed."""

    attempt: PaymentAttempt
    outcome: Outcome
    payment_id: int | None = None


@dataclass(frozen=True, slots=True)
class RefundSucceeded(Event):
    """A payment was refunded, in full or in part: recorded by ``Refundable.refund``,
    published as ``refund.succeeded``."""

    published: ClassVar[bool] = True
    type: ClassVar[str] = "refund.succeeded"

    refund_id: int
    payment_id: int
    order_id: int
    amount: Money
    amount_refunded: Money
    """Of the payment, this refund included."""
    reason: RefundReason | None
    created_at: datetime

    @classmethod
    def of(cls, refund: Refund, *, amount_refunded: Money) -> RefundSucceeded:
        if refund.id is None:
            raise ValueError("a refund is told with the id set aside for it")
        return cls(
            refund_id=refund.id,
            payment_id=refund.payment_id,
            order_id=refund.order_id,
            amount=refund.amount,
            amount_refunded=amount_refunded,
            reason=refund.reason,
            created_at=refund.created_at,
        )


@dataclass(frozen=True, slots=True)
class RefundDecided(Event):
    """A refund attempt reached a decision, and the decision committed."""

    attempt: RefundAttempt
    outcome: RefundOutcome
    refund_id: int | None = None
