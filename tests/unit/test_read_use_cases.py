"""The read use cases, on the in-memory adapters: a payment by its id, an order's payments."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.errors import OrderNotFound, PaymentNotFound, StorageUnavailable
from payment.domain.model import Money, Order, Payment
from tests.unit.fakes import NOW, FailingUnitOfWork, pay, pending_order, store_with

pytestmark = pytest.mark.anyio


async def paid(store: InMemoryStore, order_id: int, amount: str) -> Payment:
    reply = await pay(order_id, amount, uow=InMemoryUnitOfWork(store))
    assert reply.payment is not None
    return reply.payment


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="199.99"),
        pending_order(order_id=2, total="5.00"),
        Order(id=3, status="cancelled", total=Money(Decimal("7.00"))),
    )


async def test_get_payment_returns_the_stored_payment(store: InMemoryStore) -> None:
    await paid(store, 2, "5.00")
    payment = await paid(store, 1, "199.99")
    assert payment.id is not None

    found = await services.get_payment(payment.id, uow=InMemoryUnitOfWork(store))

    assert found == payment
    assert found.order_id == 1
    assert found.amount == Money(Decimal("199.99"))
    assert found.created_at == NOW


async def test_get_payment_of_an_unknown_id_raises_payment_not_found(store: InMemoryStore) -> None:
    payment = await paid(store, 1, "199.99")
    assert payment.id is not None

    with pytest.raises(PaymentNotFound) as missing:
        await services.get_payment(payment.id + 1, uow=InMemoryUnitOfWork(store))

    assert missing.value.payment_id == payment.id + 1
    assert str(payment.id + 1) in str(missing.value)


async def test_reads_commit_nothing(store: InMemoryStore) -> None:
    payment = await paid(store, 1, "199.99")
    assert payment.id is not None
    payment_read, order_read = InMemoryUnitOfWork(store), InMemoryUnitOfWork(store)

    await services.get_payment(payment.id, uow=payment_read)
    await services.payments_of_order(1, uow=order_read)

    assert not payment_read.committed
    assert not order_read.committed


async def test_payments_of_a_missing_order_raise_order_not_found(store: InMemoryStore) -> None:
    with pytest.raises(OrderNotFound) as missing:
        await services.payments_of_order(99, uow=InMemoryUnitOfWork(store))

    assert missing.value.order_id == 99


@pytest.mark.parametrize("order_id", [1, 3], ids=["pending", "cancelled"])
async def test_an_unpaid_order_has_no_payments(store: InMemoryStore, order_id: int) -> None:
    await paid(store, 2, "5.00")

    assert await services.payments_of_order(order_id, uow=InMemoryUnitOfWork(store)) == []


async def test_a_paid_order_lists_its_payment_and_only_its_own(store: InMemoryStore) -> None:
    payment = await paid(store, 1, "199.99")
    other = await paid(store, 2, "5.00")

    assert await services.payments_of_order(1, uow=InMemoryUnitOfWork(store)) == [payment]
    assert await services.payments_of_order(2, uow=InMemoryUnitOfWork(store)) == [other]


async def test_an_orders_payments_come_oldest_first(store: InMemoryStore) -> None:
    # Two payments of one order cannot be made through the model today (one succeeded
    # payment per order); seeded directly, they show the use case keeps the store's order.
    older = Payment(order_id=1, amount=Money(Decimal("100.00")), created_at=NOW, id=1)
    newer = Payment(
        order_id=1, amount=Money(Decimal("99.99")), created_at=NOW + timedelta(seconds=1), id=2
    )
    store.payments = {1: older, 2: newer}

    assert await services.payments_of_order(1, uow=InMemoryUnitOfWork(store)) == [older, newer]


async def test_a_payment_read_on_a_store_that_does_not_answer_is_storage_unavailable(
    store: InMemoryStore,
) -> None:
    uow = FailingUnitOfWork(store, fails_at="read")

    with pytest.raises(StorageUnavailable):
        await services.get_payment(1, uow=uow)

    assert uow.steps[-1] == "read"


async def test_an_orders_payments_on_a_store_that_does_not_answer_are_storage_unavailable(
    store: InMemoryStore,
) -> None:
    uow = FailingUnitOfWork(store, fails_at="read")

    with pytest.raises(StorageUnavailable):
        await services.payments_of_order(1, uow=uow)

    assert uow.steps[-1] == "read"
