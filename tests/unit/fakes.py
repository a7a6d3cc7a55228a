"""Fakes for the unit tests: a clock that stands still, order-building helpers, answers that
remember their decisions, a unit of work whose store stops answering at a chosen step, units
of work on which other requests commit between the read and the write, and units of work that
never reach the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Literal, Self, TypeVar

import anyio
import anyio.lowlevel

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.attempts import AuditRecord, Decision, IdempotencyRecord, RecordedAnswer
from payment.domain.errors import StorageUnavailable
from payment.domain.events import Event
from payment.domain.model import Money, Order, OrderStatus, Payment
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import (
    AttemptGround,
    AuditTrail,
    Clock,
    EventLog,
    IdempotencyRepository,
    OrderRepository,
    PaymentRepository,
    RefundAuditTrail,
    RefundRepository,
    UnitOfWork,
)
from payment.domain.refunds import Refundable, RefundGround
from tests.support.attempts import CALLER, REQUEST_ID, attempt, plain_answer

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


async def pay(
    order_id: int,
    amount: str | Decimal | Money,
    *,
    uow: UnitOfWork,
    clock: Clock | None = None,
    key: str | None = None,
    caller: str = CALLER,
    request_id: str = REQUEST_ID,
    key_retention: timedelta = services.DEFAULT_KEY_RETENTION,
    policy: PaymentPolicy = services.DEFAULT_POLICY,
) -> services.Reply:
    """The ``pay`` use case on one attempt, answered with ``plain_answer``; at ``NOW`` unless
    ``clock`` says otherwise."""
    return await services.pay(
        attempt(order_id, amount, key=key, caller=caller, request_id=request_id),
        uow=uow,
        clock=clock or FixedClock(),
        answer_for=plain_answer,
        key_retention=key_retention,
        policy=policy,
    )


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
    "ground",
    "next_id",
    "mark_paid",
    "mark_refunded",
    "add_payment",
    "add_audit",
    "add_key",
    "commit",
    "read",
]
"""Every step a use case takes on a unit of work: ``read`` is any other read (an order, a
payment, a list)."""

PAY_STEPS: tuple[Step, ...] = (
    "enter",
    "ground",
    "next_id",
    "mark_paid",
    "add_payment",
    "add_audit",
    "add_key",
    "commit",
)
"""The steps of a payment with a key, in the order the pay use case takes them (on a store
that sets aside no payment id at the read, so that ``next_id`` is asked too)."""

STORE_STEPS: tuple[Step, ...] = ("enter", "ground", "next_id", "commit")
"""The steps of a payment that ask the store something: where it can stop answering. The
others only stage a write."""


def unavailable() -> StorageUnavailable:
    error = StorageUnavailable()
    error.__cause__ = TimeoutError("the store did not answer in time")
    return error


class _FailingOrders:
    def __init__(self, inner: OrderRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    async def get(self, order_id: int) -> Order | None:
        self._uow.step("read")
        return await self._inner.get(order_id)

    def mark_paid(self, order: Order) -> None:
        self._uow.step("mark_paid")
        self._inner.mark_paid(order)


class _FailingPayments:
    def __init__(self, inner: PaymentRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    async def next_id(self) -> int:
        self._uow.step("next_id")
        return await self._inner.next_id()

    def add(self, payment: Payment) -> None:
        self._uow.step("add_payment")
        self._inner.add(payment)

    def mark_refunded(self, refundable: Refundable) -> None:
        self._uow.step("mark_refunded")
        self._inner.mark_refunded(refundable)

    async def get(self, payment_id: int) -> Payment | None:
        self._uow.step("read")
        return await self._inner.get(payment_id)

    async def list_for_order(self, order_id: int) -> list[Payment]:
        self._uow.step("read")
        return await self._inner.list_for_order(order_id)


class _FailingIdempotency:
    def __init__(self, inner: IdempotencyRepository, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def add(
        self,
        caller: str,
        key: str,
        record: IdempotencyRecord,
        *,
        at: datetime,
        expires_at: datetime,
    ) -> None:
        self._uow.step("add_key")
        self._inner.add(caller, key, record, at=at, expires_at=expires_at)


class _FailingAudit:
    def __init__(self, inner: AuditTrail, uow: FailingUnitOfWork) -> None:
        self._inner, self._uow = inner, uow

    def add(self, record: AuditRecord) -> None:
        self._uow.step("add_audit")
        self._inner.add(record)

    async def list_for_order(self, order_id: int) -> list[AuditRecord]:
        self._uow.step("read")
        return await self._inner.list_for_order(order_id)


class FailingUnitOfWork:
    """An in-memory unit of work that raises ``error`` (by default ``StorageUnavailable``)
    when the use case reaches ``fails_at``, the first ``times`` times (every time when None);
    every other step works as usual (every step when ``fails_at`` is None). A commit that
    fails drops the staged writes, as the port says.

    ``steps`` lists the steps taken, the failing ones included, so a test can tell that the
    failure really happened where it meant it to. ``sets_aside_ids=False`` makes a store that
    sets aside no payment id at the read, so that the use case asks ``next_id``.
    """

    def __init__(
        self,
        store: InMemoryStore,
        *,
        fails_at: Step | None,
        error: Exception | None = None,
        times: int | None = None,
        sets_aside_ids: bool = True,
    ) -> None:
        self._inner = InMemoryUnitOfWork(store)
        self.fails_at = fails_at
        self.error = error
        self.times = times
        self.sets_aside_ids = sets_aside_ids
        self.steps: list[Step] = []

    @property
    def committed(self) -> bool:
        return self._inner.committed

    def step(self, name: Step) -> None:
        self.steps.append(name)
        failed = self.steps.count(name) if name == self.fails_at else 0
        if failed and (self.times is None or failed <= self.times):
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

    @property
    def events(self) -> EventLog:
        return self._inner.events

    @property
    def refunds(self) -> RefundRepository:
        return self._inner.refunds

    @property
    def refund_audit(self) -> RefundAuditTrail:
        return self._inner.refund_audit

    def collect_new_events(self) -> list[Event]:
        return self._inner.collect_new_events()

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        self.step("ground")
        return await self._inner.refund_ground_for(payment_id, caller=caller, key=key)

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        self.step("ground")
        ground = await self._inner.ground_for(order_id, caller=caller, key=key)
        return ground if self.sets_aside_ids else replace(ground, payment_id=None)

    async def __aenter__(self) -> Self:
        self.step("enter")
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        try:
            self.step("commit")
        except BaseException:
            # Staged writes are dropped after a commit, whether it wrote them or not.
            await self._inner.__aexit__(None, None, None)
            await self._inner.__aenter__()
            raise
        await self._inner.commit()


Change = Callable[[InMemoryStore], Awaitable[None]]
"""What another request commits to the store."""


class InterleavedUnitOfWork(InMemoryUnitOfWork):
    """An in-memory unit of work that lets others act between its read of an attempt's
    ground and its write: it gives way to the other tasks, then applies the next of
    ``meanwhile`` while there are any. Tasks paying on such units of work together all read
    before any of them writes.

    ``grounds`` lists what each of its reads found: one per decision.
    """

    def __init__(self, store: InMemoryStore, *, meanwhile: Sequence[Change] = ()) -> None:
        super().__init__(store)
        self.store = store
        self._meanwhile = list(meanwhile)
        self.grounds: list[AttemptGround] = []

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        ground = await super().ground_for(order_id, caller=caller, key=key)
        self.grounds.append(ground)
        await self._give_way()
        return ground

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        ground = await super().refund_ground_for(payment_id, caller=caller, key=key)
        await self._give_way()
        return ground

    async def _give_way(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self._meanwhile:
            await self._meanwhile.pop(0)(self.store)


def paid_by_another(
    order_id: int, amount: str, *, key: str | None = None, caller: str = CALLER
) -> Change:
    """Another request pays the order (with its own key, when given) and commits."""

    async def change(store: InMemoryStore) -> None:
        reply = await pay(
            order_id,
            amount,
            uow=InMemoryUnitOfWork(store),
            key=key,
            caller=caller,
            request_id="another",
        )
        assert reply.payment is not None, "the other request was meant to pay"

    return change


def decided_by_another(order_id: int, amount: str, *, key: str, caller: str = CALLER) -> Change:
    """Another request with ``key`` is decided, whatever the decision, and commits."""

    async def change(store: InMemoryStore) -> None:
        await pay(
            order_id,
            amount,
            uow=InMemoryUnitOfWork(store),
            key=key,
            caller=caller,
            request_id="another",
        )

    return change


def order_changed(order_id: int, *, status: str | None = None, total: str | None = None) -> Change:
    """The order service changes the order's status or total."""

    async def change(store: InMemoryStore) -> None:
        order = store.orders[order_id]
        store.add_order(
            replace(
                order,
                status=order.status if status is None else status,
                total=order.total if total is None else Money(Decimal(total)),
            )
        )

    return change


