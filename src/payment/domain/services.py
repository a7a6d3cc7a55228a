"""The use cases. Each takes a unit of work, lets the model decide, and commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from payment.domain.attempts import (
    AuditRecord,
    Decision,
    IdempotencyRecord,
    Outcome,
    PaymentAttempt,
    RecordedAnswer,
)
from payment.domain.errors import (
    AmountMismatch,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderNotPayable,
    PaymentNotFound,
)
from payment.domain.model import Payment
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import Clock, UnitOfWork

DEFAULT_POLICY = PaymentPolicy()
DEFAULT_KEY_RETENTION = timedelta(hours=24)

AnswerFor = Callable[[Decision], RecordedAnswer]
"""How a decision is answered to the caller; the answer is what a retry gets replayed."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What an attempt gets: the decision's outcome and its answer; ``payment`` is the new
    payment when this attempt made one."""

    outcome: Outcome
    answer: RecordedAnswer
    payment: Payment | None = None

    @property
    def replayed(self) -> bool:
        return self.outcome is Outcome.REPLAYED


def pay(
    attempt: PaymentAttempt,
    *,
    uow: UnitOfWork,
    clock: Clock,
    answer_for: AnswerFor,
    key_retention: timedelta = DEFAULT_KEY_RETENTION,
    policy: PaymentPolicy = DEFAULT_POLICY,
) -> Reply:
    """Decide ``attempt`` and answer it, exactly once per order and once per idempotency key.

    The order is locked for the length of the unit of work, so concurrent attempts on the
    same order queue up and all but the first find it paid. The decision, its audit record
    and the answer kept for the idempotency key commit together, with the order's change and
    the payment when there is one.

    A key seen before gets its first answer back (``Reply.replayed``), or
    ``IdempotencyKeyReused`` when it came with another request (its audit record commits
    first); a key in use by a request still running gets ``IdempotencyKeyInUse``.
    ``StorageUnavailable`` when the store cannot be reached in time. Those two leave no write
    behind.
    """
    with uow:
        now = clock.now()
        key = attempt.idempotency_key
        if key is not None:
            earlier = uow.idempotency.claim(
                attempt.caller,
                key,
                fingerprint=attempt.fingerprint,
                at=now,
                expires_at=now + key_retention,
            )
            if earlier is not None:
                return _replay(attempt, earlier, uow=uow, at=now)
        decision = decide(attempt, uow=uow, at=now, policy=policy)
        answer = answer_for(decision)
        payment_id = None if decision.payment is None else decision.payment.id
        uow.audit.add(AuditRecord.of(attempt, decision.outcome, at=now, payment_id=payment_id))
        if key is not None:
            uow.idempotency.record_answer(attempt.caller, key, answer)
        uow.commit()
    return Reply(decision.outcome, answer, decision.payment)


def decide(
    attempt: PaymentAttempt, *, uow: UnitOfWork, at: datetime, policy: PaymentPolicy
) -> Decision:
    """Apply the rules to ``attempt`` inside ``uow``. Writes the order's change and the
    payment when the order is paid; writes nothing when it is refused."""
    order = uow.orders.get_for_update(attempt.order_id)
    if order is None:
        return Decision(Outcome.ORDER_NOT_FOUND, refusal=OrderNotFound(attempt.order_id))
    try:
        payment = order.pay(attempt.amount, at=at, policy=policy)
    except OrderNotPayable as refusal:
        return Decision(Outcome.ORDER_NOT_PAYABLE, refusal=refusal)
    except AmountMismatch as refusal:
        return Decision(Outcome.AMOUNT_MISMATCH, refusal=refusal)
    uow.orders.mark_paid(order)
    return Decision(Outcome.PAID, payment=uow.payments.add(payment))


def _replay(
    attempt: PaymentAttempt, earlier: IdempotencyRecord, *, uow: UnitOfWork, at: datetime
) -> Reply:
    reused = earlier.fingerprint != attempt.fingerprint
    outcome = Outcome.IDEMPOTENCY_KEY_REUSED if reused else Outcome.REPLAYED
    uow.audit.add(AuditRecord.of(attempt, outcome, at=at, payment_id=None))
    uow.commit()
    if reused:
        raise IdempotencyKeyReused(attempt.idempotency_key or "")
    return Reply(Outcome.REPLAYED, earlier.answer)


def get_payment(payment_id: int, *, uow: UnitOfWork) -> Payment:
    """The payment with this id. Raises ``PaymentNotFound``."""
    with uow:
        payment = uow.payments.get(payment_id)
    if payment is None:
        raise PaymentNotFound(payment_id)
    return payment


def payments_of_order(order_id: int, *, uow: UnitOfWork) -> list[Payment]:
    """The order's payments, oldest first; empty for an order not paid yet.
    Raises ``OrderNotFound``."""
    with uow:
        if uow.orders.get(order_id) is None:
            raise OrderNotFound(order_id)
        return uow.payments.list_for_order(order_id)
