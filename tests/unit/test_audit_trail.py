"""The audit trail: one record per decision, committed with it, or nothing at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.attempts import AuditRecord, Outcome
from payment.domain.errors import IdempotencyKeyInUse, IdempotencyKeyReused, StorageUnavailable
from payment.domain.model import Money, OrderStatus
from tests.support.attempts import pay
from tests.unit.fakes import (
    NOW,
    STEPS,
    FailingUnitOfWork,
    FixedClock,
    Step,
    pending_order,
    store_with,
)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="10.00"),
        replace(pending_order(order_id=2, total="20.00"), status="cancelled"),
    )


def pay_in(
    store: InMemoryStore,
    order_id: int,
    amount: str,
    *,
    key: str | None = None,
    caller: str = "shop",
    request_id: str = "req-1",
) -> None:
    pay(
        order_id,
        amount,
        uow=InMemoryUnitOfWork(store),
        clock=FixedClock(),
        key=key,
        caller=caller,
        request_id=request_id,
    )


def test_a_payment_leaves_one_record_with_its_payment_id(store: InMemoryStore) -> None:
    reply = pay(
        1,
        "10.00",
        uow=InMemoryUnitOfWork(store),
        clock=FixedClock(),
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
def test_a_refusal_leaves_one_record_with_the_claimed_amount_and_no_payment(
    store: InMemoryStore, order_id: int, amount: str, outcome: Outcome
) -> None:
    pay_in(store, order_id, amount, request_id="req-7", caller="gateway")

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


def test_a_replay_leaves_a_record_of_its_own(store: InMemoryStore) -> None:
    pay_in(store, 1, "10.00", key="k1", request_id="first")

    pay_in(store, 1, "10.0", key="k1", request_id="retry")

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


def test_a_reused_key_leaves_a_record_of_the_refused_request(store: InMemoryStore) -> None:
    pay_in(store, 1, "10.00", key="k1", request_id="first")

    with pytest.raises(IdempotencyKeyReused):
        pay_in(store, 2, "20.00", key="k1", request_id="other")

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


def test_every_decision_leaves_exactly_one_record_in_order(store: InMemoryStore) -> None:
    attempts = [
        (1, "9.99", None),
        (9, "1.00", "k1"),
        (1, "10.00", "k2"),
        (1, "10.00", "k2"),
        (1, "10.00", None),
        (2, "20.00", "k3"),
    ]

    for number, (order_id, amount, key) in enumerate(attempts):
        pay_in(store, order_id, amount, key=key, request_id=f"req-{number}")

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


def test_the_audit_trail_lists_an_orders_records_oldest_first(store: InMemoryStore) -> None:
    pay_in(store, 1, "9.99", request_id="a")
    pay_in(store, 2, "20.00", request_id="b")
    pay_in(store, 1, "10.00", request_id="c")

    with InMemoryUnitOfWork(store) as uow:
        records = uow.audit.list_for_order(1)

    assert [r.request_id for r in records] == ["a", "c"]


def test_the_record_time_is_the_clocks_in_utc(store: InMemoryStore) -> None:
    moment = datetime(2026, 11, 26, 12, 15, 0, 42, tzinfo=timezone(timedelta(hours=2)))

    reply = pay(1, "10.00", uow=InMemoryUnitOfWork(store), clock=FixedClock(moment))

    [record] = store.audit
    assert record.at == datetime(2026, 11, 26, 10, 15, 0, 42, tzinfo=UTC)
    assert record.at.tzinfo is UTC
    assert reply.payment is not None
    assert reply.payment.created_at == record.at


@pytest.mark.parametrize("fails_at", STEPS)
def test_nothing_is_written_when_the_store_goes_away_during_a_payment(
    store: InMemoryStore, fails_at: Step
) -> None:
    uow = FailingUnitOfWork(store, fails_at=fails_at)

    with pytest.raises(StorageUnavailable):
        pay(1, "10.00", uow=uow, clock=FixedClock(), key="k1")

    assert uow.steps[-1] == fails_at
    assert not uow.committed
    assert store.audit == []
    assert store.idempotency == {}
    assert store.payments == {}
    assert store.orders[1].status == OrderStatus.PENDING
    assert store.orders[1].paid_at is None


REFUSAL_STEPS = [step for step in STEPS if step not in {"mark_paid", "add_payment"}]


@pytest.mark.parametrize("fails_at", REFUSAL_STEPS)
def test_nothing_is_written_when_the_store_goes_away_during_a_refusal(
    store: InMemoryStore, fails_at: Step
) -> None:
    uow = FailingUnitOfWork(store, fails_at=fails_at)

    with pytest.raises(StorageUnavailable):
        pay(1, "9.99", uow=uow, clock=FixedClock(), key="k1")

    assert uow.steps[-1] == fails_at
    assert store.audit == []
    assert store.idempotency == {}


@pytest.mark.parametrize("fails_at", ["enter", "claim", "add_audit", "commit"])
def test_nothing_is_written_when_the_store_goes_away_during_a_replay(
    store: InMemoryStore, fails_at: Step
) -> None:
    pay_in(store, 1, "10.00", key="k1")
    audit_before = list(store.audit)
    keys_before = dict(store.idempotency)
    uow = FailingUnitOfWork(store, fails_at=fails_at)

    with pytest.raises(StorageUnavailable):
        pay(1, "10.00", uow=uow, clock=FixedClock(), key="k1", caller="shop")

    assert uow.steps[-1] == fails_at
    assert "get_for_update" not in uow.steps
    assert store.audit == audit_before
    assert store.idempotency == keys_before


def test_nothing_is_written_when_the_key_is_in_use(store: InMemoryStore) -> None:
    uow = FailingUnitOfWork(store, fails_at="claim", error=IdempotencyKeyInUse("k1"))

    with pytest.raises(IdempotencyKeyInUse):
        pay(1, "10.00", uow=uow, clock=FixedClock(), key="k1")

    assert store.audit == []
    assert store.idempotency == {}
    assert store.payments == {}
