"""The pay use case when another request commits between its read and its write: the
decision is made again on what is stored now, a few times at most, and never pays twice."""

from __future__ import annotations

import json

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.attempts import Outcome
from payment.domain.errors import (
    ConcurrentChange,
    IdempotencyKeyTaken,
    OrderChanged,
    OrderNotPayable,
    TooMuchContention,
)
from payment.domain.model import OrderStatus
from tests.support.attempts import CALLER, attempt
from tests.unit.fakes import (
    Change,
    FailingUnitOfWork,
    FixedClock,
    InterleavedUnitOfWork,
    RecordingAnswers,
    decided_by_another,
    order_changed,
    paid_by_another,
    pay,
    pending_order,
    store_with,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="10.00"), pending_order(order_id=2, total="20.00")
    )


def outcomes(store: InMemoryStore) -> list[tuple[str, Outcome]]:
    return [(record.request_id, record.outcome) for record in store.audit]


def outcome_in(answer_body: str) -> str:
    outcome: str = json.loads(answer_body)["outcome"]
    return outcome


async def test_an_order_paid_by_another_request_meanwhile_is_refused_as_paid_and_not_paid_again(
    store: InMemoryStore,
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[paid_by_another(1, "10.00")])
    answers = RecordingAnswers()

    reply = await services.pay(attempt(1, "10.00"), uow=uow, clock=FixedClock(), answer_for=answers)

    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert reply.payment is None
    assert [d.outcome for d in answers.decisions] == [Outcome.PAID, Outcome.ORDER_NOT_PAYABLE]
    refusal = answers.decisions[-1].refusal
    assert isinstance(refusal, OrderNotPayable)
    assert refusal.status == OrderStatus.PAID
    [payment] = store.payments.values()
    assert payment.id != uow.grounds[0].payment_id
    assert store.orders[1].status == OrderStatus.PAID
    assert outcomes(store) == [
        ("another", Outcome.PAID),
        ("test-request", Outcome.ORDER_NOT_PAYABLE),
    ]
    assert len(uow.grounds) == 2


async def test_the_refusal_decided_again_is_the_answer_kept_for_the_key(
    store: InMemoryStore,
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[paid_by_another(1, "10.00", key="other")])

    reply = await pay(1, "10.00", uow=uow, key="k1")
    retry = await pay(1, "10.00", uow=InMemoryUnitOfWork(store), key="k1")

    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert store.idempotency[(CALLER, "k1")].record.answer == reply.answer
    assert retry.replayed
    assert retry.answer == reply.answer
    assert len(store.payments) == 1


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        (order_changed(1, status="cancelled"), Outcome.ORDER_NOT_PAYABLE),
        (order_changed(1, status="on_hold"), Outcome.ORDER_NOT_PAYABLE),
        (order_changed(1, total="12.00"), Outcome.AMOUNT_MISMATCH),
    ],
    ids=["cancelled", "on-hold", "new-total"],
)
async def test_an_order_changed_meanwhile_is_decided_again_as_it_is_now(
    store: InMemoryStore, change: Change, outcome: Outcome
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[change])

    reply = await pay(1, "10.00", uow=uow, key="k1")

    assert reply.outcome is outcome
    assert store.payments == {}
    assert store.orders[1].paid_at is None
    assert store.orders[1].status != OrderStatus.PAID
    assert outcomes(store) == [("test-request", outcome)]
    assert outcome_in(store.idempotency[(CALLER, "k1")].record.answer.body) == outcome.value
    assert len(uow.grounds) == 2


async def test_a_duplicate_that_committed_meanwhile_is_replayed_not_paid_twice(
    store: InMemoryStore,
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[paid_by_another(1, "10.00", key="k1")])

    reply = await pay(1, "10.00", uow=uow, key="k1")

    assert reply.replayed
    assert reply.payment is None
    assert reply.answer == store.idempotency[(CALLER, "k1")].record.answer
    assert outcome_in(reply.answer.body) == Outcome.PAID.value
    assert len(store.payments) == 1
    assert outcomes(store) == [("another", Outcome.PAID), ("test-request", Outcome.REPLAYED)]
    assert [ground.kept is not None for ground in uow.grounds] == [False, True]


