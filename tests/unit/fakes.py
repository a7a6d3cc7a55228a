"""Fakes for the unit tests: a clock that stands still, order-building helpers, answers that
remember their decisions, a unit of work whose store stops answering at a chosen step, and
units of work that never reach the store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Literal, Self, TypeVar

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.attempts import AuditRecord, Decision, IdempotencyRecord, RecordedAnswer
from payment.domain.errors import StorageUnavailable
from payment.domain.model import Money, Order, OrderStatus, Payment
from payment.domain.ports import (
    AuditTrail,
    IdempotencyRepository,
    OrderRepository,
    PaymentRepository,
)
from tests.support.attempts import plain_answer

T = TypeVar("T")

NOW = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)


class FixedClock:
    """A clock that always answers the same aware UTC time."""

    def __init__(self, moment: datetime = NOW) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def pending_order(order_id: int = 1, total: str = "199.99") -> Order:
    return Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal(total)))


def store_with(*orders: Order) -> InMemoryStore:
    store = InMemoryStore()
    for order in orders:
        store.add_order(order)
    return store


class RecordingAnswers:
    """Answers like ``plain_answer`` and keeps every decision it was asked to answer, so a
    test can look at the refusal behind an answer."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def __call__(self, decision: Decision) -> RecordedAnswer:
        self.decisions.append(decision)
        return plain_answer(decision)


Step = Literal[
    "enter",
    "claim",
    "get_for_update",
    "mark_paid",
    "add_payment",
    "add_audit",
    "record_answer",
    "commit",
]
"""Every step of the store the pay use case can take."""

STEPS: tuple[Step, ...] = (
    "enter",
    "claim",
    "get_for_update",
    "mark_paid",
    "add_payment",
    "add_audit",
    "record_answer",
    "commit",
)


def unavailable() -> StorageUnavailable:
    error = StorageUnavailable()
    error.__cause__ = TimeoutError("the store did not answer in time")
    return error


class _FailingOrders:
    def __init__(self, inner: OrderRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def get(self, order_id: int) -> Order | None:
        return self._inner.get(order_id)

    def get_for_update(self, order_id: int) -> Order | None:
        self._uow.step("get_for_update")
        return self._inner.get_for_update(order_id)

    def mark_paid(self, order: Order) -> None:
        self._uow.step("mark_paid")
        self._inner.mark_paid(order)


class _FailingPayments:
    def __init__(self, inner: PaymentRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def add(self, payment: Payment) -> Payment:
        self._uow.step("add_payment")
        return self._inner.add(payment)

    def get(self, payment_id: int) -> Payment | None:
        return self._inner.get(payment_id)

    def list_for_order(self, order_id: int) -> list[Payment]:
        return self._inner.list_for_order(order_id)


class _FailingIdempotency:
    def __init__(self, inner: IdempotencyRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def claim(
        self, caller: str, key: str, *, fingerprint: str, at: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        self._uow.step("claim")
        return self._inner.claim(caller, key, fingerprint=fingerprint, at=at, expires_at=expires_at)

    def record_answer(self, caller: str, key: str, answer: RecordedAnswer) -> None:
        self._uow.step("record_answer")
        self._inner.record_answer(caller, key, answer)


class _FailingAudit:
    def __init__(self, inner: AuditTrail, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def add(self, record: AuditRecord) -> None:
        self._uow.step("add_audit")
        self._inner.add(record)

    def list_for_order(self, order_id: int) -> list[AuditRecord]:
        return self._inner.list_for_order(order_id)


class FailingUnitOfWork:
    """An in-memory unit of work that raises ``error`` (by default ``StorageUnavailable``)
    when the use case reaches ``fails_at``; every step before it works as usual.

    ``steps`` lists the steps taken, the failing one included, so a test can tell that the
    failure really happened where it meant it to.
    """

    def __init__(
        self, store: InMemoryStore, *, fails_at: Step, error: Exception | None = None
    ) -> None:
        self._inner = InMemoryUnitOfWork(store)
        self.fails_at = fails_at
        self.error = error
        self.steps: list[Step] = []

    @property
    def committed(self) -> bool:
        return self._inner.committed

    def step(self, name: Step) -> None:
        self.steps.append(name)
        if name == self.fails_at:
            raise self.error if self.error is not None else unavailable()

    @property
    def orders(self) -> OrderRepository:
        return _FailingOrders(self._inner.orders, self)

    @property
    def payments(self) -> PaymentRepository:
        return _FailingPayments(self._inner.payments, self)

    @property
    def idempotency(self) -> IdempotencyRepository:
        return _FailingIdempotency(self._inner.idempotency, self)

    @property
    def audit(self) -> AuditTrail:
        return _FailingAudit(self._inner.audit, self)

    def __enter__(self) -> Self:
        self.step("enter")
        self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)

    def commit(self) -> None:
        self.step("commit")
        self._inner.commit()


class UnreachableUnitOfWork:
    """A unit of work whose store never answers in time."""

    def __init__(self) -> None:
        self.committed = False

    @property
    def orders(self) -> OrderRepository:
        raise StorageUnavailable

    @property
    def payments(self) -> PaymentRepository:
        raise StorageUnavailable

    @property
    def idempotency(self) -> IdempotencyRepository:
        raise StorageUnavailable

    @property
    def audit(self) -> AuditTrail:
        raise StorageUnavailable

    def __enter__(self) -> Self:
        raise StorageUnavailable from TimeoutError(
            "connection to postgresql://payer:s3cr3tpw@db:5432/orders timed out"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def commit(self) -> None:
        self.committed = True


class BrokenUnitOfWork(UnreachableUnitOfWork):
    """A unit of work that fails in a way nobody planned for."""

    def __enter__(self) -> Self:
        raise RuntimeError("SELECT * FROM orders WHERE password = 's3cr3tpw'")


def all_at_once(count: int, call: Callable[[], T]) -> tuple[list[T], list[BaseException]]:
    """Run ``call`` in ``count`` threads released together; what they returned and raised."""
    start = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        try:
            result = call()
        except BaseException as error:
            with lock:
                errors.append(error)
        else:
            with lock:
                results.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors
