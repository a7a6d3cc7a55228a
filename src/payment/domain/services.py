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
from payment.domain.delivery import OutboxEvent
from payment.domain.errors import (
    AmountMismatch,
    ConcurrentChange,
    EventNotFound,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderNotPayable,
    PaymentNotFound,
    TooMuchContention,
)
from payment.domain.events import AttemptDecided
from payment.domain.messagebus import MessageBus
from payment.domain.model import Order, OrderStatus, Payment
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import AttemptGround, Clock, UnitOfWork

DEFAULT_POLICY = PaymentPolicy()
DEFAULT_KEY_RETENTION = timedelta(hours=24)
MAX_DECISIONS = 4
"""How often an attempt is decided at most. Each new round follows another request's commit
(the order paid, or the attempt's key stored): in the worst ordinary case the order is paid
by one request and the key stored by another, and the third decision is final."""

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


async def pay(
    attempt: PaymentAttempt,
    *,
    uow: UnitOfWork,
    clock: Clock,
    answer_for: AnswerFor,
    key_retention: timedelta = DEFAULT_KEY_RETENTION,
    policy: PaymentPolicy = DEFAULT_POLICY,
    bus: MessageBus | None = None,
) -> Reply:
    """Decide ``attempt`` and answer it, exactly once per order and once per idempotency key.

    The order (with the key's kept answer) is read, the model decides, and the decision
    commits in one guarded write: the order's change and the payment, the audit record and
    the answer kept for the key, together. If another request paid the order or used the key
    in between, the write changes nothing and the attempt is decided again on what is stored
    now, so concurrent attempts on one order are paid once and the others refused or replayed.

    A key seen before gets its first answer back (``Reply.replayed``), or, when it came
    with another request, the ``IDEMPOTENCY_KEY_REUSED`` refusal (the key keeps its first
    answer). ``StorageUnavailable`` when the store cannot be reached in time,
    ``TooMuchContention`` if the order never held still: both leave no write behind.

    After the commit, ``bus`` gets what happened: the events the order recorded (which the
    commit also wrote to the outbox) and the ``AttemptDecided``.
    """
    async with uow:
        for _ in range(MAX_DECISIONS):
            now = clock.now()
            ground = await uow.ground_for(
                attempt.order_id, caller=attempt.caller, key=attempt.idempotency_key
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
                        policy=policy,
                    )
            except ConcurrentChange:
                continue
            if bus is not None:
                payment_id = None if reply.payment is None else reply.payment.id
                bus.handle(uow.collect_new_events())
                bus.handle([AttemptDecided(attempt, reply.outcome, payment_id)])
            return reply
    raise TooMuchContention(attempt.order_id)


async def _decide_and_commit(
    attempt: PaymentAttempt,
    ground: AttemptGround,
    *,
    uow: UnitOfWork,
    at: datetime,
    answer_for: AnswerFor,
    key_retention: timedelta,
    policy: PaymentPolicy,
) -> Reply:
    order = ground.order
    payment_id = ground.payment_id
    if payment_id is None and order is not None and order.status == OrderStatus.PENDING:
        payment_id = await uow.payments.next_id()
    decision = decide(attempt, order, at=at, policy=policy, payment_id=payment_id)
    payment = decision.payment
    if payment is not None and order is not None:
        uow.orders.mark_paid(order)
        uow.payments.add(payment)
    answer = answer_for(decision)
    payment_id = None if payment is None else payment.id
    uow.audit.add(AuditRecord.of(attempt, decision.outcome, at=at, payment_id=payment_id))
    key = attempt.idempotency_key
    if key is not None:
        kept = IdempotencyRecord(attempt.fingerprint, answer)
        uow.idempotency.add(attempt.caller, key, kept, at=at, expires_at=at + key_retention)
    await uow.commit()
    return Reply(decision.outcome, answer, payment)


def decide(
    attempt: PaymentAttempt,
    order: Order | None,
    *,
    at: datetime,
    policy: PaymentPolicy,
    payment_id: int | None,
) -> Decision:
    """Apply the rules to ``attempt`` on ``order`` as read. When the order is paid, it is
    changed in place (recording ``PaymentSucceeded``) and the decision carries the new
    payment, with ``payment_id``: an order that can be paid needs one."""
    if order is None:
        return Decision(Outcome.ORDER_NOT_FOUND, refusal=OrderNotFound(attempt.order_id))
    try:
        if payment_id is None:
            policy.check(order, attempt.amount)
            raise ValueError(f"order {order.id} is payable, and no payment id was set aside")
        payment = order.pay(attempt.amount, at=at, policy=policy, payment_id=payment_id)
    except OrderNotPayable as refusal:
        return Decision(Outcome.ORDER_NOT_PAYABLE, refusal=refusal)
    except AmountMismatch as refusal:
        return Decision(Outcome.AMOUNT_MISMATCH, refusal=refusal)
    return Decision(Outcome.PAID, payment=payment)


async def _replay(
    attempt: PaymentAttempt,
    earlier: IdempotencyRecord,
    *,
    uow: UnitOfWork,
    at: datetime,
    answer_for: AnswerFor,
) -> Reply:
    """The key's first answer again; or, when the key came with another request, a refusal
    of its own (the key keeps its first answer). Either way an audited decision."""
    reused = earlier.fingerprint != attempt.fingerprint
    outcome = Outcome.IDEMPOTENCY_KEY_REUSED if reused else Outcome.REPLAYED
    uow.audit.add(AuditRecord.of(attempt, outcome, at=at, payment_id=None))
    await uow.commit()
    if reused:
        refusal = IdempotencyKeyReused(attempt.idempotency_key or "")
        return Reply(outcome, answer_for(Decision(outcome, refusal=refusal)))
    return Reply(Outcome.REPLAYED, earlier.answer)


async def get_payment(payment_id: int, *, uow: UnitOfWork) -> Payment:
    """The payment with this id. Raises ``PaymentNotFound``."""
    async with uow:
        payment = await uow.payments.get(payment_id)
    if payment is None:
        raise PaymentNotFound(payment_id)
    return payment


async def payments_of_order(order_id: int, *, uow: UnitOfWork) -> list[Payment]:
    """The order's payments, oldest first; empty for an order not paid yet.
    Raises ``OrderNotFound``."""
    async with uow:
        if await uow.orders.get(order_id) is None:
            raise OrderNotFound(order_id)
        return await uow.payments.list_for_order(order_id)


async def get_event(event_id: str, *, uow: UnitOfWork) -> OutboxEvent:
    """An event told to the shop, by its id. Raises ``EventNotFound``."""
    async with uow:
        event = await uow.events.get(event_id)
    if event is None:
        raise EventNotFound(event_id)
    return event


async def events_after(position: int, *, limit: int, uow: UnitOfWork) -> list[OutboxEvent]:
    """Up to ``limit`` events written after ``position``, oldest first: for a consumer
    catching up on what it missed."""
    async with uow:
        return await uow.events.after(position, limit=limit)
