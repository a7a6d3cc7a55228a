from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from payment.domain.errors import AmountMismatch, OrderNotPayable
from payment.domain.events import PaymentSucceeded
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.policy import PaymentPolicy
from tests.unit.fakes import NOW, pending_order

POLICY = PaymentPolicy()


def test_a_pending_order_paid_with_exactly_its_total_turns_paid() -> None:
    order = pending_order(total="199.99")

    payment = order.pay(Money(Decimal("199.99")), at=NOW, policy=POLICY, payment_id=1)

    assert order.status == OrderStatus.PAID
    assert order.paid_at == NOW
    assert payment == Payment(
        order_id=order.id,
        amount=Money(Decimal("199.99")),
        created_at=NOW,
        status=PaymentStatus.SUCCEEDED,
        id=1,
    )
    assert order.events == [PaymentSucceeded.of(payment)]


def test_the_payment_time_is_the_clock_time_in_aware_utc() -> None:
    order = pending_order()
    paris_summer = timezone(timedelta(hours=2))
    moment = datetime(2026, 6, 1, 12, 0, 0, 42, tzinfo=paris_summer)

    payment = order.pay(order.total, at=moment, policy=POLICY, payment_id=1)

    assert payment.created_at == moment
    assert payment.created_at.tzinfo is UTC
    assert payment.created_at.hour == 10
    assert order.paid_at is not None
    assert order.paid_at.tzinfo is UTC
    assert order.paid_at == moment


@pytest.mark.parametrize(
    "status", [OrderStatus.PAID, "cancelled", "refunded", "shipped", "", "PENDING"]
)
def test_refuses_to_pay_an_order_that_is_not_pending(status: str) -> None:
    order = replace(pending_order(), status=status)

    with pytest.raises(OrderNotPayable) as refused:
        order.pay(order.total, at=NOW, policy=POLICY, payment_id=1)

    assert refused.value.status == status
    assert refused.value.order_id == order.id
    assert "only a pending order can be paid" in str(refused.value)


@pytest.mark.parametrize("claimed", ["199.98", "200.00", "0.01", "19.99", "1999.90"])
def test_refuses_an_amount_different_from_the_total(claimed: str) -> None:
    order = pending_order(order_id=7, total="199.99")

    with pytest.raises(AmountMismatch) as refused:
        order.pay(Money(Decimal(claimed)), at=NOW, policy=POLICY, payment_id=1)

    assert refused.value.claimed == Decimal(claimed)
    assert refused.value.total == Decimal("199.99")
    assert refused.value.order_id == 7


def test_an_amount_mismatch_never_states_the_total() -> None:
    order = pending_order(order_id=7, total="4321.09")

    with pytest.raises(AmountMismatch) as refused:
        order.pay(Money(Decimal("1.00")), at=NOW, policy=POLICY, payment_id=1)

    message = str(refused.value)
    assert "4321.09" not in message
    assert "4321" not in message
    assert message == "The amount does not match the total of order 7."


def test_the_status_is_checked_before_the_amount() -> None:
    order = replace(pending_order(total="10.00"), status=OrderStatus.PAID)

    with pytest.raises(OrderNotPayable):
        order.pay(Money(Decimal("99.00")), at=NOW, policy=POLICY, payment_id=1)


@pytest.mark.parametrize(
    "refused_order",
    [
        replace(pending_order(total="10.00"), status="cancelled"),
        pending_order(total="10.01"),
    ],
)
def test_a_refused_payment_changes_nothing(refused_order: Order) -> None:
    before = replace(refused_order)

    with pytest.raises((OrderNotPayable, AmountMismatch)):
        refused_order.pay(Money(Decimal("10.00")), at=NOW, policy=POLICY, payment_id=1)

    assert refused_order == before
    assert refused_order.paid_at is None


def test_refuses_a_naive_payment_time_and_changes_nothing() -> None:
    order = pending_order()
    naive = datetime(2026, 11, 26, 10, 15)  # noqa: DTZ001 - the refused input

    with pytest.raises(ValueError, match="timezone-aware"):
        order.pay(order.total, at=naive, policy=POLICY, payment_id=1)

    assert order.status == OrderStatus.PENDING
    assert order.paid_at is None


def test_a_payment_cannot_be_made_for_zero() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        Payment(order_id=1, amount=Money(Decimal("0")), created_at=NOW)


def test_policy_accepts_a_pending_order_and_its_exact_total() -> None:
    order = pending_order(total="5.00")

    POLICY.check(order, Money(Decimal("5")))

    assert order.status == OrderStatus.PENDING


def test_an_order_is_payable_only_once() -> None:
    order = pending_order()
    order.pay(order.total, at=NOW, policy=POLICY, payment_id=1)

    with pytest.raises(OrderNotPayable) as refused:
        order.pay(order.total, at=NOW, policy=POLICY, payment_id=1)

    assert refused.value.status == OrderStatus.PAID
