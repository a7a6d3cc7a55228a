"""Refunds in the domain: the payment decides, never more than was paid, exactly once per key;
sequences of refunds checked as properties (hypothesis) on the in-memory adapters."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.errors import PaymentNotRefundable, RefundExceedsPayment
from payment.domain.events import Event, RefundDecided, RefundSucceeded
from payment.domain.messagebus import MessageBus
from payment.domain.model import Money, Payment
from payment.domain.refunds import Refundable, RefundOutcome, RefundReason
from tests.support.attempts import pay
from tests.support.refunds import refund
from tests.unit.fakes import FixedClock, InterleavedUnitOfWork, pending_order, store_with

pytestmark = pytest.mark.anyio

AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def payment_of(amount: str, refunded: str = "0.00") -> Payment:
    return Payment(
        order_id=3,
        amount=Money.of(amount),
        created_at=AT,
        id=7,
        amount_refunded=Money.of(refunded),
    )


def test_a_partial_refund_leaves_the_rest_refundable_and_records_its_event() -> None:
    refundable = Refundable(payment_of("10.00"))

    made = refundable.refund(Money.of("4.00"), reason=RefundReason.DUPLICATE, at=AT, refund_id=11)

    assert (made.id, made.payment_id, made.order_id, made.amount) == (11, 7, 3, Money.of("4.00"))
    assert made.reason is RefundReason.DUPLICATE
    assert refundable.payment.amount_refunded == Money.of("4.00")
    assert refundable.payment.refundable == Money.of("6.00")
    assert not refundable.payment.refunded
    assert refundable.refunded_when_read == Money.of("0.00")
    assert refundable.events == [RefundSucceeded.of(made, amount_refunded=Money.of("4.00"))]


def test_no_amount_refunds_all_that_remains() -> None:
    refundable = Refundable(payment_of("10.00", refunded="2.50"))

    made = refundable.refund(None, reason=None, at=AT, refund_id=12)

    assert made.amount == Money.of("7.50")
    assert refundable.payment.refunded


@pytest.mark.parametrize(
    ("refunded", "asked", "error"),
    [
        ("10.00", None, PaymentNotRefundable),
        ("10.00", "0.01", PaymentNotRefundable),
        ("9.99", "0.02", RefundExceedsPayment),
        ("0.00", "10.01", RefundExceedsPayment),
    ],
)
def test_a_refusal_changes_nothing(
    refunded: str, asked: str | None, error: type[Exception]
) -> None:
    refundable = Refundable(payment_of("10.00", refunded=refunded))

    with pytest.raises(error):
        refundable.refund(
            None if asked is None else Money.of(asked), reason=None, at=AT, refund_id=13
        )

    assert refundable.payment.amount_refunded == Money.of(refunded)
    assert refundable.events == []


def test_what_exceeds_says_what_remains() -> None:
    refundable = Refundable(payment_of("10.00", refunded="9.99"))

    with pytest.raises(RefundExceedsPayment) as refused:
        refundable.refund(Money.of("0.02"), reason=None, at=AT, refund_id=13)

    assert refused.value.refundable == Decimal("0.01")


async def paid_store(total: str = "10.00") -> tuple[InMemoryStore, int]:
    store = store_with(pending_order(order_id=1, total=total))
    reply = await pay(1, total, uow=InMemoryUnitOfWork(store), clock=FixedClock())
    assert reply.payment is not None
    assert reply.payment.id is not None
    return store, reply.payment.id


async def test_a_refund_commits_with_its_audit_record_its_event_and_the_payments_sum() -> None:
    store, payment_id = await paid_store()
    seen: list[Event] = []
    bus = MessageBus()
    bus.subscribe(Event, seen.append)

    reply = await refund(
        payment_id, "3.00", uow=InMemoryUnitOfWork(store), clock=FixedClock(), bus=bus
    )

    assert reply.outcome is RefundOutcome.REFUNDED
    assert reply.refund is not None
    assert store.refunds == {reply.refund.id: reply.refund}
    assert store.payments[payment_id].amount_refunded == Money.of("3.00")
    assert store.orders[1].status == "paid"  # the order is the order service's to change
    [record] = store.refund_audit
    assert (record.outcome, record.refund_id) == (RefundOutcome.REFUNDED, reply.refund.id)
    told = json.loads(store.outbox[-1].body)
    assert told["type"] == "refund.succeeded"
    assert told["subject"] == "1"
    assert told["data"] == {
        "refund_id": reply.refund.id,
        "payment_id": payment_id,
        "order_id": 1,
        "amount": "3.00",
        "amount_refunded": "3.00",
        "reason": None,
        "created_at": told["time"],
    }
    assert [type(e) for e in seen] == [RefundSucceeded, RefundDecided]


async def test_a_keyed_retry_gets_the_first_answer_and_refunds_nothing_more() -> None:
    store, payment_id = await paid_store()
    first = await refund(
        payment_id, "3.00", key="r1", uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )

    again = await refund(
        payment_id, "3.00", key="r1", uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )
    other = await refund(
        payment_id, "4.00", key="r1", uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )

    assert again.replayed
    assert again.answer == first.answer
    assert other.outcome is RefundOutcome.IDEMPOTENCY_KEY_REUSED
    assert len(store.refunds) == 1
    assert store.payments[payment_id].amount_refunded == Money.of("3.00")


async def test_a_missing_payment_is_not_found_and_writes_only_its_audit_record() -> None:
    store, _ = await paid_store()

    reply = await refund(999, uow=InMemoryUnitOfWork(store), clock=FixedClock())

    assert reply.outcome is RefundOutcome.PAYMENT_NOT_FOUND
    assert reply.answer.status == 404
    assert store.refunds == {}
    assert [r.outcome for r in store.refund_audit] == [RefundOutcome.PAYMENT_NOT_FOUND]


async def test_a_refund_whose_payment_was_refunded_meanwhile_is_decided_again() -> None:
    store, payment_id = await paid_store()

    async def another_refund(meanwhile: InMemoryStore) -> None:
        await refund(payment_id, "8.00", uow=InMemoryUnitOfWork(meanwhile), clock=FixedClock())

    uow = InterleavedUnitOfWork(store, meanwhile=[another_refund])
    reply = await refund(payment_id, "5.00", uow=uow, clock=FixedClock())

    assert reply.outcome is RefundOutcome.REFUND_EXCEEDS_PAYMENT
    assert json.loads(reply.answer.body)["outcome"] == "refund_exceeds_payment"
    assert store.payments[payment_id].amount_refunded == Money.of("8.00")
    assert [r.amount for r in store.refunds.values()] == [Money.of("8.00")]


cents = st.integers(min_value=1, max_value=1500)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=2000),
    asked=st.lists(st.one_of(st.none(), cents), min_size=1, max_size=12),
)
def test_any_sequence_of_refunds_never_refunds_more_than_was_paid(
    total: int, asked: list[int | None]
) -> None:
    async def run() -> None:
        store, payment_id = await paid_store(str(Decimal(total) / 100))
        refunded = Decimal(0)
        for amount in asked:
            wanted = None if amount is None else Decimal(amount) / 100
            remains = Decimal(total) / 100 - refunded
            reply = await refund(
                payment_id,
                None if wanted is None else str(wanted),
                uow=InMemoryUnitOfWork(store),
                clock=FixedClock(),
            )
            if remains == 0:
                assert reply.outcome is RefundOutcome.PAYMENT_NOT_REFUNDABLE
            elif wanted is not None and wanted > remains:
                assert reply.outcome is RefundOutcome.REFUND_EXCEEDS_PAYMENT
            else:
                assert reply.outcome is RefundOutcome.REFUNDED
                assert reply.refund is not None
                assert reply.refund.amount.amount == (remains if wanted is None else wanted)
                refunded += reply.refund.amount.amount
            payment = store.payments[payment_id]
            assert payment.amount_refunded.amount == refunded
            assert sum(r.amount.amount for r in store.refunds.values()) == refunded
            assert refunded <= payment.amount.amount
        told = [json.loads(e.body) for e in store.outbox if e.type == "refund.succeeded"]
        assert [t["data"]["refund_id"] for t in told] == sorted(store.refunds)

    asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(asked=st.lists(cents, min_size=2, max_size=10))
def test_refunds_at_once_never_add_up_to_more_than_the_payment(asked: list[int]) -> None:
    """Every refund reads before any writes: all but one find the payment changed at their
    commit, and decide again on what is stored."""

    async def run() -> None:
        store, payment_id = await paid_store("10.00")

        async def one(amount: int) -> RefundOutcome:
            uow = InterleavedUnitOfWork(store)
            reply = await refund(
                payment_id, str(Decimal(amount) / 100), uow=uow, clock=FixedClock()
            )
            return reply.outcome

        outcomes = await asyncio.gather(*(one(a) for a in asked), return_exceptions=True)

        refunded = sum((r.amount.amount for r in store.refunds.values()), Decimal(0))
        assert refunded <= Decimal("10.00")
        assert store.payments[payment_id].amount_refunded.amount == refunded
        made = [o for o in outcomes if o is RefundOutcome.REFUNDED]
        assert len(made) == len(store.refunds)

    asyncio.run(run())