class UnreachableUnitOfWork:
    """A unit of work whose store never answers in time: its first read fails."""

    def __init__(self) -> None:
        self.committed = False

    @property
    def orders(self) -> OrderRepository:
        raise self._unavailable()

    @property
    def payments(self) -> PaymentRepository:
        raise self._unavailable()

    @property
    def idempotency(self) -> IdempotencyRepository:
        raise self._unavailable()

    @property
    def audit(self) -> AuditTrail:
        raise self._unavailable()

    @property
    def events(self) -> EventLog:
        raise self._unavailable()

    @property
    def refunds(self) -> RefundRepository:
        raise self._unavailable()

    @property
    def refund_audit(self) -> RefundAuditTrail:
        raise self._unavailable()

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        raise self._unavailable()

    def collect_new_events(self) -> list[Event]:
        return []

    @staticmethod
    def _unavailable() -> StorageUnavailable:
        error = StorageUnavailable()
        error.__cause__ = TimeoutError(
            "connection to postgresql://payer:s3cr3tpw@db:5432/orders timed out"
        )
        return error

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        raise self._unavailable()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def commit(self) -> None:
        self.committed = True


class BrokenUnitOfWork(UnreachableUnitOfWork):
    """A unit of work that fails in a way nobody planned for."""

    async def __aenter__(self) -> Self:
        raise RuntimeError("SELECT * FROM orders WHERE password = 's3cr3tpw'")


async def all_at_once(
    count: int, call: Callable[[], Awaitable[T]]
) -> tuple[list[T], list[BaseException]]:
    """Run ``call`` in ``count`` tasks started together; what they returned and raised."""
    results: list[T] = []
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            results.append(await call())
        except Exception as error:
            errors.append(error)

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(run)
    return results, errors