async def test_a_refusal_whose_key_was_taken_meanwhile_by_the_same_request_is_replayed(
    store: InMemoryStore,
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[decided_by_another(1, "9.99", key="k1")])

    reply = await pay(1, "9.99", uow=uow, key="k1")

    assert reply.replayed
    assert outcome_in(reply.answer.body) == Outcome.AMOUNT_MISMATCH.value
    assert outcomes(store) == [
        ("another", Outcome.AMOUNT_MISMATCH),
        ("test-request", Outcome.REPLAYED),
    ]
    assert store.payments == {}


async def test_a_key_taken_meanwhile_by_another_request_is_refused_as_reused_and_pays_nothing(
    store: InMemoryStore,
) -> None:
    uow = InterleavedUnitOfWork(store, meanwhile=[paid_by_another(2, "20.00", key="k1")])

    reused = await pay(1, "10.00", uow=uow, key="k1")

    assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED

    assert store.orders[1].status == OrderStatus.PENDING
    assert [p.order_id for p in store.payments.values()] == [2]
    assert store.idempotency[(CALLER, "k1")].record.fingerprint == attempt(2, "20.00").fingerprint
    assert outcomes(store) == [
        ("another", Outcome.PAID),
        ("test-request", Outcome.IDEMPOTENCY_KEY_REUSED),
    ]
    assert store.audit[-1].order_id == 1


@pytest.mark.parametrize("change", [OrderChanged, IdempotencyKeyTaken])
async def test_an_attempt_whose_commit_always_finds_a_change_gives_up_and_writes_nothing(
    store: InMemoryStore, change: type[ConcurrentChange]
) -> None:
    uow = FailingUnitOfWork(store, fails_at="commit", error=change())

    with pytest.raises(TooMuchContention) as contention:
        await pay(1, "10.00", uow=uow, key="k1")

    assert contention.value.order_id == 1
    assert "Retry" in str(contention.value)
    assert uow.steps.count("ground") == services.MAX_DECISIONS
    assert uow.steps.count("commit") == services.MAX_DECISIONS
    assert not uow.committed
    assert store.payments == {}
    assert store.audit == []
    assert store.idempotency == {}
    assert store.orders[1].status == OrderStatus.PENDING


async def test_an_order_that_holds_still_on_the_last_decision_is_paid_once() -> None:
    store = store_with(pending_order(order_id=1, total="10.00"))
    uow = FailingUnitOfWork(
        store, fails_at="commit", error=OrderChanged(), times=services.MAX_DECISIONS - 1
    )

    reply = await pay(1, "10.00", uow=uow, key="k1")

    assert reply.outcome is Outcome.PAID
    assert uow.steps.count("ground") == services.MAX_DECISIONS
    assert uow.committed
    assert list(store.payments.values()) == [reply.payment]
    assert [record.outcome for record in store.audit] == [Outcome.PAID]
    assert list(store.idempotency) == [(CALLER, "k1")]


async def test_an_attempt_that_loses_its_order_then_its_key_is_decided_a_third_time(
    store: InMemoryStore,
) -> None:
    # No storm: one request pays the order, then another takes the key, each just before
    # this attempt's write. Each decision after a change is final, but two changes need three.
    uow = InterleavedUnitOfWork(
        store,
        meanwhile=[paid_by_another(1, "10.00"), paid_by_another(2, "20.00", key="k1")],
    )

    reused = await pay(1, "10.00", uow=uow, key="k1")

    assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED

    assert len(uow.grounds) == 3
    assert outcomes(store) == [
        ("another", Outcome.PAID),
        ("another", Outcome.PAID),
        ("test-request", Outcome.IDEMPOTENCY_KEY_REUSED),
    ]
    assert sorted(p.order_id for p in store.payments.values()) == [1, 2]
