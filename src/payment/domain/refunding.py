"""The refund use cases: the payment decides, the decision commits in one guarded write.

Like paying: the payment (with what has been refunded of it) is read with the key's kept
answer, ``Refundable`` decides, and the refund commits in one statement with the payment's new
refunded sum, the audit record, the key's answer and the ``refund.succeeded`` event. If another
refund of the payment committed in between, nothing is written and the refund is decided
again on what is stored now: refunds of one payment, however many at once, never add up to
more than it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from payment.domain.attempts import IdempotencyRecord, RecordedAnswer
from payment.domain.errors import (
    ConcurrentChange,
    IdempotencyKeyReused,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundContention,
    RefundExceedsPayment,
    RefundNotFound,
)
from payment.domain.events import RefundDecided
from payment.domain.messagebus import MessageBus
from payment.domain.model import Payment
from payment.domain.ports import Clock, UnitOfWork
from payment.domain.refunds import (
    Refund,
    RefundAttempt,
    RefundAuditRecord,
    RefundDecision,
    RefundGround,
    RefundOutcome,
)
from payment.domain.services import DEFAULT_KEY_RETENTION, MAX_DECISIONS

RefundAnswerFor = Callable[[RefundDecision], RecordedAnswer]
"""How a refund decision is answered to the caller; the answer is what a retry gets replayed."""


@dataclass(frozen=True, slots=True)
class RefundReply:
    """What a refund attempt gets: the outcome, its answer, and the new refund if it made one."""

    outcome: RefundOutcome
    answer: RecordedAnswer
    refund: Refund | None = None

    @property
    def replayed(self) -> bool:
        return self.outcome is RefundOutcome.REPLAYED


async def refund(
    attempt: RefundAttempt,
    *,
    uow: UnitOfWork,
    clock: Clock,
    answer_for: RefundAnswerFor,
    key_retention: timedelta = DEFAULT_KEY_RETENTION,
    bus: MessageBus | None = None,
) -> RefundReply:
    """Decide ``attempt`` and answer it: at most what remains of the payment, once per
    idempotency key. ``StorageUnavailable`` when the store cannot be reached in time,
    ``RefundContention`` if the payment's refunds never held still: both write nothing."""
    async with uow:
        for _ in range(MAX_DECISIONS):
            now = clock.now()
            ground = await uow.refund_ground_for(
                attempt.payment_id, caller=attempt.caller, key=attempt.idempotency_key
            )
            try:
                if ground.kept is not None:
                    reply = await _replay(
                        attempt, ground.kept, uow=uow, at=now, answer_for=answer_for
                    )
                else:
                    reply = await _decide_and_commit(
                        attempt,
                        ground,
                        uow=uow,
                        at=now,
                        answer_for=answer_for,
                        key_retention=key_retention,
                    )
            except ConcurrentChange:
                continue
            if bus is not None:
                refund_id = None if reply.refund is None else reply.refund.id
                bus.handle(uow.collect_new_events())
                bus.handle([RefundDecided(attempt, reply.outcome, refund_id)])
            return reply
    raise RefundContention(attempt.payment_id)


def decide_refund(attempt: RefundAttempt, ground: RefundGround, *, at: datetime) -> RefundDecision:
    """Apply the rules to ``attempt`` on the payment as read. When it is refunded, the
    aggregate changes in place (recording ``RefundSucceeded``)."""
    refundable = ground.refundable
    if refundable is None:
        refusal = PaymentNotFound(attempt.payment_id)
        return RefundDecision(RefundOutcome.PAYMENT_NOT_FOUND, refusal=refusal)
    try:
        if ground.refund_id is None:
            if not refundable.payment.refundable.is_positive:
                raise PaymentNotRefundable(attempt.payment_id)
            raise ValueError(f"payment {attempt.payment_id} is refundable, and no id was set aside")
        made = refundable.refund(
            attempt.amount, reason=attempt.reason, at=at, refund_id=ground.refund_id
        )
    except PaymentNotRefundable as refusal:
        return RefundDecision(RefundOutcome.PAYMENT_NOT_REFUNDABLE, refusal=refusal)
    except RefundExceedsPayment as refusal:
        return RefundDecision(RefundOutcome.REFUND_EXCEEDS_PAYMENT, refusal=refusal)
    return RefundDecision(RefundOutcome.REFUNDED, refund=made)


async def _decide_and_commit(
    attempt: RefundAttempt,
    ground: RefundGround,
    *,
    uow: UnitOfWork,
    at: datetime,
    answer_for: RefundAnswerFor,
    key_retention: timedelta,
) -> RefundReply:
    decision = decide_refund(attempt, ground, at=at)
    made = decision.refund
    if made is not None and ground.refundable is not None:
        uow.payments.mark_refunded(ground.refundable)
        uow.refunds.add(made)
    answer = answer_for(decision)
    refund_id = None if made is None else made.id
    uow.refund_audit.add(
        RefundAuditRecord.of(attempt, decision.outcome, at=at, refund_id=refund_id)
    )
    key = attempt.idempotency_key
    if key is not None:
        kept = IdempotencyRecord(attempt.fingerprint, answer)
        uow.idempotency.add(attempt.caller, key, kept, at=at, expires_at=at + key_retention)
    await uow.commit()
    return RefundReply(decision.outcome, answer, made)


async def _replay(
    attempt: RefundAttempt,
    earlier: IdempotencyRecord,
    *,
    uow: UnitOfWork,
    at: datetime,
    answer_for: RefundAnswerFor,
) -> RefundReply:
    reused = earlier.fingerprint != attempt.fingerprint
    outcome = RefundOutcome.IDEMPOTENCY_KEY_REUSED if reused else RefundOutcome.REPLAYED
    uow.refund_audit.add(RefundAuditRecord.of(attempt, outcome, at=at, refund_id=None))
    await uow.commit()
    if reused:
        refusal = IdempotencyKeyReused(attempt.idempotency_key or "")
        return RefundReply(outcome, answer_for(RefundDecision(outcome, refusal=refusal)))
    return RefundReply(RefundOutcome.REPLAYED, earlier.answer)


async def get_refund(refund_id: int, *, uow: UnitOfWork) -> Refund:
    """The refund with this id. Raises ``RefundNotFound``."""
    async with uow:
        found = await uow.refunds.get(refund_id)
    if found is None:
        raise RefundNotFound(refund_id)
    return found


async def refunds_of_payment(payment_id: int, *, uow: UnitOfWork) -> tuple[Payment, list[Refund]]:
    """The payment and its refunds, oldest first. Raises ``PaymentNotFound``."""
    async with uow:
        payment = await uow.payments.get(payment_id)
        if payment is None:
            raise PaymentNotFound(payment_id)
        return payment, await uow.refunds.list_for_payment(payment_id)
