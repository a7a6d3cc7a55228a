"""The pay use case without an idempotency key, on the in-memory adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.attempts import Decision, Outcome
from payment.domain.errors import AmountMismatch, OrderNotFound, OrderNotPayable, PaymentError
from payment.domain.events import PaymentSucceeded
from payment.domain.model import Money, Order, OrderStatus, Payment
from tests.support.attempts import attempt, plain_answer
from tests.unit.fakes import (
    NOW,
    FixedClock,
    InterleavedUnitOfWork,
    RecordingAnswers,
    all_at_once,
    pay,
    pending_order,
    store_with,
)

pytestmark = pytest.mark.anyio

TEN = Money.of("10.00")


def snapshot(store: InMemoryStore) -> tuple[dict[int, Order], dict[int, Payment]]:
    return (
        {order_id: replace(order) for order_id, order in store.orders.items()},
        dict(store.payments),
    )


async def decide(
    order_id: int, amount: str, store: InMemoryStore
) -> tuple[services.Reply, Decision]:
    """Pay once without a key; the reply and the decision behind it."""
    answers = RecordingAnswers()
    reply = await services.pay(
        attempt(order_id, amount),
        uow=InMemoryUnitOfWork(store),
        clock=FixedClock(),
        answer_for=answers,
    )
    [decision] = answers.decisions
    return reply, decision


def refusal_of(decision: Decision) -> PaymentError:
    assert decision.payment is None
    assert decision.refusal is not None
    return decision.refusal


async def test_paying_a_pending_order_commits_and_returns_a_stored_payment() -> None:
    store = store_with(pending_order(order_id=1, total="199.99"))
    uow = InMemoryUnitOfWork(store)

    reply = await pay(1, "199.99", uow=uow)

    payment = reply.payment
    assert uow.committed
    assert reply.outcome is Outcome.PAID
    assert not reply.replayed
    assert payment is not None
    assert payment.id is not None
    assert payment.order_id == 1
    assert payment.amount == Money(Decimal("199.99"))
    assert payment.created_at == NOW
    assert reply.answer == plain_answer(Decision(Outcome.PAID, payment=payment))
    assert store.payments == {payment.id: payment}
    assert store.orders[1].status == OrderStatus.PAID
    assert store.orders[1].paid_at == NOW


async def test_refuses_to_pay_an_order_that_does_not_exist_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1))
    before = snapshot(store)

    reply, decision = await decide(2, "199.99", store)

    refusal = refusal_of(decision)
    assert reply.outcome is Outcome.ORDER_NOT_FOUND
    assert reply.payment is None
    assert reply.answer == plain_answer(decision)
    assert isinstance(refusal, OrderNotFound)
    assert refusal.order_id == 2
    assert snapshot(store) == before
    assert [record.outcome for record in store.audit] == [Outcome.ORDER_NOT_FOUND]


@pytest.mark.parametrize("status", ["cancelled", "paid", "on_hold"])
async def test_refuses_to_pay_an_order_that_is_not_pending_and_writes_nothing(status: str) -> None:
    store = store_with(replace(pending_order(order_id=1, total="10.00"), status=status))
    before = snapshot(store)

    reply, decision = await decide(1, "10.00", store)

    refusal = refusal_of(decision)
    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert reply.payment is None
    assert isinstance(refusal, OrderNotPayable)
    assert refusal.status == status
    assert snapshot(store) == before
    assert [record.outcome for record in store.audit] == [Outcome.ORDER_NOT_PAYABLE]


async def test_refuses_an_amount_that_differs_from_the_total_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    before = snapshot(store)

    reply, decision = await decide(1, "10.01", store)

    assert reply.outcome is Outcome.AMOUNT_MISMATCH
    assert reply.payment is None
    assert isinstance(refusal_of(decision), AmountMismatch)
    assert snapshot(store) == before
    assert store.orders[1].status == OrderStatus.PENDING
    assert [record.outcome for record in store.audit] == [Outcome.AMOUNT_MISMATCH]


async def test_a_naive_clock_time_is_refused_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    before = snapshot(store)
    uow = InMemoryUnitOfWork(store)
    naive_clock = FixedClock(datetime(2026, 11, 26, 10, 15))  # noqa: DTZ001 - the refused input

    with pytest.raises(ValueError, match="timezone-aware"):
        await pay(1, "10.00", uow=uow, clock=naive_clock)

    assert not uow.committed
    assert snapshot(store) == before
    assert store.audit == []


async def test_a_second_payment_of_the_same_order_is_refused_as_paid() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    first = await pay(1, "10.00", uow=InMemoryUnitOfWork(store))
    before = snapshot(store)

    reply, decision = await decide(1, "10.00", store)

    refusal = refusal_of(decision)
    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert not reply.replayed
    assert isinstance(refusal, OrderNotPayable)
    assert refusal.status == OrderStatus.PAID
    assert snapshot(store) == before
    assert list(store.payments.values()) == [first.payment]


async def test_paying_one_order_leaves_the_others_pending() -> None:
    store = store_with(pending_order(order_id=1, total="1.00"), pending_order(order_id=2))

    await pay(1, "1.00", uow=InMemoryUnitOfWork(store))

    assert store.orders[2].status == OrderStatus.PENDING
    assert store.orders[2].paid_at is None


async def test_each_payment_gets_its_own_id() -> None:
    store = store_with(
        pending_order(order_id=1, total="1.00"), pending_order(order_id=2, total="2.00")
    )

    first = (await pay(1, "1.00", uow=InMemoryUnitOfWork(store))).payment
    second = (await pay(2, "2.00", uow=InMemoryUnitOfWork(store))).payment

    assert first is not None
    assert second is not None
    assert first.id is not None
    assert second.id is not None
    assert first.id != second.id


async def test_the_store_is_told_nothing_of_a_refusal_but_its_audit_record() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    uow = InMemoryUnitOfWork(store)

    await pay(1, "10.01", uow=uow)

    assert uow.committed
    assert store.idempotency == {}
    assert store.payments == {}
    assert len(store.audit) == 1


async def test_concurrent_payments_of_one_order_make_exactly_one_payment() -> None:
    store = store_with(pending_order(order_id=1, total="50.00"))
    attempts = 16
    answers = RecordingAnswers()
    uows = [InterleavedUnitOfWork(store) for _ in range(attempts)]
    replies, unexpected = await all_at_once(
        attempts,
        lambda: services.pay(
            attempt(1, "50.00"),
            uow=uows.pop(),
            clock=FixedClock(),
            answer_for=answers,
        ),
    )

    paid = [reply.payment for reply in replies if reply.outcome is Outcome.PAID]
    refused = [d.refusal for d in answers.decisions if d.outcome is Outcome.ORDER_NOT_PAYABLE]
    assert unexpected == []
    assert len(replies) == attempts
    assert len(paid) == 1
    assert len(refused) == attempts - 1
    statuses = [error.status for error in refused if isinstance(error, OrderNotPayable)]
    assert statuses == [OrderStatus.PAID] * (attempts - 1)
    assert list(store.payments.values()) == paid
    assert store.orders[1].status == OrderStatus.PAID
    assert len(store.audit) == attempts


async def test_concurrent_attempts_that_all_read_the_order_payable_decide_again_but_one() -> None:
    store = store_with(pending_order(order_id=1, total="50.00"))
    attempts = 8
    uows = [InterleavedUnitOfWork(store) for _ in range(attempts)]
    working = list(uows)

    replies, unexpected = await all_at_once(attempts, lambda: pay(1, "50.00", uow=working.pop()))

    assert unexpected == []
    assert sorted(reply.outcome for reply in replies) == sorted(
        [Outcome.PAID] + [Outcome.ORDER_NOT_PAYABLE] * (attempts - 1)
    )
    assert all(uow.grounds[0].payment_id is not None for uow in uows)
    assert sorted(len(uow.grounds) for uow in uows) == [1] + [2] * (attempts - 1)
    again = [uow.grounds[1] for uow in uows if len(uow.grounds) == 2]
    assert all(g.order is not None and g.order.status == OrderStatus.PAID for g in again)
    assert all(g.payment_id is None for g in again)


# The decision itself: a pure function of the attempt and the order as read.


def test_deciding_on_a_pending_order_pays_it_in_place_and_records_the_payment() -> None:
    order = pending_order(order_id=1, total="10.00")

    decision = services.decide(
        attempt(1, "10.00"), order, at=NOW, policy=services.DEFAULT_POLICY, payment_id=7
    )

    assert decision.outcome is Outcome.PAID
    assert decision.refusal is None
    assert decision.payment == Payment(order_id=1, amount=TEN, created_at=NOW, id=7)
    assert order.status == OrderStatus.PAID
    assert order.paid_at == NOW
    assert order.events == [PaymentSucceeded(payment_id=7, order_id=1, amount=TEN, created_at=NOW)]


def test_a_payable_order_is_not_paid_without_a_payment_id() -> None:
    order = pending_order(order_id=1, total="10.00")

    with pytest.raises(ValueError, match="no payment id"):
        services.decide(
            attempt(1, "10.00"), order, at=NOW, policy=services.DEFAULT_POLICY, payment_id=None
        )

    assert order.status == OrderStatus.PENDING
    assert order.events == []


@pytest.mark.parametrize(
    ("order", "amount", "outcome", "refusal"),
    [
        (None, "10.00", Outcome.ORDER_NOT_FOUND, OrderNotFound),
        (Order(1, "cancelled", TEN), "10.00", Outcome.ORDER_NOT_PAYABLE, OrderNotPayable),
        (Order(1, OrderStatus.PENDING, TEN), "10.01", Outcome.AMOUNT_MISMATCH, AmountMismatch),
    ],
    ids=["not-found", "not-payable", "mismatch"],
)
def test_deciding_a_refusal_leaves_the_order_as_read(
    order: Order | None, amount: str, outcome: Outcome, refusal: type[PaymentError]
) -> None:
    before = None if order is None else replace(order)

    decision = services.decide(
        attempt(1, amount), order, at=NOW, policy=services.DEFAULT_POLICY, payment_id=7
    )

    assert decision.outcome is outcome
    assert decision.payment is None
    assert isinstance(decision.refusal, refusal)
    assert order == before
