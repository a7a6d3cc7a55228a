"""What deciding an attempt reads in one step: the order, the key's kept answer, and a
payment id set aside only when the order looks payable (pending, and the key unused)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.model import OrderStatus
from payment.domain.ports import AttemptGround
from tests.support.attempts import CALLER, attempt
from tests.unit.fakes import FailingUnitOfWork, pay, pending_order, store_with

pytestmark = pytest.mark.anyio


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="10.00"),
        pending_order(order_id=2, total="20.00"),
        replace(pending_order(order_id=3, total="30.00"), status="cancelled"),
    )


async def ground_of(
    store: InMemoryStore, order_id: int, *, key: str | None = None, caller: str = CALLER
) -> AttemptGround:
    async with InMemoryUnitOfWork(store) as uow:
        return await uow.ground_for(order_id, caller=caller, key=key)


@pytest.mark.parametrize("key", [None, "k1"], ids=["no-key", "unused-key"])
async def test_a_pending_order_comes_with_a_payment_id_set_aside(
    store: InMemoryStore, key: str | None
) -> None:
    ground = await ground_of(store, 1, key=key)

    assert ground.order == pending_order(order_id=1, total="10.00")
    assert ground.kept is None
    assert ground.payment_id is not None


async def test_each_read_of_a_pending_order_sets_aside_another_id(store: InMemoryStore) -> None:
    ids = [(await ground_of(store, order_id)).payment_id for order_id in (1, 1, 2)]

    assert None not in ids
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    ("order_id", "status"), [(3, "cancelled"), (2, OrderStatus.PAID)], ids=["cancelled", "paid"]
)
async def test_an_order_that_is_not_pending_takes_no_payment_id(
    store: InMemoryStore, order_id: int, status: str
) -> None:
    await pay(2, "20.00", uow=InMemoryUnitOfWork(store))

    ground = await ground_of(store, order_id, key="k1")

    assert ground.order is not None
    assert ground.order.status == status
    assert ground.payment_id is None


async def test_an_unknown_order_takes_no_payment_id(store: InMemoryStore) -> None:
    ground = await ground_of(store, 99, key="k1")

    assert ground == AttemptGround(order=None, kept=None, payment_id=None)


async def test_a_used_key_comes_with_its_kept_answer_and_takes_no_payment_id(
    store: InMemoryStore,
) -> None:
    first = await pay(1, "9.99", uow=InMemoryUnitOfWork(store), key="k1")

    ground = await ground_of(store, 1, key="k1")

    assert ground.kept is not None
    assert ground.kept.answer == first.answer
    assert ground.kept.fingerprint == attempt(1, "9.99").fingerprint
    assert ground.order is not None
    assert ground.order.status == OrderStatus.PENDING
    assert ground.payment_id is None


async def test_a_key_is_looked_up_for_its_caller_only(store: InMemoryStore) -> None:
    await pay(1, "9.99", uow=InMemoryUnitOfWork(store), key="k1", caller="shop")

    ground = await ground_of(store, 1, key="k1", caller="gateway")

    assert ground.kept is None
    assert ground.payment_id is not None


async def test_a_payment_gets_the_id_set_aside_at_its_read_without_asking_for_another(
    store: InMemoryStore,
) -> None:
    uow = FailingUnitOfWork(store, fails_at=None)

    reply = await pay(1, "10.00", uow=uow)

    assert reply.payment is not None
    assert reply.payment.id == 1
    assert "next_id" not in uow.steps
    assert store.payments == {1: reply.payment}


async def test_a_payment_asks_for_an_id_when_its_read_set_none_aside(
    store: InMemoryStore,
) -> None:
    uow = FailingUnitOfWork(store, fails_at=None, sets_aside_ids=False)

    reply = await pay(1, "10.00", uow=uow)

    assert reply.payment is not None
    assert uow.steps.count("next_id") == 1
    assert store.payments == {reply.payment.id: reply.payment}


async def test_replays_and_refusals_of_orders_not_payable_use_up_no_payment_id(
    store: InMemoryStore,
) -> None:
    first = await pay(1, "10.00", uow=InMemoryUnitOfWork(store), key="k1")
    replayed = await pay(1, "10.00", uow=InMemoryUnitOfWork(store), key="k1")
    paid_already = await pay(1, "10.00", uow=InMemoryUnitOfWork(store))
    cancelled = await pay(3, "30.00", uow=InMemoryUnitOfWork(store))
    unknown = await pay(99, "1.00", uow=InMemoryUnitOfWork(store))

    second = await pay(2, "20.00", uow=InMemoryUnitOfWork(store))

    assert replayed.replayed
    assert [paid_already.outcome, cancelled.outcome, unknown.outcome] == [
        Outcome.ORDER_NOT_PAYABLE,
        Outcome.ORDER_NOT_PAYABLE,
        Outcome.ORDER_NOT_FOUND,
    ]
    assert first.payment is not None
    assert second.payment is not None
    assert (first.payment.id, second.payment.id) == (1, 2)


async def test_an_id_set_aside_for_an_attempt_that_did_not_pay_is_skipped(
    store: InMemoryStore,
) -> None:
    mismatch = await pay(1, "9.99", uow=InMemoryUnitOfWork(store))

    paid = await pay(1, "10.00", uow=InMemoryUnitOfWork(store))

    assert mismatch.payment is None
    assert paid.payment is not None
    assert paid.payment.id == 2
