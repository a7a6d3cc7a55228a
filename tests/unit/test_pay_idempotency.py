"""The pay use case with idempotency keys: one decision per key, replayed ever after."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.attempts import Outcome
from payment.domain.errors import StorageUnavailable
from payment.domain.model import OrderStatus
from tests.support.attempts import CALLER, attempt, plain_answer
from tests.unit.fakes import (
    NOW,
    FailingUnitOfWork,
    FixedClock,
    InterleavedUnitOfWork,
    all_at_once,
    pay,
    pending_order,
    store_with,
)

pytestmark = pytest.mark.anyio


async def pay_in(
    store: InMemoryStore,
    order_id: int,
    amount: str,
    *,
    key: str | None = None,
    caller: str = CALLER,
) -> services.Reply:
    return await pay(order_id, amount, uow=InMemoryUnitOfWork(store), key=key, caller=caller)


def outcome_in(answer_body: str) -> str:
    outcome: str = json.loads(answer_body)["outcome"]
    return outcome


async def test_a_first_attempt_with_a_key_pays_and_keeps_its_answer() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))

    reply = await pay_in(store, 1, "10.00", key="k1")

    assert reply.outcome is Outcome.PAID
    assert not reply.replayed
    assert reply.payment is not None
    assert list(store.payments.values()) == [reply.payment]
    kept = store.idempotency[(CALLER, "k1")].record
    assert kept.answer == reply.answer
    assert kept.fingerprint == attempt(1, "10.00").fingerprint


async def test_a_key_is_kept_for_the_retention_it_is_given() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))

    await pay(
        1, "10.00", uow=InMemoryUnitOfWork(store), key="k1", key_retention=timedelta(hours=48)
    )

    assert store.idempotency[(CALLER, "k1")].expires_at == NOW + timedelta(hours=48)


async def test_a_key_is_kept_24_hours_by_default() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))

    await pay_in(store, 1, "10.00", key="k1")

    assert store.idempotency[(CALLER, "k1")].expires_at == NOW + timedelta(hours=24)


async def test_a_retry_with_the_same_key_and_request_gets_the_first_answer_and_pays_once() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    first = await pay_in(store, 1, "10.00", key="k1")

    again = await pay_in(store, 1, "10.00", key="k1")

    assert again.replayed
    assert again.outcome is Outcome.REPLAYED
    assert again.answer == first.answer
    assert again.payment is None
    assert len(store.payments) == 1
    assert store.orders[1].status == OrderStatus.PAID


async def test_a_retry_is_the_same_request_when_its_amount_is_written_otherwise() -> None:
    store = store_with(pending_order(order_id=1, total="10.50"))
    first = await pay_in(store, 1, "10.5", key="k1")

    again = await pay_in(store, 1, "10.50", key="k1")

    assert again.replayed
    assert again.answer == first.answer
    assert len(store.payments) == 1


async def test_many_retries_all_get_the_first_answer() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    first = await pay_in(store, 1, "10.00", key="k1")

    retries = [await pay_in(store, 1, "10.00", key="k1") for _ in range(5)]

    assert all(reply.replayed and reply.answer == first.answer for reply in retries)
    assert len(store.payments) == 1


@pytest.mark.parametrize(
    ("order_id", "amount"),
    [(2, "20.00"), (1, "20.00"), (2, "10.00")],
    ids=["other-order-and-amount", "other-amount", "other-order"],
)
async def test_the_same_key_with_another_request_is_refused_as_reused_and_pays_nothing(
    order_id: int, amount: str
) -> None:
    store = store_with(
        pending_order(order_id=1, total="10.00"), pending_order(order_id=2, total="20.00")
    )
    first = await pay_in(store, 1, "10.00", key="k1")
    payments_before = dict(store.payments)

    refused = await pay_in(store, order_id, amount, key="k1")

    assert refused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED
    assert refused.answer.status == 422
    assert store.payments == payments_before
    assert store.orders[2].status == OrderStatus.PENDING
    assert store.idempotency[(CALLER, "k1")].record.answer == first.answer
    assert store.idempotency[(CALLER, "k1")].record.fingerprint == attempt(1, "10.00").fingerprint
    assert store.audit[-1].outcome is Outcome.IDEMPOTENCY_KEY_REUSED
    assert store.audit[-1].order_id == order_id


async def test_after_a_reused_key_the_first_request_still_gets_its_answer() -> None:
    store = store_with(
        pending_order(order_id=1, total="10.00"), pending_order(order_id=2, total="20.00")
    )
    first = await pay_in(store, 1, "10.00", key="k1")
    reused = await pay_in(store, 2, "20.00", key="k1")
    assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED

    again = await pay_in(store, 1, "10.00", key="k1")

    assert again.replayed
    assert again.answer == first.answer


def make_pending(order_id: int) -> Callable[[InMemoryStore], Awaitable[None]]:
    async def change(store: InMemoryStore) -> None:
        store.add_order(replace(store.orders[order_id], status=OrderStatus.PENDING))

    return change


def add_order(order_id: int, total: str) -> Callable[[InMemoryStore], Awaitable[None]]:
    async def change(store: InMemoryStore) -> None:
        store.add_order(pending_order(order_id=order_id, total=total))

    return change


def pay_with_another_key(order_id: int, amount: str) -> Callable[[InMemoryStore], Awaitable[None]]:
    async def change(store: InMemoryStore) -> None:
        reply = await pay_in(store, order_id, amount, key="another")
        assert reply.outcome is Outcome.PAID

    return change


@pytest.mark.parametrize(
    ("order_id", "amount", "refused_as", "change"),
    [
        pytest.param(
            1, "9.99", Outcome.AMOUNT_MISMATCH, pay_with_another_key(1, "10.00"), id="mismatch"
        ),
        pytest.param(9, "10.00", Outcome.ORDER_NOT_FOUND, add_order(9, "10.00"), id="not-found"),
        pytest.param(3, "30.00", Outcome.ORDER_NOT_PAYABLE, make_pending(3), id="not-payable"),
    ],
)
async def test_a_refusal_with_a_key_is_replayed_even_after_the_order_changed(
    order_id: int,
    amount: str,
    refused_as: Outcome,
    change: Callable[[InMemoryStore], Awaitable[None]],
) -> None:
    store = store_with(
        pending_order(order_id=1, total="10.00"),
        replace(pending_order(order_id=3, total="30.00"), status="cancelled"),
    )
    first = await pay_in(store, order_id, amount, key="k1")
    assert first.outcome is refused_as
    await change(store)
    payments_before = dict(store.payments)

    again = await pay_in(store, order_id, amount, key="k1")

    assert again.replayed
    assert again.answer == first.answer
    assert outcome_in(again.answer.body) == refused_as.value
    assert store.payments == payments_before


async def test_a_mismatch_replayed_is_not_the_not_payable_a_new_attempt_would_get() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    await pay_in(store, 1, "9.99", key="k1")
    await pay_in(store, 1, "10.00", key="k2")

    replayed = await pay_in(store, 1, "9.99", key="k1")
    fresh = await pay_in(store, 1, "9.99", key="k3")

    assert outcome_in(replayed.answer.body) == Outcome.AMOUNT_MISMATCH.value
    assert fresh.outcome is Outcome.ORDER_NOT_PAYABLE


async def test_keys_are_scoped_by_caller() -> None:
    store = store_with(
        pending_order(order_id=1, total="10.00"), pending_order(order_id=2, total="20.00")
    )

    shop = await pay_in(store, 1, "10.00", key="k1", caller="shop")
    gateway = await pay_in(store, 2, "20.00", key="k1", caller="gateway")

    assert shop.outcome is Outcome.PAID
    assert gateway.outcome is Outcome.PAID
    assert not gateway.replayed
    assert len(store.payments) == 2
    assert set(store.idempotency) == {("shop", "k1"), ("gateway", "k1")}


async def test_another_callers_same_key_and_request_is_decided_afresh() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    shop = await pay_in(store, 1, "10.00", key="k1", caller="shop")

    gateway = await pay_in(store, 1, "10.00", key="k1", caller="gateway")

    assert shop.outcome is Outcome.PAID
    assert gateway.outcome is Outcome.ORDER_NOT_PAYABLE
    assert gateway.answer != shop.answer
    assert len(store.payments) == 1


async def test_without_a_key_a_retry_is_decided_afresh_and_nothing_is_kept() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))

    first = await pay_in(store, 1, "10.00")
    again = await pay_in(store, 1, "10.00")

    assert first.outcome is Outcome.PAID
    assert again.outcome is Outcome.ORDER_NOT_PAYABLE
    assert not again.replayed
    assert len(store.payments) == 1
    assert store.idempotency == {}


async def test_a_key_whose_attempt_failed_is_not_kept_and_a_retry_is_decided() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    failing = FailingUnitOfWork(store, fails_at="commit")
    with pytest.raises(StorageUnavailable):
        await pay(1, "10.00", uow=failing, key="k1")
    assert failing.steps[-1] == "commit"
    assert store.idempotency == {}

    retry = await pay_in(store, 1, "10.00", key="k1")

    assert retry.outcome is Outcome.PAID
    assert not retry.replayed
    assert len(store.payments) == 1


async def test_concurrent_attempts_with_one_key_pay_once_and_all_get_the_same_answer() -> None:
    store = store_with(pending_order(order_id=1, total="50.00"))
    attempts = 16
    uows = [InterleavedUnitOfWork(store) for _ in range(attempts)]
    working = list(uows)
    replies, unexpected = await all_at_once(
        attempts,
        lambda: services.pay(
            attempt(1, "50.00", key="k1"),
            uow=working.pop(),
            clock=FixedClock(),
            answer_for=plain_answer,
        ),
    )

    assert unexpected == []
    assert sorted(reply.outcome for reply in replies) == sorted(
        [Outcome.PAID] + [Outcome.REPLAYED] * (attempts - 1)
    )
    assert len({reply.answer for reply in replies}) == 1
    assert len(store.payments) == 1
    assert store.orders[1].status == OrderStatus.PAID
    assert all(uow.grounds[0].kept is None for uow in uows)
    assert [r.outcome for r in store.audit].count(Outcome.REPLAYED) == attempts - 1
