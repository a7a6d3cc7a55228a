"""Refunds: a payment given back, in full or in parts, never more than was paid.

``Refundable`` is the aggregate: a payment as far as refunding it goes. It decides each refund
on what has been refunded of the payment so far, and records ``RefundSucceeded``. The order is
left as it is: the order service owns what a refunded order becomes, and learns of the refund
from its event. The payment stays ``succeeded``, so a refunded order is never paid again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from payment.domain.attempts import IdempotencyRecord, idempotency_key
from payment.domain.errors import PaymentError, PaymentNotRefundable, RefundExceedsPayment
from payment.domain.events import Event, RefundSucceeded
from payment.domain.model import Money, Payment, aware_utc, payment_amount


class RefundReason(StrEnum):
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    OTHER = "other"


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"


@dataclass(frozen=True, slots=True)
class Refund:
    """Money given back of a payment."""

    payment_id: int
    order_id: int
    amount: Money
    created_at: datetime
    reason: RefundReason | None = None
    status: RefundStatus = RefundStatus.SUCCEEDED
    id: int | None = None

    def __post_init__(self) -> None:
        payment_amount(self.amount.amount)
        object.__setattr__(self, "created_at", aware_utc(self.created_at))


@dataclass(slots=True)
class Refundable:
    """The aggregate: a payment, with what has been refunded of it so far."""

    payment: Payment
    events: list[Event] = field(default_factory=list, init=False, compare=False, repr=False)
    refunded_when_read: Money = field(init=False, compare=False, repr=False)
    """What had been refunded when the payment was read: a refund commits only if that is
    still so (optimistic concurrency, like the order's payment)."""

    def __post_init__(self) -> None:
        self.refunded_when_read = self.payment.amount_refunded

    @property
    def payment_id(self) -> int:
        if self.payment.id is None:
            raise ValueError("only a stored payment is refunded")
        return self.payment.id

    def refund(
        self, amount: Money | None, *, reason: RefundReason | None, at: datetime, refund_id: int
    ) -> Refund:
        """Refund ``amount`` (all that remains when None) of the payment, and record
        ``RefundSucceeded``. Raises ``PaymentNotRefundable`` when nothing remains and
        ``RefundExceedsPayment`` when more is asked than remains; nothing changes then."""
        remains = self.payment.refundable
        if not remains.is_positive:
            raise PaymentNotRefundable(self.payment_id)
        requested = remains if amount is None else amount
        if requested.amount > remains.amount:
            raise RefundExceedsPayment(
                self.payment_id, requested=requested.amount, refundable=remains.amount
            )
        refund = Refund(
            payment_id=self.payment_id,
            order_id=self.payment.order_id,
            amount=requested,
            created_at=at,
            reason=reason,
            id=refund_id,
        )
        refunded = Money(self.payment.amount_refunded.amount + requested.amount)
        self.payment = replace(self.payment, amount_refunded=refunded)
        self.events.append(RefundSucceeded.of(refund, amount_refunded=refunded))
        return refund


class RefundOutcome(StrEnum):
    """What a refund attempt came to. Each is one line of the refunds' audit trail."""

    REFUNDED = "refunded"
    PAYMENT_NOT_FOUND = "payment_not_found"
    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"
    REPLAYED = "replayed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class RefundAttempt:
    """One request to refund a payment: all that remains (``amount`` None) or a part."""

    payment_id: int
    caller: str
    request_id: str
    amount: Money | None = None
    reason: RefundReason | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.amount is not None:
            payment_amount(self.amount.amount)
        if self.idempotency_key is not None:
            idempotency_key(self.idempotency_key)

    @property
    def fingerprint(self) -> str:
        """The request in normal form, hashed; never equal to a payment's."""
        amount = "" if self.amount is None else str(self.amount)
        normal = f"refund\n{self.payment_id}\n{amount}\n{self.reason or ''}"
        return hashlib.sha256(normal.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RefundDecision:
    outcome: RefundOutcome
    refund: Refund | None = None
    refusal: PaymentError | None = None


@dataclass(frozen=True, slots=True)
class RefundGround:
    """What deciding a refund attempt needs, read in one step."""

    refundable: Refundable | None
    """The payment as committed now, or None when there is no such payment."""
    kept: IdempotencyRecord | None = None
    refund_id: int | None = None
    """An id set aside for the refund when something remains to refund and the key is unused."""


@dataclass(frozen=True, slots=True)
class RefundAuditRecord:
    """One line of the refunds' audit trail: every refund attempt that reached a decision."""

    at: datetime
    request_id: str
    caller: str
    payment_id: int
    claimed_amount: Money | None
    reason: RefundReason | None
    outcome: RefundOutcome
    refund_id: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", aware_utc(self.at))

    @classmethod
    def of(
        cls,
        attempt: RefundAttempt,
        outcome: RefundOutcome,
        *,
        at: datetime,
        refund_id: int | None,
    ) -> RefundAuditRecord:
        return cls(
            at=at,
            request_id=attempt.request_id,
            caller=attempt.caller,
            payment_id=attempt.payment_id,
            claimed_amount=attempt.amount,
            reason=attempt.reason,
            outcome=outcome,
            refund_id=refund_id,
            idempotency_key=attempt.idempotency_key,
        )
