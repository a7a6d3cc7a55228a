"""The audit trail: one record per decision, committed with it, or nothing at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.attempts import AuditRecord, Outcome
from payment.domain.errors import StorageUnavailable
from payment.domain.model import Money, OrderStatus
from payment.domain.services import Reply
from tests.unit.fakes import (
    NOW,
    PAY_STEPS,
    STORE_STEPS,
    FailingUnitOfWork,
    FixedClock,
    Step,
    pay,
    pending_order,
    store_with,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="10.00"),
        replace(pending_order(order_id=2, total="20.00"), status="cancelled"),
    )


async def pay_in(
    store: InMemoryStore,
    order_id: int,
    amount: str,
    *,
    key: str | None = None,
    caller: str = "shop",
    request_id: str = "req-1",
) -> Reply:
    return await pay(
        order_id,
        amount,
        uow=InMemoryUnitOfWork(store),
        key=key,
        caller=caller,
        request_id=request_id,
    )


async def test_a_payment_leaves_one_record_with_its_payment_id(store: InMemoryStore) -> None:
    reply = await pay(
        1,
        "10.00",
        uow=InMemoryUnitOfWork(store),
        key="k1",
        caller="shop",
        request_id="req-1",
    )

    assert reply.payment is not None
    assert store.audit == [
        AuditRecord(
            at=NOW,
            request_id="req-1",
            caller="shop",
            order_id=1,
            claimed_amount=Money.of("10.00"),
            outcome=Outcome.PAID,
            payment_id=reply.payment.id,
            idempotency_key="k1",
        )
    ]


@pytest.mark.parametrize(
    ("order_id", "amount", "outcome"),
    [
        (9, "10.00", Outcome.ORDER_NOT_FOUND),
        (2, "20.00", Outcome.ORDER_NOT_PAYABLE),
        (1, "9.99", Outcome.AMOUNT_MISMATCH),
    ],
)
async def test_a_refusal_leaves_one_record_with_the_claimed_amount_and_no_payment(
    store: InMemoryStore, order_id: int, amount: str, outcome: Outcome
) -> None:
    await pay_in(store, order_id, amount, request_id="req-7", caller="gateway")

    assert store.audit == [
        AuditRecord(
            at=NOW,
            request_id="req-7",
            caller="gateway",
            order_id=order_id,
            claimed_amount=Money.of(amount),
            outcome=outcome,
            payment_id=None,
            idempotency_key=None,
        )
    ]


async def test_a_replay_leaves_a_record_of_its_own(store: InMemoryStore) -> None:
    await pay_in(store, 1, "10.00", key="k1", request_id="first")

    await pay_in(store, 1, "10.0", key="k1", request_id="retry")

    assert [(r.request_id, r.outcome) for r in store.audit] == [
        ("first", Outcome.PAID),
        ("retry", Outcome.REPLAYED),
    ]
    replayed = store.audit[1]
    assert replayed.claimed_amount == Money.of("10.00")
    assert replayed.idempotency_key == "k1"
    assert replayed.caller == "shop"
    assert replayed.order_id == 1
    assert replayed.at == NOW


async def test_a_reused_key_leaves_a_record_of_the_refused_request(store: InMemoryStore) -> None:
    await pay_in(store, 1, "10.00", key="k1", request_id="first")

    reused = await pay_in(store, 2, "20.00", key="k1", request_id="other")

    assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED

    assert store.audit[1] == AuditRecord(
        at=NOW,
        request_id="other",
        caller="shop",
        order_id=2,
        claimed_amount=Money.of("20.00"),
        outcome=Outcome.IDEMPOTENCY_KEY_REUSED,
        payment_id=None,
        idempotency_key="k1",
    )
    assert len(store.audit) == 2


async def test_every_decision_leaves_exactly_one_record_in_order(store: InMemoryStore) -> None:
    attempts = [
        (1, "9.99", None),
        (9, "1.00", "k1"),
        (1, "10.00", "k2"),
        (1, "10.00", "k2"),
        (1, "10.00", None),
        (2, "20.00", "k3"),
    ]

    for number, (order_id, amount, key) in enumerate(attempts):
        await pay_in(store, order_id, amount, key=key, request_id=f"req-{number}")

    assert [(r.request_id, r.outcome) for r in store.audit] == [
        ("req-0", Outcome.AMOUNT_MISMATCH),
        ("req-1", Outcome.ORDER_NOT_FOUND),
        ("req-2", Outcome.PAID),
        ("req-3", Outcome.REPLAYED),
        ("req-4", Outcome.ORDER_NOT_PAYABLE),
        ("req-5", Outcome.ORDER_NOT_PAYABLE),
    ]
    assert [r.payment_id is not None for r in store.audit] == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]


async def test_the_audit_trail_lists_an_orders_records_oldest_first(store: InMemoryStore) -> None:
    await pay_in(store, 1, "9.99", request_id="a")
    await pay_in(store, 2, "20.00", request_id="b")
    await pay_in(store, 1, "10.00", request_id="c")

    async with InMemoryUnitOfWork(store) as uow:
        records = await uow.audit.list_for_order(1)

    assert [r.request_id for r in records] == ["a", "c"]


async def test_the_record_time_is_the_clocks_in_utc(store: InMemoryStore) -> None:
    moment = datetime(2026, 11, 26, 12, 15, 0, 42, tzinfo=timezone(timedelta(hours=2)))

    reply = await pay(1, "10.00", uow=InMemoryUnitOfWork(store), clock=FixedClock(moment))

    [record] = store.audit
    assert record.at == datetime(2026, 11, 26, 10, 15, 0, 42, tzinfo=UTC)
    assert record.at.tzinfo is UTC
    assert reply.payment is not None
    assert reply.payment.created_at == record.at


def assert_nothing_written(store: InMemoryStore) -> None:
    assert store.audit == []
    assert store.idempotency == {}
    assert store.payments == {}
    assert store.orders[1].status == OrderStatus.PENDING
    assert store.orders[1].paid_at is None


@pytest.mark.parametrize("fails_at", STORE_STEPS)
async def test_nothing_is_written_when_the_store_goes_away_during_a_payment(
    store: InMemoryStore, fails_at: Step
) -> None:
    uow = FailingUnitOfWork(store, fails_at=fails_at, sets_aside_ids=False)

    with pytest.raises(StorageUnavailable):
        await pay(1, "10.00", uow=uow, key="k1")

    assert uow.steps[-1] == fails_at
    assert not uow.committed
    assert_nothing_written(store)


@pytest.mark.parametrize("fails_at", PAY_STEPS)
async def test_nothing_is_written_when_a_payment_is_cut_short_at_any_step(
    store: InMemoryStore, fails_at: Step
) -> None:
    uow = FailingUnitOfWork(
        store, fails_at=fails_at, error=RuntimeError("cut short"), sets_aside_ids=False
    )

    with pytest.raises(RuntimeError, match="cut short"):
        await pay(1, "10.00", uow=uow, key="k1")

    assert uow.steps[-1] == fails_at
    assert not uow.committed
    assert_nothing_written(store)


async def test_a_payment_with_a_key_takes_each_of_the_pay_steps_once_in_order(
    store: InMemoryStore,
) -> None:
    uow = FailingUnitOfWork(store, fails_at=None, sets_aside_ids=False)

    reply = await pay(1, "10.00", uow=uow, key="k1")

    assert reply.outcome is Outcome.PAID
    assert uow.steps == list(PAY_STEPS)
    assert uow.committed


REFUSAL_STEPS = [step for step in PAY_STEPS if step not in {"next_id", "mark_paid", "add_payment"}]


@pytest.mark.parametrize("fails_at", REFUSAL_STEPS)
async def test_nothing_is_written_when_a_refusal_is_cut_short_at_any_step(
    store: InMemoryStore, fails_at: Step
) -> None:
    uow = FailingUnitOfWork(store, fails_at=fails_at)

    with pytest.raises(StorageUnavailable):
        await pay(1, "9.99", uow=uow, key="k1")

    assert uow.steps[-1] == fails_at
    assert not uow.committed
    assert_nothing_written(store)


@pytest.mark.parametrize("fails_at", ["enter", "ground", "add_audit", "commit"])
async def test_nothing_is_written_when_a_replay_is_cut_short_at_any_step(
    store: InMemoryStore, fails_at: Step
) -> None:
    await pay_in(store, 1, "10.00", key="k1")
    audit_before = list(store.audit)
    keys_before = dict(store.idempotency)
    uow = FailingUnitOfWork(store, fails_at=fails_at)

    with pytest.raises(StorageUnavailable):
        await pay(1, "10.00", uow=uow, key="k1", caller="shop")

    assert uow.steps[-1] == fails_at
    assert not {"next_id", "mark_paid", "add_payment", "add_key"} & set(uow.steps)
    assert store.audit == audit_before
    assert store.idempotency == keys_before
