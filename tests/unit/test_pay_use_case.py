from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.errors import AmountMismatch, OrderNotFound, OrderNotPayable
from payment.domain.model import Money, Order, OrderStatus, Payment
from tests.unit.fakes import NOW, FixedClock, pending_order, store_with


def snapshot(store: InMemoryStore) -> tuple[dict[int, Order], dict[int, Payment]]:
    return (
        {order_id: replace(order) for order_id, order in store.orders.items()},
        dict(store.payments),
    )


def test_paying_a_pending_order_commits_and_returns_a_stored_payment() -> None:
    store = store_with(pending_order(order_id=1, total="199.99"))
    uow = InMemoryUnitOfWork(store)

    payment = services.pay(1, Money(Decimal("199.99")), uow=uow, clock=FixedClock())

    assert uow.committed
    assert payment.id is not None
    assert payment.order_id == 1
    assert payment.amount == Money(Decimal("199.99"))
    assert payment.created_at == NOW
    assert store.payments == {payment.id: payment}
    assert store.orders[1].status == OrderStatus.PAID
    assert store.orders[1].paid_at == NOW


def test_refuses_to_pay_an_order_that_does_not_exist_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1))
    before = snapshot(store)
    uow = InMemoryUnitOfWork(store)

    with pytest.raises(OrderNotFound) as refused:
        services.pay(2, Money(Decimal("199.99")), uow=uow, clock=FixedClock())

    assert refused.value.order_id == 2
    assert not uow.committed
    assert snapshot(store) == before


@pytest.mark.parametrize("status", ["cancelled", "paid", "on_hold"])
def test_refuses_to_pay_an_order_that_is_not_pending_and_writes_nothing(status: str) -> None:
    store = store_with(replace(pending_order(order_id=1, total="10.00"), status=status))
    before = snapshot(store)
    uow = InMemoryUnitOfWork(store)

    with pytest.raises(OrderNotPayable) as refused:
        services.pay(1, Money(Decimal("10.00")), uow=uow, clock=FixedClock())

    assert refused.value.status == status
    assert not uow.committed
    assert snapshot(store) == before


def test_refuses_an_amount_that_differs_from_the_total_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    before = snapshot(store)
    uow = InMemoryUnitOfWork(store)

    with pytest.raises(AmountMismatch):
        services.pay(1, Money(Decimal("10.01")), uow=uow, clock=FixedClock())

    assert not uow.committed
    assert snapshot(store) == before
    assert store.orders[1].status == OrderStatus.PENDING


def test_a_naive_clock_time_is_refused_and_writes_nothing() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    before = snapshot(store)
    uow = InMemoryUnitOfWork(store)
    naive_clock = FixedClock(datetime(2026, 11, 26, 10, 15))  # noqa: DTZ001 - the refused input

    with pytest.raises(ValueError, match="timezone-aware"):
        services.pay(1, Money(Decimal("10.00")), uow=uow, clock=naive_clock)

    assert not uow.committed
    assert snapshot(store) == before


def test_a_second_payment_of_the_same_order_is_refused_as_paid() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    first = services.pay(
        1, Money(Decimal("10.00")), uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )
    before = snapshot(store)
    second_uow = InMemoryUnitOfWork(store)

    with pytest.raises(OrderNotPayable) as refused:
        services.pay(1, Money(Decimal("10.00")), uow=second_uow, clock=FixedClock())

    assert refused.value.status == OrderStatus.PAID
    assert not second_uow.committed
    assert snapshot(store) == before
    assert list(store.payments.values()) == [first]


def test_paying_one_order_leaves_the_others_pending() -> None:
    store = store_with(pending_order(order_id=1, total="1.00"), pending_order(order_id=2))

    services.pay(1, Money(Decimal("1.00")), uow=InMemoryUnitOfWork(store), clock=FixedClock())

    assert store.orders[2].status == OrderStatus.PENDING
    assert store.orders[2].paid_at is None


def test_each_payment_gets_its_own_id() -> None:
    store = store_with(
        pending_order(order_id=1, total="1.00"), pending_order(order_id=2, total="2.00")
    )

    first = services.pay(
        1, Money(Decimal("1.00")), uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )
    second = services.pay(
        2, Money(Decimal("2.00")), uow=InMemoryUnitOfWork(store), clock=FixedClock()
    )

    assert first.id is not None
    assert second.id is not None
    assert first.id != second.id


def test_concurrent_payments_of_one_order_make_exactly_one_payment() -> None:
    store = store_with(pending_order(order_id=1, total="50.00"))
    attempts = 16
    start = threading.Barrier(attempts)
    paid: list[Payment] = []
    refused: list[OrderNotPayable] = []
    unexpected: list[BaseException] = []
    outcomes_lock = threading.Lock()

    def attempt() -> None:
        start.wait()
        try:
            payment = services.pay(
                1, Money(Decimal("50.00")), uow=InMemoryUnitOfWork(store), clock=FixedClock()
            )
        except OrderNotPayable as error:
            with outcomes_lock:
                refused.append(error)
        except BaseException as error:
            with outcomes_lock:
                unexpected.append(error)
        else:
            with outcomes_lock:
                paid.append(payment)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert unexpected == []
    assert len(paid) == 1
    assert len(refused) == attempts - 1
    assert all(error.status == OrderStatus.PAID for error in refused)
    assert list(store.payments.values()) == paid
    assert store.orders[1].status == OrderStatus.PAID
